"""How a journal entry is laid out in JetStream (pure: no I/O). docs/JOURNAL.md, "JetStream".

Rules kept here:
* Stream sequence == height. A stream's sequence is contiguous, so a height the node skipped
  is a *gap marker*: a message with no payload on the ``gap`` subject. Readers filter on the
  ``cmd`` subject, so markers are never returned; ``bounds().count`` subtracts them.
* An entry is one message on the ``cmd`` subject: the payload is the node's line, headers carry
  ``ts_ms`` and ``ingest_ts_us``. ``Nats-Msg-Id`` is the height (a retried publish is a
  server-side duplicate) and ``Nats-Expected-Last-Sequence`` is height − 1 (the fence: a writer
  whose view is stale is refused, never appended out of order).
* A line longer than a message may be (the server's ``max_payload`` minus header room) goes to
  the side stream ``<STREAM>_CHUNKS`` as numbered chunks first; the entry at its height is
  then a *manifest*: no payload, a header naming the first chunk's sequence, the chunk count
  and the total size. The line's bytes are the chunks' concatenation, checked against the size.
* A message pushed to a live follower (``jetstream_push``) is the stored one: same payload and
  headers, its stream seq (the height) in the ``$JS.ACK…`` reply subject instead of a
  ``Nats-Sequence`` header.
"""

from __future__ import annotations

from dataclasses import dataclass

from disksync.entry import Entry
from disksync.errors import JournalError

TS_MS = "Ds-Ts-Ms"
INGEST_US = "Ds-Ingest-Us"
CHUNKS = "Ds-Chunks"  # "<first chunk seq> <count> <total size> <token>"
MSG_ID = "Nats-Msg-Id"
EXPECTED_LAST_SEQ = "Nats-Expected-Last-Sequence"
EXPECTED_LAST_SUBJECT_SEQ = "Nats-Expected-Last-Subject-Sequence"
HEADER_ROOM = 4096  # bytes kept free in a message for subject and headers


@dataclass(frozen=True, slots=True)
class Subjects:
    """The subjects of one journal stream (``disksync.<STREAM>.…``)."""

    stream: str

    @property
    def cmd(self) -> str:
        return f"disksync.{self.stream}.cmd"

    @property
    def gap(self) -> str:
        return f"disksync.{self.stream}.gap"

    @property
    def all(self) -> str:
        return f"disksync.{self.stream}.*"

    @property
    def status(self) -> str:
        """Core-NATS subject where an ingest publishes its source status (heartbeats)."""
        return f"disksync.{self.stream}.status.x"

    @property
    def chunk_stream(self) -> str:
        return f"{self.stream}_CHUNKS"

    def chunk(self, seq: int, token: str) -> str:
        """One publish attempt's chunks of one height: a racing writer's never mix in."""
        return f"disksync.{self.stream}.chunk.{seq}.{token}"

    @property
    def chunk_all(self) -> str:
        return f"disksync.{self.stream}.chunk.>"


def entry_headers(entry: Entry) -> dict[str, str]:
    return {
        TS_MS: str(entry.ts_ms),
        INGEST_US: str(entry.ingest_ts_us),
        MSG_ID: str(entry.seq),
        EXPECTED_LAST_SEQ: str(entry.seq - 1),
    }


def gap_headers(seq: int, *, chained: bool = False) -> dict[str, str]:
    """A marker's headers; ``chained``: also require the marker before it at ``seq - 1``."""
    headers = {MSG_ID: str(seq), EXPECTED_LAST_SEQ: str(seq - 1)}
    if chained:
        headers[EXPECTED_LAST_SUBJECT_SEQ] = str(seq - 1)
    return headers


def manifest_headers(entry: Entry, first_chunk: int, count: int, token: str) -> dict[str, str]:
    headers = entry_headers(entry)
    headers[CHUNKS] = f"{first_chunk} {count} {len(entry.payload)} {token}"
    return headers


def chunk_size_for(max_payload: int) -> int:
    return max(1024, max_payload - HEADER_ROOM)


def split(payload: bytes, chunk_size: int) -> list[bytes]:
    return [payload[i : i + chunk_size] for i in range(0, len(payload), chunk_size)]


@dataclass(frozen=True, slots=True)
class Manifest:
    first_chunk: int
    count: int
    size: int
    token: str


def parse_manifest(seq: int, value: str) -> Manifest:
    try:
        first, count, size, token = value.split()
        return Manifest(int(first), int(count), int(size), token)
    except ValueError:
        raise JournalError(f"seq {seq}: malformed {CHUNKS} header {value!r}") from None


def decode(seq: int, payload: bytes, headers: dict[str, str] | None) -> Entry:
    """An entry from a stored ``cmd`` message whose payload is complete."""
    headers = headers or {}
    try:
        return Entry(seq, payload, int(headers[TS_MS]), int(headers[INGEST_US]))
    except (KeyError, ValueError):
        raise JournalError(f"seq {seq}: not a disksync entry (headers {headers})") from None


def stored_size(payload_len: int, headers: dict[str, str] | None, subject: str) -> int:
    """JetStream's own accounting of a message, closely enough for byte retention."""
    header_len = sum(len(k) + len(v) + 4 for k, v in (headers or {}).items()) + 14
    return payload_len + header_len + len(subject) + 22
