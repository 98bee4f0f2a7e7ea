"""Measure the feed's latency: one SDK feed per URL, side by side, recording every command.

Rules kept here:
* Each URL is measured on its own feed (regions side by side, not failover), all in one event
  loop and one process, so the receive stamps of every URL come from one clock.
* The receive path does only: decode (the stage being timed, unless ``decode`` is off), two
  clock reads, one ``Recorder.add``. Quantiles, plots and progress are computed elsewhere,
  from the records.
* The tool's own cost per command (``tool_us``) is the time from the SDK's receive stamp to
  the record being stored, minus the decode it timed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from disksync.client import ClientConfig, Feed, events
from disksync.errors import DecodeError, ProtocolError
from disksync.latency.record import Recorder


@dataclass
class UrlRun:
    url: str
    recorder: Recorder
    undecodable: int = 0
    events: list[str] = field(default_factory=list)


async def measure(
    configs: list[ClientConfig],
    *,
    duration_s: float | None,
    decode: bool = True,
    capacity: int = 1_000_000,
    count: int | None = None,
    stop: asyncio.Event | None = None,
    runs: list[UrlRun] | None = None,
    on_event: Callable[[str, events.Event], None] | None = None,
) -> list[UrlRun]:
    """Follow each config's feed until ``duration_s`` passed (None: no limit), ``stop`` is set
    or every URL delivered ``count`` commands; returns the records. ``runs`` may be given to
    watch the records while they grow (one per config, in order)."""
    if runs is None:
        runs = [UrlRun(str(c.urls[0]), Recorder(capacity, seed=i)) for i, c in enumerate(configs)]
    loop = asyncio.get_running_loop()
    deadline = None if duration_s is None else loop.time() + duration_s
    stop = stop if stop is not None else asyncio.Event()
    stopper = asyncio.create_task(stop.wait())
    tasks = [
        asyncio.create_task(_follow(config, run, decode, count, on_event))
        for config, run in zip(configs, runs, strict=True)
    ]
    pending: set[asyncio.Task[None]] = set(tasks)
    try:
        while pending:
            timeout = None if deadline is None else max(0.0, deadline - loop.time())
            done, _ = await asyncio.wait(
                {*pending, stopper}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            if not done or stopper in done:
                break
            for task in done:
                pending.discard(task)
                task.result()  # a rejected key or a bad certificate ends the measurement
    finally:
        for task in (*tasks, stopper):
            task.cancel()
        for task in (*tasks, stopper):
            with contextlib.suppress(asyncio.CancelledError):
                await task
    return runs


async def _follow(
    config: ClientConfig,
    run: UrlRun,
    decode: bool,
    count: int | None,
    on_event: Callable[[str, events.Event], None] | None,
) -> None:
    recorder = run.recorder
    add = recorder.add
    clock_ns = time.time_ns
    perf_ns = time.perf_counter_ns

    def event(e: events.Event) -> None:
        if on_event is not None:
            on_event(run.url, e)

    async with Feed(config, on_event=event) as feed:
        async for command in feed:
            recv_us = command.recv_ts_us
            block_us = command.ts_ms * 1000
            decode_ns = 0
            if decode:
                started = perf_ns()
                try:
                    block_us = command.decode().time_ns // 1000
                except (DecodeError, ProtocolError):
                    run.undecodable += 1
                decode_ns = perf_ns() - started
            decode_us = decode_ns // 1000
            add(
                command.seq,
                block_us,
                command.ingest_ts_us,
                command.publish_ts_us,
                recv_us,
                decode_us,
                clock_ns() // 1000 - recv_us - decode_us,
            )
            if count is not None and recorder.count >= count:
                return
