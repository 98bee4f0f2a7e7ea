"""Settings reach the running server: rate limits from the environment, and a bad value is a
configuration error (exit 2) before anything listens."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from conftest import disksync_cmd, free_port, scaled


def _create_key(state_dir: Path, tier: str) -> str:
    out = subprocess.run(
        disksync_cmd("keys", "create", "--tier", tier, "--json", "--state-dir", str(state_dir)),
        capture_output=True,
        text=True,
        check=True,
        timeout=scaled(30),
    )
    key: str = json.loads(out.stdout)["key"]
    return key


def _get(url: str, key: str) -> tuple[int, dict[str, str]]:
    request = urllib.request.Request(url, headers={"x-api-key": key})
    try:
        with urllib.request.urlopen(request, timeout=scaled(10)) as response:
            return response.status, dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers)


def _wait_healthy(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + scaled(20)
    while time.monotonic() < deadline:
        assert proc.poll() is None, "serve exited early"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                return
        except (OSError, urllib.error.HTTPError):
            time.sleep(0.1)
    raise AssertionError("serve did not become healthy")


def test_rate_limits_from_environment_apply_to_http_api(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    basic = _create_key(state_dir, "basic")
    quant = _create_key(state_dir, "quant")
    port = free_port()
    env = {**os.environ, "DISKSYNC_RATE_LIMITS": "basic=0.01/2"}
    proc = subprocess.Popen(
        disksync_cmd("serve", "--state-dir", str(state_dir), "--listen", f"127.0.0.1:{port}"),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_healthy(port, proc)
        url = f"http://127.0.0.1:{port}/v1/status"
        statuses = [_get(url, basic)[0] for _ in range(3)]
        assert statuses == [200, 200, 429]  # burst of 2, refill far slower than the test
        status, headers = _get(url, basic)
        assert status == 429
        assert int(headers["Retry-After"]) >= 1
        assert "X-RateLimit-Limit" in headers
        # quant is unlimited by default and untouched by the basic override
        assert all(_get(url, quant)[0] == 200 for _ in range(5))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=scaled(20))
    assert proc.returncode == 0


def test_bad_rate_limit_setting_exits_2_with_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "DISKSYNC_RATE_LIMITS": "gold=1/1"}
    result = subprocess.run(
        disksync_cmd("serve", "--state-dir", str(tmp_path), "--listen", f"127.0.0.1:{free_port()}"),
        env=env,
        capture_output=True,
        text=True,
        timeout=scaled(30),
        check=False,
    )
    assert result.returncode == 2
    assert "rate limit 'gold=1/1'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr
