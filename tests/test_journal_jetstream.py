"""The JetStream journal: the shared contract against a real nats-server, plus what only a
distributed log can show — stream seq == height, lines larger than max_payload, a restarted
server, two writers racing.

One nats-server per module (``nats_server``), a fresh stream per test.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from disksync.errors import ConfigError
from disksync.journal import JetStreamJournal, JetStreamOptions, Retention, open_journal
from disksync.nats.url import parse_nats_url
from journal_contract import JournalContract, JournalFactory
from nats_server import NatsServer, fresh_name, nats_server

__all__ = ["nats_server"]

FAST = {"retention_interval_s": 0.05, "poll_interval_s": 0.05}


def opener(server: NatsServer, stream: str, **options: float) -> JetStreamJournal:
    return JetStreamJournal(
        parse_nats_url(server.url, allowed=()),
        options=JetStreamOptions(stream=stream, **{**FAST, **options}),  # type: ignore[arg-type]
    )


@pytest.fixture
async def journal_factory(nats_server: NatsServer) -> AsyncIterator[JournalFactory]:
    stream = fresh_name("J")
    opened: list[JetStreamJournal] = []

    async def factory(retention: Retention | None = None) -> JetStreamJournal:
        journal = JetStreamJournal(
            parse_nats_url(nats_server.url, allowed=()),
            options=JetStreamOptions(stream=stream, **FAST),  # type: ignore[arg-type]
            retention=retention,
        )
        opened.append(journal)
        return journal

    yield factory
    for journal in opened:
        await journal.close()


class TestJetStreamJournalContract(JournalContract):
    pass


def test_nats_urls_carry_the_backend_options() -> None:
    journal = open_journal("nats://u:p@127.0.0.1:4222,127.0.0.2:4223?stream=S1&gap_grace_s=2.5")
    assert isinstance(journal, JetStreamJournal)
    assert journal.options.stream == "S1"
    assert journal.options.gap_grace_s == 2.5
    assert journal.target.servers == ("nats://127.0.0.1:4222", "nats://127.0.0.2:4223")
    assert (journal.target.user, journal.target.password) == ("u", "p")
    assert journal.target.describe() == "nats://127.0.0.1:4222,nats://127.0.0.2:4223"
    secure = open_journal("tls://tok@h.example:4443?domain=hub")
    assert isinstance(secure, JetStreamJournal)
    assert secure.target.tls and secure.target.token == "tok"
    assert secure.api_prefix == "$JS.hub.API"
    assert journal.options.stream == "S1"
    assert open_journal("nats://h:1").options.stream == "DISKSYNC"  # type: ignore[attr-defined]
    for bad in [
        "nats://",
        "nats://h:x",
        "nats://h:1?stream=a.b",
        "nats://h:1?synchronous=full",
        "nats://h:1?gap_grace_s=-1",
        "nats://h:1?creds=/nonexistent.creds",
    ]:
        with pytest.raises(ConfigError):
            open_journal(bad)
