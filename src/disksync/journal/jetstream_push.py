"""The live path of the JetStream ``follow``: an ephemeral push consumer from the position.

Rules kept here (docs/JOURNAL.md, "The live path"):
* It is made only for a follower that is caught up (its direct get came back empty), starting
  at exactly the follower's next height (``by_start_sequence``), filtered on the ``cmd``
  subject (gap markers are not delivered; the stream sequence of what is says the height), no
  acknowledgements, in memory. The server pushes a message once it has stored it, so a
  publish it refused (the fence) or judged a duplicate never reaches a follower, and a line
  crosses the server once (publish → stored → pushed), with no tick and no read after it.
* Nothing is guessed: a delivery whose consumer sequence is not the next one (a message
  dropped: a slow follower past the bounds below, a reconnect), a heartbeat saying more was
  sent than arrived, silence for three heartbeats (the consumer is gone: a restarted server,
  deleted by hand), a reconnect or any error status ends the feed with ``Lost``. The follower
  then reads from its position by direct get, as while catching up, and makes a new consumer
  once caught up again: a lost feed costs reads, never a gap, a repeat or a stall.
* Bounded: at most ``max_msgs`` messages and ``max_bytes`` bytes wait for the follower (one
  batch's worth, and the same limits on nats-py's own queue); past them a message is dropped,
  which is a consumer sequence gap, so ``Lost``. Flow control requests are answered when the
  follower reaches them, in order, so the server pauses for a slow follower.
* No consumer outlives its follower: ``close()`` asks the server to delete it (not awaited,
  so a follower ends at once) and unsubscribes; a process that dies without closing leaves a
  consumer with no interest, which the server deletes after ``inactive_threshold``.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections import deque

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, ReplayPolicy

from disksync.journal.jetstream_read import DirectReader

_CREATE_TIMEOUT_S = 5.0
_SILENT_HEARTBEATS = 3  # heartbeats missed before the consumer counts as gone
_SLICE_S = 0.25  # how often a waiting feed looks at the connection


class Lost(Exception):
    """The feed can no longer be trusted to be complete; ``reason`` for the metric."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def delivered_seqs(reply: str | None) -> tuple[int, int] | None:
    """(stream seq, consumer seq) from a push delivery's ``$JS.ACK…`` reply subject (both
    the old 9-token form and the one with domain and account hash), ``None`` if not one."""
    if not reply:
        return None
    tokens = reply.split(".")
    if len(tokens) < 9 or tokens[0] != "$JS" or tokens[1] != "ACK":
        return None
    at = 5 if len(tokens) == 9 else 7
    if len(tokens) != 9 and len(tokens) < 11:
        return None
    try:
        return int(tokens[at]), int(tokens[at + 1])
    except ValueError:
        return None


