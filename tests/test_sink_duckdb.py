"""The sink contract against DuckDB files, plus what is DuckDB's own (one writer per file)."""

from __future__ import annotations

from pathlib import Path

import pytest

from disksync.errors import ConfigError
from disksync.index.tables import INDEX_SCHEMA
from disksync.sinks import SinkError, open_sink
from sink_contract import SinkContract


@pytest.fixture
def sink_url(tmp_path: Path) -> str:
    return f"duckdb:{tmp_path / 'index.duckdb'}"


class TestDuckDBSink(SinkContract):
    pass


def test_a_second_writer_is_refused_with_one_clear_error(sink_url: str) -> None:
    first = open_sink(sink_url, INDEX_SCHEMA)
    try:
        import subprocess
        import sys

        code = (
            "from disksync.sinks import open_sink;"
            "from disksync.index.tables import INDEX_SCHEMA;"
            f"open_sink({sink_url!r}, INDEX_SCHEMA)"
        )
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
        assert done.returncode != 0
        assert b"SinkError" in done.stderr and b"lock" in done.stderr.lower()
    finally:
        first.close()


@pytest.mark.parametrize("url", ["duckdb:", "duckdb::memory:", "sqlite:x.db", "index.duckdb"])
def test_bad_urls_are_config_errors(url: str) -> None:
    with pytest.raises(ConfigError):
        open_sink(url, INDEX_SCHEMA)


def test_a_file_that_is_not_duckdb_is_a_sink_error(tmp_path: Path) -> None:
    path = tmp_path / "not.duckdb"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(SinkError, match="cannot open"):
        open_sink(f"duckdb:{path}", INDEX_SCHEMA)
