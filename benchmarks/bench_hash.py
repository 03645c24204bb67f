"""Content hashes for run-directory integrity: XXH3-128 (xxhash, what quanta records) vs
hashlib's blake2b and sha256, side by side on the same bytes.

Each hash streams the file in 1 MiB blocks exactly as :func:`quanta.integrity.file_digest`
does; every method reads the same file, after one untimed warm-up read (so all of them hash
from the page cache: the cost measured is the hash, not the disk). The best of ``--repeat``
runs is reported per method, and the ratio to XXH3-128 from the same run.

Inputs: ``--size`` MB of seeded random bytes (default 256), and/or a directory (``--dir``):
its largest file is hashed, then the whole directory (what ``quanta verify`` reads).

Usage: python benchmarks/bench_hash.py [--size 256] [--dir runs/demo] [--repeat 3]
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import xxhash

CHUNK = 1 << 20
METHODS: dict[str, Callable[[], Any]] = {
    "xxh3_128": xxhash.xxh3_128,
    "blake2b": hashlib.blake2b,
    "sha256": hashlib.sha256,
}


def digest(paths: list[Path], make: Callable[[], Any]) -> None:
    for path in paths:
        h = make()
        with open(path, "rb") as fh:
            while block := fh.read(CHUNK):
                h.update(block)
        h.hexdigest()


def measure(label: str, paths: list[Path], repeat: int) -> None:
    size = sum(p.stat().st_size for p in paths)
    digest(paths, METHODS["sha256"])  # warm the page cache
    best = {}
    for name, make in METHODS.items():
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            digest(paths, make)
            times.append(time.perf_counter() - t0)
        best[name] = min(times)
    print(f"{label}: {len(paths)} file(s), {size / 1e6:,.1f} MB")
    for name, t in best.items():
        print(
            f"  {name:>9}: {size / 1e6 / t:9,.0f} MB/s  {t * 1e3:9.1f} ms  "
            f"({t / best['xxh3_128']:.1f}x the time of xxh3_128)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=float, default=256.0, help="MB of random bytes (0: none)")
    parser.add_argument("--dir", type=Path, help="a run directory: its largest file, then all")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if args.size > 0:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "random.bin"
            rng = np.random.default_rng(0)
            path.write_bytes(rng.integers(0, 256, int(args.size * 1e6), dtype=np.uint8).tobytes())
            measure("random bytes", [path], args.repeat)
    if args.dir is not None:
        files = [p for p in args.dir.rglob("*") if p.is_file()]
        largest = max(files, key=lambda p: p.stat().st_size)
        measure(f"largest file ({largest.relative_to(args.dir)})", [largest], args.repeat)
        measure(f"every file of {args.dir}", files, args.repeat)


if __name__ == "__main__":
    main()