class LiveFeed:
    """One push consumer for one follower: ``open(position)``, ``next()``…, ``close()``."""

    def __init__(
        self,
        nc: Client,
        js: JetStreamContext,
        reader: DirectReader,
        *,
        api_prefix: str,
        stream: str,
        subject: str,
        heartbeat_s: float,
        max_msgs: int,
        max_bytes: int,
    ) -> None:
        self._nc = nc
        self._js = js
        self._reader = reader
        self._api = api_prefix
        self._stream = stream
        self._subject = subject
        self._heartbeat_s = heartbeat_s
        self._max_msgs = max_msgs
        self._max_bytes = max_bytes
        self.name = f"dsf_{secrets.token_hex(8)}"
        self._queue: deque[Msg] = deque()
        self._bytes = 0
        self._waiter: asyncio.Future[None] | None = None  # the follower, waiting for a message
        self._dropped = False
        self._cseq = 0  # consumer sequence of the last delivery taken
        self._heard = 0.0  # loop time of the last thing the server sent
        self._epoch = reader.epoch()
        self._subscription: Subscription | None = None

    async def open(self, position: int) -> None:
        """Subscribe, then create the consumer (the server sees the interest first, on the
        same connection). ``Lost`` if it cannot be created; nothing is left behind then."""
        loop = asyncio.get_running_loop()
        self._heard = loop.time()
        self._epoch = self._reader.epoch()
        inbox = self._nc.new_inbox()
        self._subscription = await self._nc.subscribe(
            inbox,
            cb=self._on_msg,
            pending_msgs_limit=self._max_msgs,
            pending_bytes_limit=self._max_bytes,
        )
        config = ConsumerConfig(
            name=self.name,
            deliver_subject=inbox,
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=position,
            ack_policy=AckPolicy.NONE,
            replay_policy=ReplayPolicy.INSTANT,
            filter_subject=self._subject,
            idle_heartbeat=self._heartbeat_s,
            flow_control=True,
            inactive_threshold=5 * self._heartbeat_s,
            mem_storage=True,
            num_replicas=1,
        )
        try:
            await self._js.add_consumer(self._stream, config, timeout=_CREATE_TIMEOUT_S)
        except (nats.errors.Error, TimeoutError, OSError) as exc:
            await self.close()  # a create that timed out may still have made it: delete
            raise Lost("create", f"{type(exc).__name__} {exc}") from None
        self._heard = loop.time()

    async def _on_msg(self, msg: Msg) -> None:
        # nats-py's reader task: keep it short, the follower does the rest in order.
        self._heard = asyncio.get_running_loop().time()
        if len(self._queue) >= self._max_msgs or self._bytes + len(msg.data) > self._max_bytes:
            self._dropped = True  # the follower is too slow: it reads the rest by direct get
        else:
            self._queue.append(msg)
            self._bytes += len(msg.data)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def next(self) -> tuple[int, Msg]:
        """The next stored ``cmd`` message and its stream seq; ``Lost`` when unsure."""
        loop = asyncio.get_running_loop()
        while True:
            while self._queue:
                msg = self._queue.popleft()
                self._bytes -= len(msg.data)
                headers = msg.headers or {}
                if "Status" in headers:
                    await self._control(msg, headers)
                    continue
                seqs = delivered_seqs(msg.reply)
                if seqs is None:
                    raise Lost("status", f"not a JetStream delivery: {msg.reply!r}")
                if seqs[1] != self._cseq + 1:
                    raise Lost("dropped", f"consumer seq {seqs[1]} after {self._cseq}")
                self._cseq = seqs[1]
                return seqs[0], msg
            if self._dropped:
                raise Lost("dropped", "the follower fell behind its bounds")
            if self._reader.epoch() != self._epoch or not self._reader.is_connected():
                raise Lost("reconnected")
            if loop.time() - self._heard > _SILENT_HEARTBEATS * self._heartbeat_s:
                raise Lost("silent", f"nothing for {_SILENT_HEARTBEATS} heartbeats")
            await self._wait(loop, min(_SLICE_S, self._heartbeat_s))

    async def _wait(self, loop: asyncio.AbstractEventLoop, timeout: float) -> None:
        """Until a message arrives or ``timeout``: a bare future and a timer, not ``wait_for``
        (which wraps the wait in a task on 3.11: one more loop turn per live line)."""
        waiter = self._waiter = loop.create_future()
        timer = loop.call_later(timeout, _wake, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None

    async def _control(self, msg: Msg, headers: dict[str, str]) -> None:
        """A heartbeat or a flow control request, taken in order; anything else is ``Lost``."""
        if headers.get("Status") != "100":
            raise Lost("status", f"{headers.get('Status')} {headers.get('Description', '')}")
        if msg.reply:  # flow control: the follower got this far, the server may send on
            await self._nc.publish(msg.reply, b"")
        stalled = headers.get("Nats-Consumer-Stalled")
        if stalled:
            await self._nc.publish(stalled, b"")
        last = headers.get("Nats-Last-Consumer")
        if last is not None and last.isdigit() and int(last) > self._cseq:
            raise Lost("dropped", f"the heartbeat says {last} sent, {self._cseq} arrived")

    async def close(self) -> None:
        """Delete the consumer (fire and forget) and unsubscribe; never raises."""
        if self._subscription is not None:
            with contextlib.suppress(Exception):
                await self._nc.publish(
                    f"{self._api}.CONSUMER.DELETE.{self._stream}.{self.name}",
                    b"",
                    reply=self._nc.new_inbox(),  # the answer goes nowhere: nothing waits
                )
            with contextlib.suppress(Exception):
                await self._subscription.unsubscribe()
            self._subscription = None
        self._queue.clear()
        self._bytes = 0
