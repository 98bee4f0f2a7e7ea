"""docs/DEPLOY.md stays true: every file it links under docs/deploy/ exists, and every $NAME the
two nats-server configurations use is one the tests set (tests/regions_support.py) and one the
example environment file names."""

from __future__ import annotations

import re

from conftest import REPO
from regions_support import DEPLOY, region_server


def test_every_linked_deploy_file_exists() -> None:
    text = (REPO / "docs" / "DEPLOY.md").read_text()
    linked = set(re.findall(r"\]\((deploy/[^)]+)\)", text))
    assert linked, "DEPLOY.md links no deploy file"
    for link in linked:
        assert (REPO / "docs" / link).is_file(), link


def test_the_configs_variables_are_set_by_the_tests_and_the_example() -> None:
    example = (DEPLOY / "nats.env.example").read_text()
    named = set(re.findall(r"^#?\s*([A-Z_]+)=", example, re.M))
    hub = region_server(REPO / "unused1", 1)
    leaf = region_server(REPO / "unused2", 2, hub=hub)
    for server in (hub, leaf):
        assert server.template is not None
        config = re.sub(r"#.*", "", server.template.read_text())  # comments name $NAME too
        wanted = set(re.findall(r"\$([A-Z_]+)", config))
        assert "NATS_PORT" in wanted
        assert wanted <= set(server.env), wanted - set(server.env)
        assert wanted <= named, wanted - named
