"""Synthetic Hyperliquid blocks: the exact bytes of one replica command line per height.

Rules kept here:
* Pure: ``block_bytes(h)`` is a function of the generator's parameters (seed, mean size, base
  height and time, block interval, empty fraction, size spread) and ``h`` only. The same height
  always gives the same bytes, which is what a node replaying blocks after a restart writes
  (consensus is deterministic), and what lets a test know a line without reading it back.
* Node key order: ``{"abci_block":{"time","signed_action_bundles","round","parent_round",
  "hardfork","proposer"},"resps":{"Full":[[hash,[response…]]…]}}``, compact JSON, no newline.
  Responses are zipped to actions bundle by bundle.
* ``time`` = base time + (h - base height) × interval + a jitter of ±1/4 interval, so it
  strictly increases. It prints as chrono does (``%.f``): 9 digits, or 6/3/0 when the value is
  round — a few blocks are snapped forward to a round µs, ms or second for that.
* ``round`` rises by 1 per block plus three skipped rounds per 256 heights at seeded places
  (``parent_round`` is the previous height's round), all computed without history.
* Sizes: a lognormal byte budget (mean ``mean_bytes``, capped at ``max_bytes``) is filled with
  actions; a few percent of blocks are empty. The budget picks the number of actions, so the
  mix by count does not depend on size.
"""

from __future__ import annotations

import random
import sys
from array import array
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from math import erf, exp, log, sqrt

from disksync.simulate.actions import build_pool
from disksync.simulate.templates import PairTemplate

MiB = 1024 * 1024
DEFAULT_MEAN_BYTES = 190_000
DEFAULT_MAX_BYTES = 8 * MiB
DEFAULT_START_HEIGHT = 760_000_001  # first line of file 760000000
DEFAULT_RATE = 14.0
# 2026-06-11T17:27:48Z, the time of the real sample block in the shared fixtures.
DEFAULT_BASE_TIME_NS = 1_781_198_868_000_000_000
TEMPLATE_POOL_SIZE = 8192  # power of two: picked with a mask
HEX_POOL_BYTES = 16 * MiB  # hex characters; see docs/SIMULATOR.md on compression realism
_ROUND_OFFSET = 560_000_000
_ROUND_CHUNK = 256
_ROUND_SKIPS_PER_CHUNK = 3
_HARDFORK_VERSION = 90
_N_VALIDATORS = 24
_N_BROADCASTERS = 40
_MASK64 = (1 << 64) - 1
_BIG_ENDIAN = sys.byteorder == "big"  # template picks are read as little-endian words


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


