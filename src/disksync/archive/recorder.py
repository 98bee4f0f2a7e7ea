"""Follow a feed and write the archive: ``disksync record``'s core.

    feed (SDK) ──▶ spool.add (loop thread, one append per line)
                     └─ complete file ──▶ seal (a thread, in order) ──▶ upload (a thread, retried)

Rules kept here:
* The spool is the resume point: the feed starts at ``spool.next_seq`` when the spool has
  one, else at ``from_seq`` (None: live). ``kill -9`` and a restart with the same arguments
  therefore continue with no file missing, duplicated or changed (see ``spool``).
* Nothing that talks to the store runs on the feed's path: a slow or failing store only makes
  the spool grow, so the server never sees a slow consumer (no 1013). Sealing (LZ4) runs in a
  thread too. Uploads are retried forever with exponential backoff (1 s doubling to 60 s,
  jittered), each failure logged and counted; the spool's bound (``SpoolFull``) is the only
  thing that stops the recorder, with a clear error; a restart resumes.
* Metrics (``disksync_record_*``): head seq, lag, files sealed and uploaded, bytes uploaded,
  upload failures, spool bytes.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge

from disksync.archive.spool import Spool
from disksync.archive.upload import upload
from disksync.client import ClientConfig, Feed, events
from disksync.store import ObjectStore

log = logging.getLogger("disksync.record")


class RecordMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        def counter(name: str, doc: str) -> Counter:
            return Counter(f"disksync_record_{name}", doc, registry=registry)

        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(f"disksync_record_{name}", doc, registry=registry)

        self.received = counter("received", "Commands received from the feed")
        self.received_bytes = counter("received_bytes", "Payload bytes received")
        self.sealed = counter("files_sealed", "Archive files completed and compressed")
        self.uploaded = counter("files_uploaded", "Archive files uploaded with their manifest")
        self.uploaded_bytes = counter("bytes_uploaded", "Bytes uploaded (objects + manifests)")
        self.upload_failures = counter("upload_failures", "Failed upload attempts (retried)")
        self.head_seq = gauge("head_seq", "Last seq received")
        self.lag = gauge("lag_seconds", "Now minus the block time of the last seq received")
        self.spool_bytes = gauge("spool_bytes", "Bytes waiting in the spool")
        self.pending_files = gauge("pending_files", "Sealed files waiting for upload")


@dataclass(slots=True)
class RecordStatus:
    head_seq: int | None = None
    lag_s: float | None = None
    received_bytes: int = 0
    sealed: int = 0
    uploaded: int = 0
    pending: int = 0
    spool_bytes: int = 0
    store_error: str | None = None


class Recorder:
    def __init__(
        self,
        config: ClientConfig,
        store: ObjectStore,
        spool: Spool,
        *,
        registry: CollectorRegistry,
        on_event: events.EventCallback | None = None,
        retry_initial_s: float = 1.0,
        retry_max_s: float = 60.0,
    ) -> None:
        self.config = config
        self.store = store
        self.spool = spool
        self.metrics = RecordMetrics(registry)
        self.on_event = on_event
        self.status = RecordStatus()
        self.retry_initial_s = retry_initial_s
        self.retry_max_s = retry_max_s
        self._to_seal: asyncio.Queue[int] = asyncio.Queue()
        self._sealed = asyncio.Event()

    async def run(self, on_progress: Callable[[RecordStatus], None] | None = None) -> None:
        """Until cancelled, or until one part fails for good (the spool is full, the feed
        refuses the key): then that error is raised, as is."""
        self._sealed.set()  # files sealed before a restart wait for upload
        parts = [self._follow(), self._seal_loop(), self._upload_loop()]
        if on_progress is not None:
            parts.append(self._progress_loop(on_progress))
        tasks = [asyncio.create_task(part) for part in parts]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _follow(self) -> None:
        metrics, status, spool = self.metrics, self.status, self.spool
        async with Feed(self.config, on_event=self.on_event) as feed:
            async for command in feed:
                payload = command.payload
                for height in spool.add(command.seq, payload, command.ts_ms):
                    self._to_seal.put_nowait(height)
                metrics.received.inc()
                metrics.received_bytes.inc(len(payload))
                metrics.head_seq.set(command.seq)
                status.head_seq = command.seq
                status.received_bytes += len(payload)
                status.lag_s = max(0.0, time.time() - command.ts_ms / 1000)
                metrics.lag.set(status.lag_s)

    async def _seal_loop(self) -> None:
        while True:
            height = await self._to_seal.get()
            sealed = await asyncio.to_thread(self.spool.seal, height)
            self.metrics.sealed.inc()
            self.status.sealed += 1
            log.info(
                "sealed %s (%d seqs, %d bytes)",
                sealed.manifest.object,
                sealed.manifest.count,
                sealed.manifest.object_bytes,
            )
            self._sealed.set()

    async def _upload_loop(self) -> None:
        delay = self.retry_initial_s
        while True:
            await self._sealed.wait()
            self._sealed.clear()
            pending = await asyncio.to_thread(self.spool.pending)
            for file in pending:
                while True:
                    try:
                        sent = await asyncio.to_thread(upload, self.store, self.spool, file)
                    except Exception as exc:  # the store's trouble: retried, never fatal
                        self.metrics.upload_failures.inc()
                        self.status.store_error = str(exc)
                        log.warning("upload failed, retrying in %.1f s: %s", delay, exc)
                        # B311: simulation/sampling, not security
                        await asyncio.sleep(delay + random.uniform(0, min(1.0, delay)))  # nosec B311
                        delay = min(self.retry_max_s, delay * 2)
                        continue
                    delay = self.retry_initial_s
                    self.status.store_error = None
                    self.status.uploaded += 1
                    self.metrics.uploaded.inc()
                    self.metrics.uploaded_bytes.inc(sent)
                    break

    async def _progress_loop(self, on_progress: Callable[[RecordStatus], None]) -> None:
        while True:
            status = self.status
            status.spool_bytes = self.spool.used_bytes()
            status.pending = self.spool.pending_count()
            self.metrics.spool_bytes.set(status.spool_bytes)
            self.metrics.pending_files.set(max(0, status.pending))
            on_progress(status)
            await asyncio.sleep(0.5)
