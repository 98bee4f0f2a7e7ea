"""The pure part of source status through NATS: what an edge makes of the ingests' reports.
(The wire path — ingest processes publishing, an edge's /v1/status — is in test_nats_e2e.)"""

from __future__ import annotations

from disksync.entry import SourceStatus
from disksync.nats.status import (
    MAX_INGESTS,
    StatusBoard,
    StatusReport,
    decode_report,
    encode_report,
)


def report(name: str, state: str = "live", age_ms: int | None = 100, file: str = "f") -> bytes:
    return encode_report(StatusReport(name=name, state=state, age_ms=age_ms, file=file))


def test_the_freshest_live_ingest_is_the_edges_source() -> None:
    board = StatusBoard(forget_after_s=60, stall_after_s=10)
    assert board.best(0.0) is None  # nobody reported: the server falls back to the journal
    board.hear(report("a", age_ms=900, file="/a/1"), now=0.0)
    board.hear(report("b", age_ms=200, file="/b/7"), now=0.0)
    board.hear(report("c", state="stalled", age_ms=5), now=0.0)
    assert board.best(0.5) == SourceStatus("live", 700, "b:/b/7")  # aged by the wait


def test_a_report_ages_into_stalled_and_is_forgotten() -> None:
    board = StatusBoard(forget_after_s=30, stall_after_s=10)
    board.hear(report("a", age_ms=1000), now=0.0)
    assert board.best(8.0) == SourceStatus("live", 9000, "a:f")
    assert board.best(9.5) == SourceStatus("stalled", 10500, "a:f")  # its reports stopped
    assert board.best(31.0) is None
    assert board.names() == []


def test_a_newer_report_replaces_the_older_one_of_the_same_ingest() -> None:
    board = StatusBoard(forget_after_s=30, stall_after_s=10)
    board.hear(report("a", state="starting", age_ms=None), now=0.0)
    assert board.best(0.0) == SourceStatus("starting", None, "a:f")
    board.hear(report("a", age_ms=50), now=1.0)
    assert board.best(1.0) == SourceStatus("live", 50, "a:f")
    assert board.names() == ["a"]


def test_malformed_reports_are_counted_and_dropped() -> None:
    board = StatusBoard(forget_after_s=30, stall_after_s=10)
    for data in (
        b"not json",
        b'{"name":"a"}',
        b'{"name":"a","state":"exploded"}',
        b'{"name":"","state":"live"}',
        b'{"name":"a","state":"live","age_ms":-5}',
        b'{"name":"a","state":"live","age_ms":"soon"}',
    ):
        board.hear(data, now=0.0)
    assert board.malformed == 6
    assert board.best(0.0) is None
    assert decode_report(report("x")) == StatusReport("x", "live", 100, "f")


def test_the_number_of_ingests_held_is_bounded() -> None:
    board = StatusBoard(forget_after_s=1e9, stall_after_s=10)
    for i in range(MAX_INGESTS + 10):
        board.hear(report(f"n{i}"), now=float(i))
    names = board.names()
    assert len(names) == MAX_INGESTS
    assert "n0" not in names and f"n{MAX_INGESTS + 9}" in names  # the stalest went first
