"""The sink contract against the real PostgreSQL on 127.0.0.1:5432, each test its own database;
plus a server that is not there (one clear error)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest

from conftest import free_port
from disksync.index.tables import INDEX_SCHEMA
from disksync.sinks import SinkError, open_sink
from sink_contract import SinkContract

SERVER = "postgresql://postgres@127.0.0.1:5432"


def create_database() -> str:
    name = f"disksync_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}".encode())
    return name


def drop_database(name: str) -> None:
    with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)".encode())


@pytest.fixture
def sink_url() -> Iterator[str]:
    name = create_database()
    try:
        yield f"{SERVER}/{name}"
    finally:
        drop_database(name)


class TestPostgresSink(SinkContract):
    pass


def test_a_server_that_is_down_is_one_clear_error() -> None:
    url = f"postgresql://postgres:secret@127.0.0.1:{free_port()}/nothing"
    with pytest.raises(
        SinkError, match="cannot connect to postgresql://postgres@127.0.0.1"
    ) as info:
        open_sink(url, INDEX_SCHEMA)
    assert "secret" not in str(info.value)
