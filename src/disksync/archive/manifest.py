"""The manifest of one archive file: what it holds and how to check it.

Rules kept here:
* JSON, one object, keys sorted, written once with its data file (after it: a manifest means
  the data object is complete). ``format`` is 1; unknown keys are ignored when reading, so a
  later version can add fields.
* ``missing`` lists the seq ranges (inclusive pairs) that the upstream feed did not have between
  the previous file of the same recording and this one: the gap is recorded, never hidden.
* ``lines_sha256`` is over the uncompressed bytes (every line with its ``\\n``), so two archives
  compressed differently still compare equal; ``object_sha256`` is over the ``.lz4`` object.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import orjson

from disksync.errors import ArchiveError

FORMAT = 1


@dataclass(frozen=True, slots=True)
class Manifest:
    object: str
    first_seq: int
    last_seq: int
    count: int
    lines_bytes: int
    lines_sha256: str
    object_bytes: int
    object_sha256: str
    first_ts_ms: int
    last_ts_ms: int
    missing: tuple[tuple[int, int], ...] = field(default=())
    format: int = FORMAT

    def to_json(self) -> bytes:
        data = asdict(self)
        data["missing"] = [list(pair) for pair in self.missing]
        return orjson.dumps(data, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2) + b"\n"

    @classmethod
    def from_json(cls, data: bytes, name: str) -> Manifest:
        try:
            raw = orjson.loads(data)
            if not isinstance(raw, dict):
                raise ValueError("not a JSON object")
            if raw.get("format") != FORMAT:
                raise ValueError(f"format is {raw.get('format')!r}, expected {FORMAT}")
            return cls(
                object=str(raw["object"]),
                first_seq=int(raw["first_seq"]),
                last_seq=int(raw["last_seq"]),
                count=int(raw["count"]),
                lines_bytes=int(raw["lines_bytes"]),
                lines_sha256=str(raw["lines_sha256"]),
                object_bytes=int(raw["object_bytes"]),
                object_sha256=str(raw["object_sha256"]),
                first_ts_ms=int(raw["first_ts_ms"]),
                last_ts_ms=int(raw["last_ts_ms"]),
                missing=tuple((int(a), int(b)) for a, b in raw.get("missing", [])),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ArchiveError(f"manifest {name} is not a disksync manifest: {exc}") from None
