"""``archive.readahead``: a blocking source read ahead by one thread, bounded, in order; errors
after the batches before them; a consumer that stops early stops the thread."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time

import pytest

from conftest import scaled
from disksync.archive.readahead import iter_ahead, read_ahead


class Counting:
    """Batches 0, 1, 2, …; ``fail_at`` raises instead of that batch; ``last`` ends the stream."""

    def __init__(self, last: int = 1_000_000, fail_at: int | None = None) -> None:
        self.taken = 0
        self.last = last
        self.fail_at = fail_at

    def take(self) -> int:
        if self.taken == self.fail_at:
            raise ValueError(f"broken at {self.taken}")
        self.taken += 1
        return self.taken - 1

    def is_last(self, batch: int) -> bool:
        return batch == self.last


def producers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("disksync-test")]


def wait_no_producer() -> None:
    deadline = time.monotonic() + scaled(5)
    while producers():
        assert time.monotonic() < deadline, "the read-ahead thread did not stop"
        time.sleep(0.01)


async def await_no_producer() -> None:
    """As above, letting the loop run (an abandoned async generator is closed by it)."""
    deadline = time.monotonic() + scaled(5)
    while producers():
        assert time.monotonic() < deadline, "the read-ahead thread did not stop"
        await asyncio.sleep(0.01)


async def test_in_order_bounded_and_stopped_when_the_consumer_stops() -> None:
    source = Counting()
    got = []
    async with contextlib.aclosing(
        read_ahead(source.take, source.is_last, ahead=3, name="test-a")
    ) as batches:
        async for batch in batches:
            got.append(batch)
            if batch == 4:
                break
    assert got == [0, 1, 2, 3, 4]
    await await_no_producer()
    assert source.taken <= 5 + 3 + 1  # never more than `ahead` past what was consumed
    abandoned = Counting()
    async for batch in read_ahead(abandoned.take, abandoned.is_last, name="test-f"):
        if batch == 1:
            break  # no aclose: the loop's finaliser closes it
    await await_no_producer()


async def test_an_error_comes_after_the_batches_before_it() -> None:
    source = Counting(fail_at=3)
    got: list[int] = []

    async def consume() -> None:
        async for batch in read_ahead(source.take, source.is_last, name="test-b"):
            got.append(batch)

    with pytest.raises(ValueError, match="broken at 3"):
        await consume()
    assert got == [0, 1, 2]
    await await_no_producer()


def test_blocking_consumer_ends_on_the_last_batch_and_on_early_stop() -> None:
    source = Counting(last=6)
    assert list(iter_ahead(source.take, source.is_last, name="test-c")) == list(range(7))
    wait_no_producer()
    source = Counting()
    for batch in iter_ahead(source.take, source.is_last, ahead=2, name="test-d"):
        if batch == 2:
            break
    wait_no_producer()
    assert source.taken <= 3 + 2 + 1
    failing = Counting(fail_at=2)
    with pytest.raises(ValueError, match="broken at 2"):
        list(iter_ahead(failing.take, failing.is_last, name="test-e"))
