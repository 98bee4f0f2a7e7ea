"""The test harness's own promises (a flaky harness makes every test that uses it lie)."""

from __future__ import annotations

from conftest import free_port


def test_free_port_never_hands_out_a_port_twice() -> None:
    # 2,000 draws from ~28,000 ephemeral ports repeat one almost surely (birthday bound) unless
    # free_port remembers; a repeat once made two "regions" one server and a gap test lie.
    ports = [free_port() for _ in range(2000)]
    assert len(set(ports)) == len(ports)
