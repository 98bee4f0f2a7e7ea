"""Blocking reads (files, LZ4, object stores) turned into an async stream of batches, read ahead
by one producer thread.

Rules kept here:
* One thread calls ``take`` again and again, up to ``ahead`` batches before the consumer: it
  reads the next file while the consumer writes the last one (a journal, a data dir, a
  comparison). Taking one batch per ``await`` instead left reading and writing in turn
  whenever one object came in a burst (import holds small objects whole): measured at 0.5x
  the journal's own append speed (bench_archive).
* Memory: at most ``ahead`` batches queued, plus the one being taken and the one in use.
* The batch for which ``is_last`` is true is yielded and ends the stream; an exception in
  ``take`` is raised to the consumer after the batches before it.
* A consumer that stops early (an error, a difference found, a cancel) stops the thread at its
  next batch; the thread never blocks the process from exiting (daemon).
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TypeVar

T = TypeVar("T")

_POLL_S = 0.1


async def read_ahead(
    take: Callable[[], T], is_last: Callable[[T], bool], *, ahead: int = 2, name: str = "read"
) -> AsyncIterator[T]:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[T | None, BaseException | None]] = asyncio.Queue()
    permits = threading.Semaphore(ahead)
    stop = threading.Event()

    def deliver(item: tuple[T | None, BaseException | None]) -> bool:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, item)
        except RuntimeError:  # the loop is closed: nobody is left to read
            return False
        return True

    def produce() -> None:
        while not stop.is_set():
            if not permits.acquire(timeout=_POLL_S):
                continue
            try:
                batch = take()
            except BaseException as exc:  # handed to the consumer, raised there
                deliver((None, exc))
                return
            if not deliver((batch, None)) or is_last(batch):
                return

    thread = threading.Thread(target=produce, name=f"disksync-{name}", daemon=True)
    thread.start()
    try:
        while True:
            batch, error = await queue.get()
            permits.release()
            if error is not None:
                raise error
            assert batch is not None
            yield batch
            if is_last(batch):
                return
    finally:
        stop.set()


def iter_ahead(
    take: Callable[[], T], is_last: Callable[[T], bool], *, ahead: int = 2, name: str = "read"
) -> Iterator[T]:
    """``read_ahead`` for a blocking consumer (replay into a data dir): the same thread and
    bounds, a blocking queue instead of the event loop."""
    items: queue.Queue[tuple[T | None, BaseException | None]] = queue.Queue(ahead)
    stop = threading.Event()

    def produce() -> None:
        while not stop.is_set():
            try:
                item: tuple[T | None, BaseException | None] = (take(), None)
            except BaseException as exc:  # handed to the consumer, raised there
                item = (None, exc)
            while not stop.is_set():
                try:
                    items.put(item, timeout=_POLL_S)
                    break
                except queue.Full:
                    continue
            if item[1] is not None or (item[0] is not None and is_last(item[0])):
                return

    thread = threading.Thread(target=produce, name=f"disksync-{name}", daemon=True)
    thread.start()
    try:
        while True:
            batch, error = items.get()
            if error is not None:
                raise error
            assert batch is not None
            yield batch
            if is_last(batch):
                return
    finally:
        stop.set()
