"""The explorer page (SPEC §11) in a real headless Chromium against real `serve` processes.

The browser is Debian's `chromium` (scripts/test installs it) driven by Playwright; a machine
without it fails these tests with the reason, it never skips them. One live feed serves the
page; the checks follow what a person does: load the page with no key, try a wrong key, connect,
watch blocks arrive, click one, and keep watching while the server is killed and restarted.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import scaled
from disksync.hl import decode_block
from disksync.server import explorer
from live_feed import LiveFeed, live_feed
from test_client_support import create_key

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")


def chromium_path() -> str:
    found = os.environ.get("DISKSYNC_CHROMIUM") or next(
        (p for p in map(shutil.which, CHROMIUM_NAMES) if p), None
    )
    if not found:
        pytest.fail(
            "no Chromium for the explorer's browser tests: `bash scripts/test` installs Debian's "
            "chromium (apt-get install chromium), or set DISKSYNC_CHROMIUM to a Chromium binary"
        )
    return found


def test_the_policy_allows_exactly_the_pages_own_script_and_style() -> None:
    page = explorer.page()
    policy = dict(page.headers)["Content-Security-Policy"]
    blocks = re.findall(rb"<(script|style)>(.*?)</\1>", page.body, re.DOTALL)
    assert sorted(kind for kind, _ in blocks) == [b"script", b"style"]
    for kind, text in blocks:
        digest = base64.b64encode(hashlib.sha256(text).digest()).decode()
        assert f"{kind.decode()}-src 'sha256-{digest}'" in policy
    assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy
    # No inline handlers or style attributes, which a hash-based policy would block.
    assert not re.search(rb"\son[a-z]+=|\sstyle=", page.body)
    with pytest.raises(ValueError, match="no inline"):
        explorer.content_security_policy(b"<html><body>no script</body></html>")


@pytest.fixture(scope="module")
def feed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveFeed]:
    with live_feed(tmp_path_factory.mktemp("explorer"), rate=10, mean_bytes=20_000) as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=chromium_path(), args=["--no-sandbox"]
        )
        yield chromium
        chromium.close()


def http_base(ws_url: str) -> str:
    return ws_url.replace("ws://", "http://").rstrip("/")


def test_the_page_needs_no_key_and_is_in_the_openapi_document(feed: LiveFeed) -> None:
    base = http_base(feed.urls[0])
    reply = httpx.get(f"{base}/explorer", timeout=scaled(10))
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/html")
    assert "Content-Security-Policy" in reply.headers
    assert b"<title>disksync explorer</title>" in reply.content
    operation = httpx.get(f"{base}/openapi.json", timeout=scaled(10)).json()["paths"]["/explorer"]
    assert operation["get"]["security"] == []


def test_a_person_connects_watches_decodes_and_survives_a_kill_9(
    feed: LiveFeed, browser: Any, tmp_path: Path
) -> None:
    edge = feed.servers[1]
    base = http_base(edge.url)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    page.on(
        "console",
        lambda msg: problems.append(msg.text) if "Content Security Policy" in msg.text else None,
    )
    page.goto(f"{base}/explorer")

    # A wrong key: the page says why (the HTTP answer of /v1/status) and stops trying.
    page.fill("#key", "ak_live_not_a_key_at_all")
    page.click("#go")
    page.wait_for_function(
        "() => document.getElementById('error').textContent.includes('401')",
        timeout=scaled(15) * 1000,
    )
    assert page.text_content("#state") == "key refused"

    # A key whose tier has no feed (basic: the HTTP API only): the page says which tiers do.
    _, basic = create_key(feed.state_dir, tier="basic")
    page.fill("#key", basic)
    page.click("#go")
    page.wait_for_function(
        "() => document.getElementById('error').textContent.includes('quant and enterprise')",
        timeout=scaled(15) * 1000,
    )
    assert page.evaluate("() => window.explorer.received") == 0

    # The right key: blocks arrive in order, the mix and the latency table fill.
    page.click("#stop")
    page.fill("#key", feed.key)
    page.click("#go")
    page.wait_for_function("() => window.explorer.received >= 20", timeout=scaled(30) * 1000)
    page.wait_for_timeout(400)  # one render period
    state = page.evaluate("() => window.explorer")
    assert state["connected"] and state["gaps"] == 0 and state["invalid"] == 0
    assert page.locator("#mix .bar").count() > 0
    assert page.locator("#latency tbody tr").count() == 4
    assert page.locator("#blocks tbody tr").count() >= 20

    # Click a block: the page shows the same actions, in the same order, as disksync.hl.
    # (by its seq: the table is redrawn every 250 ms, a row's position moves as blocks arrive)
    seq = int(page.locator("#blocks tbody tr").nth(3).get_attribute("data-seq") or "0")
    page.locator(f'#blocks tbody tr[data-seq="{seq}"]').click()
    assert page.text_content("#decoded-title") == f"Block {seq}"
    shown = page.locator("#actions tbody tr td:nth-child(3)").all_text_contents()
    one = httpx.get(
        f"{base}/v1/replica_cmds/{seq}", headers={"x-api-key": feed.key}, timeout=scaled(10)
    ).json()
    block = decode_block(bytes.fromhex(one["raw_hex"]), seq)
    expected = [
        f"multiSig:{a.inner_type}" if a.type == "multiSig" and a.inner_type else a.type
        for bundle in block.bundles
        for a in bundle.actions
    ]
    assert shown == expected and expected
    page.screenshot(path=str(tmp_path / "explorer.png"), full_page=True)

    # kill -9 of the server it reads: it reconnects from the next seq, with no gap or repeat.
    state = page.evaluate("() => window.explorer")
    before = state["received"]
    edge.kill()
    page.wait_for_function("() => !window.explorer.connected", timeout=scaled(15) * 1000)
    edge.start()
    page.wait_for_function(
        f"() => window.explorer.connected && window.explorer.received >= {before + 40}",
        timeout=scaled(60) * 1000,
    )
    after = page.evaluate("() => window.explorer")
    assert after["gaps"] == 0 and after["reconnects"] > state["reconnects"]
    assert after["closes"][len(state["closes"]) :][:1] == [1006]  # the kill, as a browser sees it
    assert not problems, problems
    page.close()
