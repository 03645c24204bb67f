"""Is the toy engine's bf16 step safe to use? Its outcome against f32, over seeds.

Runs the cpu ``params`` sweep (the README's α_N experiment) twice, ``precision = f32`` and
``bf16``, each over ``--seeds`` replicates (``init_per_seed``: every replicate draws its own
subsets, data, test set and initialization), through ``run_sweep`` and ``analyze`` exactly as
``quanta parity sweep`` / ``analyze`` do, and prints, side by side:

* per width, the subtasks learned at the end (test loss < 0.1 nats), mean over seeds: f32 with
  its 95% t-interval over seeds (never narrower than ±1/n_seeds: the counts are integers, so
  one seed one subtask off is the resolution), and bf16, with whether it is inside;
* the fitted α_N (final loss vs N) and α_S (loss vs step, largest width) with their bootstrap
  95% CIs, and whether bf16's estimate is inside f32's CI;
* the training wall time of both.

Usage: python benchmarks/parity_bf16_check.py [--seeds 3] [--widths 4,8,...] [--steps N]
       [--out /tmp/bf16check] [--bootstrap 1000]
The defaults are the full cpu params sweep (14 widths, 10,000 steps); ``--widths``/``--steps``
run a reduced one. Exits 1 if any check fails.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from quanta.parity.analyze import analyze, load_source, member_table
from quanta.sweep import SweepSpec, run_sweep, sweep_presets


def run_both(args: argparse.Namespace) -> dict[str, tuple[Path, float]]:
    base = dict(sweep_presets()[("params", "cpu")].base)
    if args.widths:
        base["widths"] = tuple(int(w) for w in args.widths.split(","))
    if args.steps:
        base["steps"] = args.steps
    out: dict[str, tuple[Path, float]] = {}
    for precision in ("f32", "bf16"):
        spec = SweepSpec(
            {**base, "precision": precision},
            {"seed": list(range(args.seeds))},
            "params",
            init_per_seed=True,
        )
        path = Path(args.out) / precision
        t = time.perf_counter()
        run_sweep(spec, path, on_run_done=lambda d, n, p=precision: print(f"{p}: {d}/{n} runs"))
        out[precision] = (path, time.perf_counter() - t)
    return out


def learned_table(paths: dict[str, Path], seeds: int) -> pd.DataFrame:
    """Per width: f32 mean learned and its t-interval half-width, bf16 mean, inside?"""
    means: dict[str, pd.Series] = {}
    half = pd.Series(dtype=float)
    for precision, path in paths.items():
        _, runs, curves = load_source(path)
        members = member_table(runs, curves, float(runs["learned_threshold"].iloc[0]))
        per_width = members.groupby("width")["n_learned"]
        means[precision] = per_width.mean()
        if precision == "f32":
            t = stats.t.ppf(0.975, seeds - 1) if seeds > 1 else np.inf
            half = np.maximum(t * per_width.std(ddof=1).fillna(0) / np.sqrt(seeds), 1 / seeds)
    table = pd.DataFrame({"f32": means["f32"], "±": half, "bf16": means["bf16"]})
    table["inside"] = (table["bf16"] - table["f32"]).abs() <= table["±"] + 1e-9
    return table


def exponent_table(paths: dict[str, Path], bootstrap: int) -> pd.DataFrame:
    rows = []
    fits = {p: analyze(path, bootstrap=bootstrap, seed=0).exponents for p, path in paths.items()}
    for axis in ("N", "S"):
        f32, bf16 = (
            fits[p][(fits[p]["axis"] == axis) & (fits[p]["fit"] == "power")].iloc[0]
            for p in ("f32", "bf16")
        )
        rows.append(
            {
                "axis": axis,
                "f32": f32["exponent"],
                "f32 95% CI": f"[{f32['ci_low']:.3f}, {f32['ci_high']:.3f}]",
                "bf16": bf16["exponent"],
                "bf16 95% CI": f"[{bf16['ci_low']:.3f}, {bf16['ci_high']:.3f}]",
                "inside": bool(f32["ci_low"] <= bf16["exponent"] <= f32["ci_high"]),
            }
        )
    return pd.DataFrame(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--widths", default="", help="comma-separated; default the sweep's 14")
    ap.add_argument("--steps", type=int, default=0, help="default the sweep's 10,000")
    ap.add_argument("--out", default="/tmp/parity_bf16_check")
    ap.add_argument("--bootstrap", type=int, default=1000)
    args = ap.parse_args()
    done = run_both(args)
    paths = {p: path for p, (path, _) in done.items()}
    learned = learned_table(paths, args.seeds)
    exps = exponent_table(paths, args.bootstrap)
    pd.set_option("display.width", 120)
    print(
        f"seeds={args.seeds}  training wall time: "
        + ", ".join(f"{p} {s:.0f} s" for p, (_, s) in done.items())
    )
    print("subtasks learned at the end, mean over seeds (f32 ± its 95% t-interval):")
    print(learned.round(3).to_string())
    print("fitted exponents (bootstrap 95% CIs):")
    print(exps.round(4).to_string(index=False))
    ok = bool(learned["inside"].all() and exps["inside"].all())
    print("bf16 inside f32's intervals:", "yes" if ok else "NO")
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
