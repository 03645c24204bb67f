"""Fitting many power laws: vectorized variable projection vs a scipy.optimize.curve_fit loop.

1e5 noisy curves of 7 points (the shape of per-token scaling curves over a 7-model suite).
The curve_fit loop runs on a subset (default 2000 curves) and its per-curve time is reported
alongside; the vectorized fit runs on the same subset (like for like) and on all curves.

Usage: python benchmarks/bench_fit.py [--curves 100000] [--loop 2000] [--threads 2]
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
from scipy.optimize import OptimizeWarning, curve_fit

from quanta.scaling import fit_power_laws


def model(x: np.ndarray, c0: float, c1: float, alpha: float) -> np.ndarray:
    return c0 + c1 * x**-alpha


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--curves", type=int, default=100_000)
    ap.add_argument("--loop", type=int, default=2000)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    x = np.array([1.9e7, 8.5e7, 3.0e8, 8.1e8, 1.2e9, 2.5e9, 6.4e9])  # Pythia non-embedding N
    alpha = rng.uniform(0.05, 0.8, args.curves)
    c0 = rng.uniform(0.0, 2.0, args.curves)
    c1 = rng.uniform(1.0, 50.0, args.curves) * x[0] ** alpha  # loss scale ~1-50 at x[0]
    y = (c0[:, None] + c1[:, None] * x[None] ** -alpha[:, None]) * np.exp(
        rng.normal(0, 0.02, (args.curves, x.size))
    )

    t = time.perf_counter()
    vec_all = fit_power_laws(x, y)
    t_vec_all = time.perf_counter() - t
    sub = slice(0, args.loop)
    t = time.perf_counter()
    vec_sub = fit_power_laws(x, y[sub])
    t_vec_sub = time.perf_counter() - t

    loop_alpha = np.full(args.loop, np.nan)
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OptimizeWarning)
        for i in range(args.loop):
            try:
                p, _ = curve_fit(
                    model, x, y[i], p0=(y[i].min() / 2, y[i, 0] * x[0] ** 0.3, 0.3), maxfev=5000
                )
                loop_alpha[i] = p[2]
            except RuntimeError:
                pass
    t_loop = time.perf_counter() - t

    per_loop, per_vec = t_loop / args.loop, t_vec_all / args.curves
    ok = vec_sub["success"] & np.isfinite(loop_alpha)
    print(f"{args.curves:,} curves of {x.size} points; curve_fit loop on {args.loop:,}")
    print(f"curve_fit loop:   {t_loop:8.2f} s for {args.loop:,}  ({per_loop * 1e3:.3f} ms/curve)")
    print(
        f"vectorized:       {t_vec_sub:8.2f} s for {args.loop:,}  "
        f"({t_vec_sub / args.loop * 1e3:.4f} ms/curve)  ratio {t_loop / t_vec_sub:.0f}x"
    )
    print(
        f"vectorized, all:  {t_vec_all:8.2f} s for {args.curves:,}  "
        f"({per_vec * 1e3:.4f} ms/curve)  ratio vs loop per curve {per_loop / per_vec:.0f}x"
    )
    print(
        f"success: vectorized {vec_all['success'].mean():.1%} of all; curve_fit "
        f"{np.isfinite(loop_alpha).mean():.1%} of the subset"
    )
    print(
        f"|alpha - planted|, median: vectorized "
        f"{np.median(np.abs(vec_all['alpha'] - alpha)[vec_all['success']]):.4f}, curve_fit "
        f"{np.nanmedian(np.abs(loop_alpha - alpha[sub])):.4f}; where both succeed, median "
        f"|difference| {np.median(np.abs(vec_sub['alpha'] - loop_alpha)[ok]):.2e}"
    )


if __name__ == "__main__":
    main()
