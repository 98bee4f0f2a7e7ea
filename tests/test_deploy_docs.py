"""docs/DEPLOY.md stays true: every file it links under docs/deploy/ exists, and every $NAME the
two nats-server configurations use is one the tests set (tests/regions_support.py) and one the
example environment file names."""

from __future__ import annotations

import re
from pathlib import Path

from conftest import REPO
from nats_jwt import Operator
from regions_support import DEPLOY, jwt_region_server, region_server


def test_every_linked_deploy_file_exists() -> None:
    text = (REPO / "docs" / "DEPLOY.md").read_text()
    linked = set(re.findall(r"\]\((deploy/[^)]+)\)", text))
    assert linked, "DEPLOY.md links no deploy file"
    for link in linked:
        assert (REPO / "docs" / link).is_file(), link


def test_the_configs_variables_are_set_by_the_tests_and_the_example(tmp_path: Path) -> None:
    example = (DEPLOY / "nats.env.example").read_text()
    named = set(re.findall(r"^#?\s*([A-Z_]+)=", example, re.M))
    hub = region_server(REPO / "unused1", 1)
    leaf = region_server(REPO / "unused2", 2, hub=hub)
    operator = Operator()
    account = operator.account("DISKSYNC")
    jwt_hub = jwt_region_server(tmp_path / "r1", 1, operator, account)
    jwt_leaf = jwt_region_server(tmp_path / "r2", 2, operator, account, hub=jwt_hub)
    for server in (hub, leaf, jwt_hub, jwt_leaf):
        assert server.template is not None
        config = re.sub(r"#.*", "", server.template.read_text())  # comments name $NAME too
        wanted = set(re.findall(r"\$([A-Z_]+)", config))
        assert "NATS_PORT" in wanted
        assert wanted <= set(server.env), wanted - set(server.env)
        assert wanted <= named, wanted - named


def test_a_mirror_plan_keeps_the_origin_and_refuses_anything_else() -> None:
    import pytest
    from nats.js.api import ExternalStream, StreamConfig, StreamInfo, StreamSource, StreamState

    from disksync.errors import ConfigError
    from disksync.nats.mirror import judge_existing, mirror_config

    state = StreamState(messages=3, bytes=1, first_seq=1000, last_seq=1002, consumer_count=0)
    origin = StreamInfo(
        config=StreamConfig(
            name="DISKSYNC",
            subjects=["disksync.DISKSYNC.*"],
            max_age=3600.0,
            metadata={"disksync_first_seq": "1000", "_nats.ver": "2.15.1"},
        ),
        state=state,
    )
    wanted = mirror_config(origin, "r1", replicas=1)
    assert wanted.name == "DISKSYNC" and not wanted.subjects
    assert wanted.mirror is not None and wanted.mirror.external is not None
    assert (wanted.mirror.name, wanted.mirror.external.api) == ("DISKSYNC", "$JS.r1.API")
    assert wanted.allow_direct and wanted.max_age == 3600.0
    assert wanted.metadata == {"disksync_first_seq": "1000"}  # the server's own keys dropped
    judge_existing(StreamInfo(config=wanted, state=state), wanted)  # the same mirror: fine
    for other in (
        StreamConfig(name="DISKSYNC", subjects=["x.>"]),  # a stream of its own
        StreamConfig(  # a mirror of another domain
            name="DISKSYNC",
            mirror=StreamSource(name="DISKSYNC", external=ExternalStream(api="$JS.r9.API")),
        ),
    ):
        with pytest.raises(ConfigError, match="refusing"):
            judge_existing(StreamInfo(config=other, state=state), wanted)
