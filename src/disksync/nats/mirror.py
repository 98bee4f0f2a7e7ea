"""A second region: JetStream mirrors of the journal's streams and the key bucket (SPEC §8).

Rules kept here (docs/DEPLOY.md, "Two regions"):
* Replication is JetStream's own: each mirror is a stream in the target system whose ``mirror``
  names the origin stream and the origin's JetStream domain (``$JS.<domain>.API``, reached
  across the leafnode link). A mirror keeps the origin's sequence numbers, so ``seq`` is the
  same block height in both regions, and the origin's bytes.
* The mirrors have the origin's names (``STREAM``, ``STREAM_CHUNKS``, ``KV_<bucket>``), so an
  edge in region 2 is configured exactly as one in region 1 (same ``?stream=``/``?bucket=``),
  only pointed at its own servers. They allow direct gets (the journal reads by direct get)
  and copy the origin's limits and metadata (the height the stream began at).
* Idempotent: a mirror that already mirrors the same origin in the same domain is left alone;
  a stream of that name that is anything else is refused, never changed.
* Pure planning (``mirror_config``, ``judge_existing``) is separate from the I/O
  (``ensure_mirrors``).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import ExternalStream, StorageType, StreamConfig, StreamInfo, StreamSource

from disksync.errors import ConfigError, JournalError
from disksync.nats.url import NatsRefused, NatsTarget, connect

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Side:
    """One system: how to reach it and its JetStream domain."""

    target: NatsTarget
    domain: str | None

    def api(self) -> str:
        return f"$JS.{self.domain}.API" if self.domain else "$JS.API"


@dataclass(frozen=True, slots=True)
class Outcome:
    name: str
    action: str  # "created" | "already a mirror"
    messages: int
    first_seq: int
    last_seq: int
    lag: int | None

    def describe(self) -> str:
        lag = "?" if self.lag is None else str(self.lag)
        return (
            f"{self.name}: {self.action} ({self.messages} messages, seq {self.first_seq}"
            f"..{self.last_seq}, lag {lag})"
        )


def mirror_config(origin: StreamInfo, source_domain: str, replicas: int) -> StreamConfig:
    """The target stream that mirrors ``origin`` (same name, limits and metadata)."""
    cfg = origin.config
    assert cfg.name is not None
    return StreamConfig(
        name=cfg.name,
        description=f"mirror of {cfg.name} in JetStream domain {source_domain} (disksync mirror)",
        storage=StorageType.FILE,
        num_replicas=replicas,
        mirror=StreamSource(name=cfg.name, external=ExternalStream(api=f"$JS.{source_domain}.API")),
        allow_direct=True,
        mirror_direct=True,
        max_age=cfg.max_age,
        max_bytes=cfg.max_bytes,
        max_msgs=cfg.max_msgs,
        max_msgs_per_subject=cfg.max_msgs_per_subject,  # a KV bucket needs it (history)
        max_msg_size=cfg.max_msg_size,
        metadata={k: v for k, v in (cfg.metadata or {}).items() if not k.startswith("_nats")},
    )


def judge_existing(existing: StreamInfo, wanted: StreamConfig) -> None:
    """An existing target stream must already mirror the same origin; else ``ConfigError``."""
    have = existing.config.mirror
    want = wanted.mirror
    assert want is not None and want.external is not None
    same_api = (
        have is not None and have.external is not None and have.external.api == want.external.api
    )
    if have is None or have.name != want.name or not same_api:
        what = (
            "a stream of its own (not a mirror)"
            if have is None
            else f"a mirror of {have.name} via {have.external.api if have.external else '$JS.API'}"
        )
        raise ConfigError(
            f"stream {wanted.name} already exists in the target and is {what}; refusing to"
            f" change it (delete it with `nats stream rm {wanted.name}` if it is not needed)"
        )


async def _connect(side: Side, timeout_s: float) -> tuple[Client, JetStreamContext]:
    try:
        nc = await asyncio.wait_for(connect(side.target), timeout_s)
    except NatsRefused as exc:
        raise JournalError(str(exc)) from None
    except (TimeoutError, OSError, nats.errors.Error) as exc:
        raise JournalError(
            f"cannot reach NATS at {side.target.describe()} within {timeout_s:g}s:"
            f" {str(exc) or type(exc).__name__}"
        ) from None
    return nc, nc.jetstream(domain=side.domain, timeout=10.0)


async def ensure_mirrors(
    source: Side,
    target: Side,
    names: list[tuple[str, bool]],
    *,
    replicas: int = 1,
    timeout_s: float = 10.0,
) -> list[Outcome]:
    """Make each stream of ``names`` in ``target`` a mirror of the one of that name in
    ``source``. ``(name, required)``: a missing optional origin (a key bucket not made yet) is
    skipped with a log line; a missing required one is a ``JournalError``."""
    if not source.domain:
        raise ConfigError(
            "--source needs ?domain=NAME: the JetStream domain of the origin system, through"
            " which the mirror reaches it across the leafnode"
        )
    if source.domain == target.domain:
        raise ConfigError(f"source and target are both JetStream domain {source.domain!r}")
    src_nc, src_js = await _connect(source, timeout_s)
    try:
        dst_nc, dst_js = await _connect(target, timeout_s)
        try:
            out = []
            for name, required in names:
                outcome = await _ensure_one(src_js, dst_js, name, source.domain, replicas)
                if outcome is None:
                    if required:
                        raise JournalError(
                            f"no stream {name} in JetStream domain {source.domain} at"
                            f" {source.target.describe()} (has anything been ingested yet?)"
                        )
                    log.warning("no %s in domain %s yet: not mirrored", name, source.domain)
                    continue
                out.append(outcome)
            return out
        finally:
            await dst_nc.close()
    finally:
        await src_nc.close()


async def _ensure_one(
    src_js: JetStreamContext,
    dst_js: JetStreamContext,
    name: str,
    source_domain: str,
    replicas: int,
) -> Outcome | None:
    try:
        origin = await src_js.stream_info(name)
    except nats.js.errors.NotFoundError:
        return None
    wanted = mirror_config(origin, source_domain, replicas)
    try:
        existing: StreamInfo | None = await dst_js.stream_info(name)
    except nats.js.errors.NotFoundError:
        existing = None
    if existing is None:
        try:
            info = await dst_js.add_stream(wanted)
        except nats.js.errors.Error as exc:
            raise JournalError(f"cannot create mirror {name}: {exc}") from None
        action = "created"
        log.info("created mirror %s of domain %s", name, source_domain)
    else:
        judge_existing(existing, wanted)
        info, action = existing, "already a mirror"
    lag = info.mirror.lag if info.mirror is not None else None
    st = info.state
    return Outcome(name, action, st.messages, st.first_seq, st.last_seq, lag)
