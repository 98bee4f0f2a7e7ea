"""``disksync.client``: the feed as an async iterator that never loses a command.

    from disksync.client import ClientConfig, Feed

    config = ClientConfig(urls=("wss://us.example/", "wss://jp.example/"), api_key=KEY)
    async with Feed(config) as feed:
        async for command in feed:
            handle(command.seq, command.payload)

Rules kept here: this module only re-exports; the behaviour is documented in ``stream``
(ordering, reconnects, failover, checkpoints) and in docs/CLIENT.md.
"""

from disksync.client import events
from disksync.client.command import Command
from disksync.client.config import Backoff, ClientConfig, Timeouts
from disksync.client.events import Counters, Event
from disksync.client.stream import Feed
from disksync.errors import FeedError, Forbidden, RetentionError, Unauthorized

__all__ = [
    "Backoff",
    "ClientConfig",
    "Command",
    "Counters",
    "Event",
    "Feed",
    "FeedError",
    "Forbidden",
    "RetentionError",
    "Timeouts",
    "Unauthorized",
    "events",
]
