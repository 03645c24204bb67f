"""Fitting many power laws: vectorized variable projection vs a scipy.optimize.curve_fit loop.

1e5 noisy curves of 7 points (the shape of per-token scaling curves over a 7-model suite),
``L = c0 + c1·N^-α`` with multiplicative (log-normal) noise. Three methods:

- ``curve_fit``: one call per curve, the same 3-parameter model with the same constraints as ours
  (α ∈ [1e-3, 10], c0 ≥ 0) and the same error model (``sigma=y``: relative residuals, right for
  multiplicative noise). Runs on a subset (``--loop``, default 2000 curves); its per-curve time
  is reported alongside.
  The same loop without bounds (scipy then uses its faster ``lm`` method, and c0 may go
  negative) is timed as well, as a second reference.
- ``fit_power_laws`` (ours): the same model, vectorized; on the same subset (like for like) and
  on all curves.
- log-log OLS (the paper's method): a straight line through ``(log N, log L)`` per curve, all
  curves in one ``np.polyfit`` call. It fits a *different* model, a pure power law without the
  offset c0, so its α is biased on these curves; its time and its α error are reported as they are.

Threads: ``--threads`` caps the BLAS/OpenMP pools (threadpoolctl) for the whole run; numpy's
elementwise work is single-threaded either way.

``--coverage`` runs a second, separate study instead: the empirical coverage of the nominal 95%
bootstrap CI of α for the pure power law ``L = c·N^-α`` (the paper's fit) under log-normal noise
``L·exp(ε)``, ``ε ~ N(0, σ²)``, for several point counts P and noise levels σ. ``--replicates``
seeded curves per cell, each fitted with ``fit_power_law(..., offset=False, bootstrap=B)``
("now"), next to the bootstrap the package used before issue 12 ("before": linear relative
residuals ``(y - ŷ)/y`` applied as ``ŷ·(1 + r*)``, non-positive values reset to ``ŷ``), re-run
here from the same seeds. The binomial 3-sd band around 0.95 is printed with it.

Usage: python benchmarks/bench_fit.py [--curves 100000] [--loop 2000] [--threads 2]
       python benchmarks/bench_fit.py --coverage [--replicates 1000] [--bootstrap 400]
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
from scipy import stats
from scipy.optimize import OptimizeWarning, curve_fit
from threadpoolctl import threadpool_info, threadpool_limits

from quanta.scaling import fit_power_law, fit_power_laws

ALPHA_BOUNDS = (1e-3, 10.0)  # the same search interval as fit_power_laws' default


def model(x: np.ndarray, c0: float, c1: float, alpha: float) -> np.ndarray:
    return c0 + c1 * x**-alpha


def curve_fit_loop(x: np.ndarray, y: np.ndarray, *, bounded: bool = True) -> np.ndarray:
    """α of every row of ``y`` by one relatively weighted curve_fit each; NaN where it raises
    or ends on a bound of α / with c1 ≤ 0 (what ``fit_power_laws`` reports as a failure too).
    ``bounded=False`` drops the bounds, which lets scipy use its faster ``lm`` method."""
    lower, upper = (0.0, -np.inf, ALPHA_BOUNDS[0]), (np.inf, np.inf, ALPHA_BOUNDS[1])
    bounds = (lower, upper) if bounded else (-np.inf, np.inf)
    alpha = np.full(len(y), np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OptimizeWarning)
        for i, yi in enumerate(y):
            p0 = (yi.min() / 2, yi[0] * x[0] ** 0.3, 0.3)
            try:
                p, _ = curve_fit(model, x, yi, p0=p0, sigma=yi, bounds=bounds, maxfev=5000)
            except (RuntimeError, ValueError):
                continue
            if ALPHA_BOUNDS[0] < p[2] < ALPHA_BOUNDS[1] and p[1] > 0:
                alpha[i] = p[2]
    return alpha


def loglog_ols(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """α of every row of ``y`` from a least-squares line through ``(log x, log y)``."""
    slope, _ = np.polyfit(np.log(x), np.log(y).T, 1)
    return -slope


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--curves", type=int, default=100_000)
    ap.add_argument("--loop", type=int, default=2000, help="curves fitted by the curve_fit loop")
    ap.add_argument("--threads", type=int, default=2, help="BLAS/OpenMP threads")
    ap.add_argument("--coverage", action="store_true", help="run the CI coverage study instead")
    ap.add_argument("--replicates", type=int, default=1000, help="coverage: curves per cell")
    ap.add_argument("--bootstrap", type=int, default=400, help="coverage: replicates per CI")
    args = ap.parse_args()
    if not 1 <= args.loop <= args.curves:
        ap.error(f"--loop must be in [1, --curves={args.curves}]; got {args.loop}.")
    with threadpool_limits(limits=args.threads):
        if args.coverage:
            coverage_study(args.replicates, args.bootstrap)
        else:
            run(args.curves, args.loop, args.threads)


def before_issue12_ci(x: np.ndarray, y: np.ndarray, *, bootstrap: int, seed: int) -> np.ndarray:
    """95% CI of α of the pure power law by the bootstrap ``fit_power_law`` had before issue 12
    (same seed ⇒ the same draws): linear relative residuals, inflated by √(P/(P−2)), applied as
    ``ŷ·(1 + r*)``, non-positive values reset to ``ŷ``, percentile interval."""
    fit = fit_power_laws(x, y, offset=False)
    fitted = fit["c1"][0] * x ** -fit["alpha"][0]
    residuals = (y - fitted) / y
    n = len(x)
    rng = np.random.default_rng(seed)
    draws = residuals[rng.integers(0, n, size=(bootstrap, n))] * np.sqrt(n / (n - 2))
    y_boot = fitted * (1.0 + draws)
    y_boot = np.where(y_boot > 0, y_boot, fitted)
    boot = fit_power_laws(x, y_boot, offset=False)
    return np.percentile(boot["alpha"][boot["success"]], [2.5, 97.5])


def now_ci(x: np.ndarray, y: np.ndarray, *, bootstrap: int, seed: int) -> np.ndarray:
    """95% CI of α of the pure power law by the package's ``fit_power_law``."""
    ci = fit_power_law(x, y, offset=False, bootstrap=bootstrap, seed=seed).alpha_ci
    return np.array(ci if ci is not None else (np.nan, np.nan))


