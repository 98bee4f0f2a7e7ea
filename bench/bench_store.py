"""The object store library: obstore (what ``disksync.store`` uses) against boto3 (the AWS SDK,
the usual choice) on the same S3 server, same objects, same run.

Usage: python bench/bench_store.py [--mb 64] [--rounds 3]

A local moto S3 server (the one the tests use) is started on a free port. Each round puts one
``--mb`` object from a file and gets it back streamed, with each library in turn (obstore:
8 MiB multipart parts, ``stream``; boto3: ``upload_file``/``download_fileobj`` defaults). The
server is the same Python process for both, so wall time is mostly the server's: the figure
that belongs to the library is the **client's CPU per MB** (this process, all its threads).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx

from disksync.store import open_store


@contextlib.contextmanager
def moto_server() -> Iterator[dict[str, str]]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.TransportError):
                httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
                break
            time.sleep(0.1)
        httpx.put(f"http://127.0.0.1:{port}/bench", timeout=10).raise_for_status()
        yield {
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        }
    finally:
        proc.kill()
        proc.wait()


def cpu(fn: Callable[[], object]) -> tuple[float, float]:
    started, wall = time.process_time(), time.perf_counter()
    fn()
    return time.process_time() - started, time.perf_counter() - wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    import boto3

    with moto_server() as env, tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "object"
        path.write_bytes(os.urandom(args.mb * 1024 * 1024))
        ours = open_store("s3://bench/obstore", env)
        client = boto3.client(
            "s3",
            endpoint_url=env["AWS_ENDPOINT_URL"],
            aws_access_key_id="test",
            aws_secret_access_key="test",
            region_name="us-east-1",
        )

        def obstore_put() -> None:
            ours.put("o", path)

        def obstore_get() -> None:
            for _ in ours.stream("o"):
                pass

        def boto_put() -> None:
            client.upload_file(str(path), "bench", "boto/o")

        def boto_get() -> None:
            with open(os.devnull, "wb") as sink:
                client.download_fileobj("bench", "boto/o", sink)

        best: dict[str, tuple[float, float]] = {}
        for _ in range(args.rounds):
            for name, fn in (
                ("obstore put", obstore_put),
                ("boto3 put", boto_put),
                ("obstore get", obstore_get),
                ("boto3 get", boto_get),
            ):
                c, w = cpu(fn)
                old = best.get(name, (float("inf"), float("inf")))
                best[name] = (min(old[0], c), min(old[1], w))
        for name, (c, w) in best.items():
            print(
                f"{name:<12} client CPU {c / args.mb * 1e3:6.2f} ms/MB, "
                f"wall {args.mb / w:6.0f} MB/s"
            )
        for op in ("put", "get"):
            ratio = best[f"obstore {op}"][0] / best[f"boto3 {op}"][0]
            print(f"{op}: obstore CPU per MB = {ratio:.2f}x boto3's")


if __name__ == "__main__":
    main()
