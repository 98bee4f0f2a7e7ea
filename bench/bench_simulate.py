"""Generation speed of the synthetic node, against references measured in the same run.

Usage: python bench/bench_simulate.py [--mb 200] [--mean-bytes 190000] [--dir /tmp]

1. ``BlockGenerator.block_bytes`` alone (MB/s of JSON lines), compared with orjson re-encoding
   the very same blocks from parsed objects (what a dict-building generator could at best do).
2. ``write_data_dir`` (generation + buffered writes to real files), compared with writing the
   same bytes, already generated, to files (the disk/page-cache ceiling).
3. Facts about the content: mean/max line size, zstd ratio (level 3, per line), action mix.

Each figure is the best of 3 rounds; the generator's one-time set-up (template and hex pools,
~0.3 s per seed) is excluded from the rates and printed on its own.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import tempfile
import time
from pathlib import Path

import orjson
import zstandard

from disksync.simulate import BlockGenerator, write_data_dir

H0 = 760_000_001


def best_of(rounds: int, fn: object) -> float:
    assert callable(fn)
    best = float("inf")
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mb", type=float, default=200.0, help="MB per round (default 200)")
    parser.add_argument("--mean-bytes", type=int, default=190_000)
    parser.add_argument("--dir", type=Path, default=None, help="where to write (default tmp)")
    args = parser.parse_args()
    count = max(10, int(args.mb * 1e6 / args.mean_bytes))

    t = time.perf_counter()
    gen = BlockGenerator(seed=11, mean_bytes=args.mean_bytes)
    setup = time.perf_counter() - t
    lines = [gen.block_bytes(h) for h in range(H0, H0 + count)]
    total = sum(len(x) for x in lines)

    gen_s = best_of(3, lambda: [gen.block_bytes(h) for h in range(H0, H0 + count)])
    parsed = [orjson.loads(x) for x in lines]
    dumps_s = best_of(3, lambda: [orjson.dumps(p) for p in parsed])

    root = Path(tempfile.mkdtemp(prefix="bench-simulate-", dir=args.dir))
    try:
        write_data_dir(root / "warm", seed=11, count=10, mean_bytes=args.mean_bytes)

        def tree() -> None:
            target = root / "tree"
            shutil.rmtree(target, ignore_errors=True)
            write_data_dir(target, seed=11, count=count, mean_bytes=args.mean_bytes)

        def raw() -> None:
            target = root / "raw"
            shutil.rmtree(target, ignore_errors=True)
            target.mkdir()
            for start in range(0, count, 10_000):
                with (target / str(start)).open("wb", buffering=4 * 1024 * 1024) as fh:
                    for line in lines[start : start + 10_000]:
                        fh.write(line)
                        fh.write(b"\n")

        tree_s = best_of(3, tree)
        raw_s = best_of(3, raw)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    zc = zstandard.ZstdCompressor(level=3)
    sample = lines[: min(len(lines), 300)]
    ratio = sum(len(zc.compress(x)) for x in sample) / sum(len(x) for x in sample)
    kinds: collections.Counter[str] = collections.Counter()
    for h in range(H0, H0 + min(count, 200)):
        kinds.update(gen.block_stats(h).kinds)
    n_actions = sum(kinds.values())

    mb = total / 1e6
    print(
        f"blocks: {count}, {mb:.0f} MB, mean {total / count / 1e3:.1f} KB, "
        f"max {max(len(x) for x in lines) / 1e6:.2f} MB "
        f"(target mean {args.mean_bytes / 1e3:.0f} KB)"
    )
    print(f"generator set-up (pools, once per seed): {setup:.2f} s")
    print(f"block_bytes            {mb / gen_s:8.1f} MB/s  {count / gen_s:8.0f} blocks/s")
    print(
        f"  ref orjson.dumps     {mb / dumps_s:8.1f} MB/s  "
        f"ratio generator/ref {dumps_s / gen_s:.2f}"
    )
    print(f"write_data_dir         {mb / tree_s:8.1f} MB/s")
    print(f"  ref write same bytes {mb / raw_s:8.1f} MB/s  ratio tree/ref {raw_s / tree_s:.2f}")
    print(f"zstd level 3, per line: {ratio:.3f} of original size")
    top = ", ".join(f"{k} {100 * v / n_actions:.1f}%" for k, v in kinds.most_common(6))
    print(f"action mix by count ({n_actions} actions): {top}")


if __name__ == "__main__":
    main()