def coverage_study(replicates: int, bootstrap: int) -> None:
    alpha, c = 0.083, 3.0 * 1.9e7**0.083  # the paper's α_N; L = 3 nats at the smallest model
    print(
        f"coverage of the nominal 95% bootstrap CI of alpha, pure power law (log-log fit), "
        f"log-normal noise; {replicates:,} seeded curves per cell, {bootstrap} bootstrap "
        f"replicates each; N log-spaced over 1.9e7 … 6.4e9"
    )
    band = 3 * np.sqrt(0.95 * 0.05 / replicates)
    print(f"binomial 3-sd band around 0.95: [{0.95 - band:.3f}, {0.95 + band:.3f}]")
    print(
        "ideal: P(|t_(P-2)| < 1.96), the coverage of a percentile residual bootstrap as B → ∞ "
        "(a z interval with estimated sigma)"
    )
    print(
        f"{'P':>3} {'sigma':>6} {'ideal':>6} {'before':>7} {'now':>7} "
        f"{'width before/now':>17} {'s':>5}"
    )
    for points in (7, 20, 60):
        x = np.geomspace(1.9e7, 6.4e9, points)
        ideal = 2 * stats.t.cdf(stats.norm.ppf(0.975), points - 2) - 1
        for sigma in (0.1, 0.3, 1.0):
            rng = np.random.default_rng(points * 1000 + int(sigma * 100))
            ys = c * x**-alpha * np.exp(rng.normal(0.0, sigma, (replicates, points)))
            t = time.perf_counter()
            cis = {
                name: np.array([ci(x, y, bootstrap=bootstrap, seed=i) for i, y in enumerate(ys)])
                for name, ci in (("before", before_issue12_ci), ("now", now_ci))
            }
            hit = {k: ((v[:, 0] <= alpha) & (alpha <= v[:, 1])).mean() for k, v in cis.items()}
            width = {k: np.median(v[:, 1] - v[:, 0]) for k, v in cis.items()}
            print(
                f"{points:3d} {sigma:6.2f} {ideal:6.3f} {hit['before']:7.3f} {hit['now']:7.3f} "
                f"{width['before'] / width['now']:17.2f} {time.perf_counter() - t:5.1f}"
            )


