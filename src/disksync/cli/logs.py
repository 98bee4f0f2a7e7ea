"""Structured logs on stderr: ``text`` for people, ``json`` (one object per line) for machines.

Log records carry context in ``extra=`` fields (``key_id``, ``seq``, ``path`` ...). API keys and
query strings never reach a record: code logs a key by its id.

asyncio's "returning true from eof_received() has no effect when using ssl" is dropped: nats-py's
stream protocol makes asyncio say it each time a TLS peer (a NATS server) closes a connection, a
bare line on stderr that tells an operator nothing.
"""

from __future__ import annotations

import logging
import sys
import time

import orjson

_STD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "ts": round(record.created, 6),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STD_ATTRS and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str).decode()


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        extras = " ".join(
            f"{k}={v}"
            for k, v in vars(record).items()
            if k not in _STD_ATTRS and not k.startswith("_")
        )
        line = f"{stamp} {record.levelname.lower():7} {record.name}: {record.getMessage()}"
        if extras:
            line += f"  {extras}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


_ASYNCIO_NOISE = "returning true from eof_received() has no effect when using ssl"


def _not_noise(record: logging.LogRecord) -> bool:
    return record.msg != _ASYNCIO_NOISE


def setup_logging(*, debug: bool = False, fmt: str | None = None) -> None:
    asyncio_log = logging.getLogger("asyncio")
    if _not_noise not in asyncio_log.filters:
        asyncio_log.addFilter(_not_noise)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger("disksync")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    root.propagate = False
