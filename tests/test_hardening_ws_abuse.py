"""A client's bytes after the 101, from a raw socket (#13 standing suite): unmasked frames,
fragmented control frames, invalid UTF-8, invalid close codes, reserved opcodes and bits, a
frame claiming 2^63-1 bytes, and a giant request head each get their close code or status,
and a well-behaved client on the same server keeps receiving every seq meanwhile."""

from __future__ import annotations

import asyncio
import struct
from pathlib import Path

import pytest

from conftest import scaled
from test_server_limits import server_frames
from test_server_support import (
    entries,
    raw_request,
    recv_seqs,
    running_server,
    status_of,
    upgrade_request,
)

KEY = b"\x11\x22\x33\x44"


def frame(
    opcode: int, payload: bytes, *, fin: bool = True, mask: bool = True, rsv: int = 0
) -> bytes:
    head = bytes([(0x80 if fin else 0) | rsv << 4 | opcode])
    n = len(payload)
    bit = 0x80 if mask else 0
    head += bytes([bit | n]) if n < 126 else bytes([bit | 126]) + struct.pack("!H", n)
    if not mask:
        return head + payload
    return head + KEY + bytes(b ^ KEY[i % 4] for i, b in enumerate(payload))


ABUSE = {
    "unmasked": (frame(0x1, b"hello", mask=False), 1002),
    "fragmented_ping": (frame(0x9, b"x", fin=False), 1002),
    "oversized_ping": (frame(0x9, b"x" * 200), 1002),
    "invalid_utf8_text": (frame(0x1, b"\xff\xfe\xfd"), 1007),
    "close_code_999": (frame(0x8, struct.pack("!H", 999)), 1002),
    "close_code_1005": (frame(0x8, struct.pack("!H", 1005)), 1002),
    "close_one_byte": (frame(0x8, b"\x03"), 1002),
    "close_bad_utf8_reason": (frame(0x8, struct.pack("!H", 1000) + b"\xff"), 1007),
    "reserved_opcode": (frame(0x3, b""), 1002),
    "rsv_bits": (frame(0x2, b"x", rsv=0b100), 1002),
    "continuation_first": (frame(0x0, b"x"), 1002),
    "claims_2_63": (bytes((0x82, 0xFF)) + struct.pack("!Q", (1 << 63) - 1) + KEY, 1009),
}


async def abuse(port: int, key: str, data: bytes) -> list[tuple[int, bytes]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(upgrade_request(headers={"x-api-key": key}) + data)
        received = b""
        async with asyncio.timeout(scaled(15)):
            while chunk := await reader.read(65536):
                received += chunk
    finally:
        writer.close()
    assert received.startswith(b"HTTP/1.1 101"), received[:200]
    return server_frames(received)


@pytest.mark.parametrize("name", sorted(ABUSE))
async def test_abusive_frames_get_their_close_code_and_others_keep_receiving(
    tmp_path: Path, name: str
) -> None:
    data, code = ABUSE[name]
    async with (
        running_server(tmp_path, preload=entries(1, 3)) as h,
        h.ws("?from_seq=1") as bystander,
    ):
        assert await recv_seqs(bystander, 2) == [1, 2]
        frames = await abuse(h.port, h.key, data)
        opcode, payload = frames[-1]
        assert opcode == 0x8, frames
        assert struct.unpack("!H", payload[:2])[0] == code, (name, payload)
        await h.append(3, 6)
        assert await recv_seqs(bystander, 3) == [3, 4, 5]


async def test_a_giant_request_head_is_431_and_others_keep_receiving(tmp_path: Path) -> None:
    async with (
        running_server(tmp_path, preload=entries(1, 3)) as h,
        h.ws("?from_seq=1") as bystander,
    ):
        one_header = upgrade_request(headers={"x-api-key": h.key, "x-big": "a" * 100_000})
        many = upgrade_request(headers={f"x-{i}": "b" * 50 for i in range(2000)})
        for request in (one_header, many):
            assert status_of(await raw_request(h.port, request)) == 431
        assert await recv_seqs(bystander, 2) == [1, 2]
