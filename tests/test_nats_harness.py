"""The nats-server harness itself: JetStream up, data kept across kill -9 and restart."""

from __future__ import annotations

from pathlib import Path

import nats

from nats_server import NatsServer


async def test_kill9_and_restart_keep_the_stream(tmp_path: Path) -> None:
    server = NatsServer(tmp_path)
    server.start()
    try:
        nc = await nats.connect(server.url)
        js = nc.jetstream()
        await js.add_stream(name="H", subjects=["h.>"])
        ack = await js.publish("h.x", b"one")
        await nc.close()
        server.restart()
        nc = await nats.connect(server.url)
        msg = await nc.jetstream().get_msg("H", ack.seq)
        assert msg.data == b"one"
        await nc.close()
    finally:
        server.stop()
    assert server.process is not None and server.process.poll() is not None
