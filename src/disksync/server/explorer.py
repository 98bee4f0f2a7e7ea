"""The explorer page (SPEC §11): ``GET /explorer`` on the feed port, one self-contained HTML file.

Rules kept here:
* The page needs no key to load; it asks for one and then reads the feed like any client
  (``/v1/status`` with ``x-api-key`` first, so a refused key gets its HTTP reason, then the
  WebSocket with ``?api_key=``). The server adds nothing else for it: no server-side decoding,
  no state, no second route.
* One file (``explorer.html``), no external resources. Its Content-Security-Policy allows
  exactly its own inline ``<script>`` and ``<style>`` by their sha256 (computed here from the
  file, so an edit cannot leave a stale hash), same-origin fetches and WebSockets, nothing
  else; it may not be framed.
* Pure: the page and its headers are made once, when first asked for, from the package's file.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import re
from dataclasses import dataclass
from importlib import resources

PAGE_FILE = "explorer.html"
HTML = "text/html; charset=utf-8"
_INLINE = re.compile(rb"<(script|style)>(.*?)</\1>", re.DOTALL)


@dataclass(frozen=True, slots=True)
class Page:
    body: bytes
    headers: tuple[tuple[str, str], ...]


def content_security_policy(html: bytes) -> str:
    """A CSP that allows the page's inline ``<script>`` and ``<style>`` blocks (by hash) and
    nothing else but same-origin connections (``'self'`` covers ``ws:``/``wss:`` to the same
    host in CSP Level 3)."""
    hashes: dict[bytes, list[str]] = {b"script": [], b"style": []}
    for match in _INLINE.finditer(html):
        digest = base64.b64encode(hashlib.sha256(match.group(2)).digest()).decode("ascii")
        hashes[match.group(1)].append(f"'sha256-{digest}'")
    if not hashes[b"script"] or not hashes[b"style"]:
        raise ValueError("the explorer page has no inline <script> or <style> block")
    return "; ".join(
        (
            "default-src 'none'",
            "script-src " + " ".join(hashes[b"script"]),
            "style-src " + " ".join(hashes[b"style"]),
            "connect-src 'self'",
            "img-src 'self' data:",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        )
    )


@functools.cache
def page() -> Page:
    body = resources.files("disksync.server").joinpath(PAGE_FILE).read_bytes()
    return Page(
        body,
        (
            ("Content-Security-Policy", content_security_policy(body)),
            ("X-Content-Type-Options", "nosniff"),
            ("Referrer-Policy", "no-referrer"),
            ("Cache-Control", "no-cache"),
        ),
    )