def run(curves: int, loop: int, threads: int) -> None:
    rng = np.random.default_rng(0)
    x = np.array([1.9e7, 8.5e7, 3.0e8, 8.1e8, 1.2e9, 2.5e9, 6.4e9])  # Pythia non-embedding N
    alpha = rng.uniform(0.05, 0.8, curves)
    c0 = rng.uniform(0.0, 2.0, curves)
    c1 = rng.uniform(1.0, 50.0, curves) * x[0] ** alpha  # loss scale ~1-50 at x[0]
    y = (c0[:, None] + c1[:, None] * x[None] ** -alpha[:, None]) * np.exp(
        rng.normal(0, 0.02, (curves, x.size))
    )
    sub = slice(0, loop)
    fit_power_laws(x, y[:100])  # warm-up (imports, first-call allocations), as below
    loglog_ols(x, y[:100])
    curve_fit_loop(x, y[:10])
    curve_fit_loop(x, y[:10], bounded=False)

    t = time.perf_counter()
    vec_sub = fit_power_laws(x, y[sub])
    t_vec_sub = time.perf_counter() - t
    t = time.perf_counter()
    vec_all = fit_power_laws(x, y)
    t_vec_all = time.perf_counter() - t
    t = time.perf_counter()
    ols_sub = loglog_ols(x, y[sub])
    t_ols_sub = time.perf_counter() - t
    t = time.perf_counter()
    ols_all = loglog_ols(x, y)
    t_ols_all = time.perf_counter() - t
    t = time.perf_counter()
    loop_alpha = curve_fit_loop(x, y[sub])
    t_loop = time.perf_counter() - t
    t = time.perf_counter()
    lm_alpha = curve_fit_loop(x, y[sub], bounded=False)
    t_lm = time.perf_counter() - t

    pools = sorted({f"{p['internal_api']}={p['num_threads']}" for p in threadpool_info()})
    print(
        f"{curves:,} curves of {x.size} points; curve_fit loop on {loop:,}; "
        f"threads {threads} ({', '.join(pools) or 'no BLAS/OpenMP pool found'})"
    )
    per_loop = t_loop / loop
    for name, t_sub, t_all in (
        ("fit_power_laws", t_vec_sub, t_vec_all),
        ("log-log OLS", t_ols_sub, t_ols_all),
    ):
        print(
            f"{name:15s} {t_sub:8.3f} s for {loop:,} ({t_sub / loop * 1e3:.4f} ms/curve), "
            f"{t_all:8.3f} s for {curves:,} ({t_all / curves * 1e3:.4f} ms/curve); "
            f"vs curve_fit per curve: {per_loop / (t_sub / loop):.0f}x on {loop:,}, "
            f"{per_loop / (t_all / curves):.0f}x on all"
        )
    print(f"curve_fit loop  {t_loop:8.3f} s for {loop:,} ({per_loop * 1e3:.4f} ms/curve)")
    print(
        f"curve_fit without bounds (scipy's lm; c0 may go negative, so not the same fit): "
        f"{t_lm:.3f} s for {loop:,} ({t_lm / loop * 1e3:.4f} ms/curve); fit_power_laws is "
        f"{(t_lm / loop) / (t_vec_sub / loop):.0f}x faster per curve on {loop:,}, "
        f"{(t_lm / loop) / (t_vec_all / curves):.0f}x on all"
    )
    print(
        f"success: fit_power_laws {vec_sub['success'].mean():.1%} of the subset, "
        f"{vec_all['success'].mean():.1%} of all; curve_fit {np.isfinite(loop_alpha).mean():.1%} "
        f"of the subset ({np.isfinite(lm_alpha).mean():.1%} without bounds); "
        f"log-log OLS has no failure mode (closed form)"
    )
    err_vec = np.abs(vec_all["alpha"] - alpha)[vec_all["success"]]
    print(
        f"|alpha - planted|, median over successful fits: "
        f"fit_power_laws {np.median(np.abs(vec_sub['alpha'] - alpha[sub])[vec_sub['success']]):.4f}"
        f" on the subset, {np.median(err_vec):.4f} on all; "
        f"curve_fit {np.nanmedian(np.abs(loop_alpha - alpha[sub])):.4f} "
        f"({np.nanmedian(np.abs(lm_alpha - alpha[sub])):.4f} without bounds); "
        f"log-log OLS {np.median(np.abs(ols_sub - alpha[sub])):.4f} on the subset, "
        f"{np.median(np.abs(ols_all - alpha)):.4f} on all (no offset: biased low where c0 > 0)"
    )
    ok = vec_sub["success"] & np.isfinite(loop_alpha)
    print(
        f"fit_power_laws vs curve_fit where both succeed: median |alpha difference| "
        f"{np.median(np.abs(vec_sub['alpha'] - loop_alpha)[ok]):.2e}"
    )


if __name__ == "__main__":
    main()