@lru_cache(maxsize=4)
def _hex_pool(seed: int) -> bytes:
    return (
        # B311: simulation/sampling, not security
        random.Random(f"disksync-simulate-hex-{seed}").randbytes(HEX_POOL_BYTES // 2).hex().encode()  # nosec B311
    )


@lru_cache(maxsize=4)
def _template_pool(seed: int) -> tuple[PairTemplate, ...]:
    return tuple(build_pool(seed, TEMPLATE_POOL_SIZE))


def format_block_time(ns: int) -> str:
    """Naive UTC with chrono's ``%.f``: no fraction, or 3, 6 or 9 digits."""
    secs, frac = divmod(ns, 1_000_000_000)
    base = datetime.fromtimestamp(secs, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    if frac == 0:
        return base
    if frac % 1_000_000 == 0:
        return f"{base}.{frac // 1_000_000:03d}"
    if frac % 1_000 == 0:
        return f"{base}.{frac // 1_000:06d}"
    return f"{base}.{frac:09d}"


_MIN_BLOCK = 600  # an empty block plus one bundle's framing


def _solve_mu(mean: float, sigma: float, floor: float) -> float:
    """``mu`` such that E[max(B, floor)] = mean for B ~ lognormal(mu, sigma).

    Every non-empty block holds at least one action, so small budgets round up to ``floor``;
    without this the mean of small blocks (tests use ~2 KB) would come out far too high.
    """

    def phi(x: float) -> float:
        return 0.5 * (1 + erf(x / sqrt(2)))

    def expected(mu: float) -> float:
        lf = log(floor)
        return floor * phi((lf - mu) / sigma) + exp(mu + sigma**2 / 2) * phi(
            (mu + sigma**2 - lf) / sigma
        )

    if mean <= floor:
        return log(floor) - 4 * sigma
    lo, hi = log(floor) - 10 * sigma, log(mean)
    for _ in range(60):
        mid = (lo + hi) / 2
        if expected(mid) < mean:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


@dataclass(frozen=True, slots=True)
class BlockStats:
    """What went into one block (for tests and the bench; not part of the bytes)."""

    n_actions: int
    n_bundles: int
    kinds: dict[str, int]


class BlockGenerator:
    """Deterministic block content. See the module docstring for what is a pure function."""

    def __init__(
        self,
        seed: int = 0,
        mean_bytes: int = DEFAULT_MEAN_BYTES,
        *,
        base_height: int = DEFAULT_START_HEIGHT,
        base_time_ns: int = DEFAULT_BASE_TIME_NS,
        block_interval_ns: int = round(1e9 / DEFAULT_RATE),
        empty_fraction: float = 0.03,
        size_sigma: float = 0.85,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        if mean_bytes < 200:
            raise ValueError("mean_bytes must be at least 200")
        if block_interval_ns <= 0:
            raise ValueError("block_interval_ns must be positive")
        self.seed = seed
        self.mean_bytes = mean_bytes
        self.base_height = base_height
        self.base_time_ns = base_time_ns
        self.block_interval_ns = block_interval_ns
        self.empty_fraction = empty_fraction
        self.size_sigma = size_sigma
        self.max_bytes = max_bytes
        self._templates = _template_pool(seed)
        self._flat = [
            (
                tpl.action_fmt,
                tpl.action_order,
                tpl.resp_fmt,
                tpl.resp_order,
                tpl.hex_spans,
                tpl.hex_total,
                tpl.n_oids,
                tpl.kind,
            )
            for tpl in self._templates
        ]
        self._hex = _hex_pool(seed)
        sizes = [t.size + 2 for t in self._templates]
        self._mean_pair = sum(sizes) / len(sizes)
        # Mean overshoot past a budget (renewal theory: E[X^2] / 2E[X]), heavy for big actions.
        self._overshoot = sum(s * s for s in sizes) / (2 * sum(sizes))
        # B311: simulation/sampling, not security
        names = random.Random(f"disksync-simulate-names-{seed}")  # nosec B311
        self._validators = [names.randbytes(20).hex().encode() for _ in range(_N_VALIDATORS)]
        self._broadcasters = [names.randbytes(20).hex().encode() for _ in range(_N_BROADCASTERS)]
        self._seed_mix = _splitmix64(seed & _MASK64)
        # The budget covers a whole non-empty block; empty ones (~330 B) are made up for.
        nonempty_mean = (mean_bytes - empty_fraction * 330) / max(1e-9, 1 - empty_fraction)
        self._mu = _solve_mu(nonempty_mean, size_sigma, _MIN_BLOCK + self._mean_pair)

    # ---- pure per-height values ---------------------------------------------------------------

    def _hash(self, height: int, salt: int) -> int:
        return _splitmix64((height * 0x2545F4914F6CDD1D + salt) & _MASK64 ^ self._seed_mix)

    def block_time_ns(self, height: int) -> int:
        """Block time in ns since the epoch; strictly increasing in ``height``."""
        interval = self.block_interval_ns
        h = self._hash(height, 1)
        # Jitter in [-1/4, +1/4) interval: consecutive blocks stay at least half an interval apart.
        slot = self.base_time_ns + (height - self.base_height) * interval
        t = slot + (h % (interval // 2 + 1)) - interval // 4
        # Occasionally snap forward to a round value so that fewer digits get printed, as
        # chrono does; never past the next block's earliest time. Odds per block:
        # 1/16 to try a whole second (reachable ~2 % of the time at 14/s), 1/128 ms, 1/64 µs.
        pick = (h >> 40) & 0xFFFF
        unit = 0
        if pick < 4096:
            unit = 1_000_000_000
        elif pick < 4096 + 512:
            unit = 1_000_000
        elif pick < 4096 + 512 + 1024:
            unit = 1_000
        if unit:
            snapped = -(-t // unit) * unit
            if snapped < slot + interval * 3 // 4:  # still before the next block's earliest
                return snapped
        return t

    def block_time(self, height: int) -> str:
        return format_block_time(self.block_time_ns(height))

    def block_date(self, height: int) -> str:
        """``YYYYMMDD`` (UTC) of the block: the date directory the node opens a file in."""
        secs = self.block_time_ns(height) // 1_000_000_000
        return datetime.fromtimestamp(secs, UTC).strftime("%Y%m%d")

    def block_round(self, height: int) -> int:
        chunk, pos = divmod(height, _ROUND_CHUNK)
        h = self._hash(chunk, 2)
        skips = sum(((h >> (8 * k)) & 0xFF) <= pos for k in range(_ROUND_SKIPS_PER_CHUNK))
        return _ROUND_OFFSET + height + chunk * _ROUND_SKIPS_PER_CHUNK + skips

    def _proposer(self, round_: int) -> bytes:
        return self._validators[self._hash(round_, 3) % _N_VALIDATORS]

    # ---- the line -----------------------------------------------------------------------------

    def block_bytes(self, height: int) -> bytes:
        """The exact line the node writes for ``height``, without its trailing newline."""
        return self._render(height, None)

    def block_stats(self, height: int) -> BlockStats:
        kinds: dict[str, int] = {}
        line = self._render(height, kinds)
        del line
        n_actions = sum(v for k, v in kinds.items() if not k.startswith("#"))
        return BlockStats(n_actions, kinds.pop("#bundles", 0), kinds)

    def _render(self, height: int, kinds: dict[str, int] | None) -> bytes:
        # B311: simulation/sampling, not security
        rng = random.Random((self.seed << 64) ^ height)  # nosec B311
        round_ = self.block_round(height)
        time_ns = self.block_time_ns(height)
        head = (
            b'{"abci_block":{"time":"%s","signed_action_bundles":['
            % self.block_time(height).encode()
        )
        tail = (
            b'],"round":%d,"parent_round":%d,"hardfork":{"version":%d,"round":%d},"proposer":"0x%s"}'
            % (
                round_,
                self.block_round(height - 1),
                _HARDFORK_VERSION,
                self.block_round(height - height % 10_000_000) - 6_923_749,
                self._proposer(round_),
            )
        )
        if rng.random() < self.empty_fraction:
            return head + tail + b',"resps":{"Full":[]}}'
        budget = min(self.max_bytes, rng.lognormvariate(self._mu, self.size_sigma))
        # Stop once the next action would, on average, overshoot more than it undershoots.
        stop_at = budget - len(head) - len(tail) - 40 - self._overshoot
        bundles, resps = self._fill(rng, height, time_ns // 1_000_000, stop_at, kinds)
        return b"".join(
            (head, bundles, tail, b',"resps":{"Full":[', resps, b"]}}"),
        )

    def _fill(
        self,
        rng: random.Random,
        height: int,
        block_ms: int,
        stop_at: float,
        kinds: dict[str, int] | None,
    ) -> tuple[bytes, bytes]:
        templates = self._flat
        mask = len(templates) - 1
        pool = self._hex
        pool_limit = len(pool) - 65_536
        cursor = rng.randrange(pool_limit)
        oid = 400_000_000_000 + height * 613
        bundles: list[bytes] = []
        resps: list[bytes] = []
        acc = 0
        first = True
        while first or acc < stop_at:
            first = False
            # One bundle: a broadcaster's batch of signed actions.
            n_in_bundle = 1 + int(rng.paretovariate(1.3)) % 48
            words = array("I", rng.randbytes(4 * n_in_bundle))
            if _BIG_ENDIAN:
                words.byteswap()
            actions: list[bytes] = []
            answers: list[bytes] = []
            # The hot loop of the whole simulator: locals only, two C-level formats per action.
            for word in words:
                act_fmt, act_order, resp_fmt, resp_order, spans, need, n_oids, kind = templates[
                    word & mask
                ]
                if cursor + need > pool_limit:
                    cursor = (word >> 13) % 4096
                vals = [pool[cursor + lo : cursor + hi] for lo, hi in spans]
                cursor += need
                vals.append(b"%d" % (block_ms - (word >> 22) % 3000))
                if n_oids:
                    vals += [b"%d" % (oid + k) for k in range(n_oids)]
                oid += n_oids + 1
                action = act_fmt % tuple(map(vals.__getitem__, act_order))
                answer = resp_fmt % tuple(map(vals.__getitem__, resp_order))
                actions.append(action)
                answers.append(answer)
                acc += len(action) + len(answer) + 2
                if kinds is not None:
                    kinds[kind] = kinds.get(kind, 0) + 1
                if acc >= stop_at:
                    break
            bundle_hash = pool[cursor : cursor + 64]
            cursor += 64
            broadcaster = self._broadcasters[rng.randrange(_N_BROADCASTERS)]
            bundles.append(
                b'["0x%s",{"signed_actions":[%s],"broadcaster":"0x%s","broadcaster_nonce":%d}]'
                % (bundle_hash, b",".join(actions), broadcaster, block_ms + len(bundles))
            )
            resps.append(b'["0x%s",[%s]]' % (bundle_hash, b",".join(answers)))
            acc += 230
            if kinds is not None:
                kinds["#bundles"] = kinds.get("#bundles", 0) + 1
        return b",".join(bundles), b",".join(resps)
