"""Size beyond capacity: the "domino" measure (issue 20, part 4).

In the quantization model, width only buys capacity: a subtask's learning time is set by the
optimizer and its frequency, ``t_i ∝ 1/p_i`` (it has been seen often enough), whatever the
width, once the net is wide enough to hold it. Two departures would show that size acts beyond
capacity:

* **Domino**: subtask ``i`` waits until the more frequent ones are done — the learned step
  falls faster than ``1/p_i`` (log-log slope of ``t_i`` vs ``p_i`` below -1) and pairs are
  rarely learned out of frequency order.
* **Width at fixed frequency**: the same subtask is learned at a different step by a wider net
  (slope of ``log t_i`` vs ``log width`` over the widths that learn it: 0 if width is only
  capacity, negative if wider nets learn faster).

Per source (``quanta parity train`` runs and ``parity sweep`` directories, e.g. toy/params and
toy/alpha) × run × width: the learned count at matched steps (10 %, 30 %, 100 % of training)
and at the end, the slope of ``t_i`` vs ``p_i``, the out-of-order share; per run the width
slope; and, for α-sweeps, α_N next to α (from the sweep's ``analysis/analysis.json``, or fitted
here without bootstrap) — the α-sweep deviations the measure is read against.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from quanta._validation import QuantaInputError, check_real
from quanta.lock import locked
from quanta.parity.orders import analysis_run, learned_steps, out_of_order
from quanta.parity.task import zipf_probs

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["KIND", "MATCHED", "analyze_domino", "domino_figure", "run_domino", "step_slopes"]

KIND = "parity.domino"
_OWNER = "quanta parity domino"
#: Fractions of the run's steps at which learned counts are compared across widths.
MATCHED = (0.1, 0.3, 1.0)


def step_slopes(steps: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """Log-log slope of learned step vs ``p`` (learned subtasks, step > 0) with its 95% CI.

    Pure optimization predicts -1; below -1 the rarer subtasks wait (domino).

    >>> p = 1.0 / np.arange(1, 9)
    >>> round(step_slopes(5.0 / p, p)["slope"], 6)
    -1.0
    """
    from scipy import stats

    steps, p = np.asarray(steps, dtype=np.float64), np.asarray(p, dtype=np.float64)
    ok = ~np.isnan(steps) & (steps > 0)
    if ok.sum() < 3 or np.ptp(np.log(p[ok])) == 0:
        return {"slope": np.nan, "ci_low": np.nan, "ci_high": np.nan, "n_points": int(ok.sum())}
    reg = stats.linregress(np.log(p[ok]), np.log(steps[ok]))
    half = float(stats.t.ppf(0.975, ok.sum() - 2) * reg.stderr) if ok.sum() > 2 else np.nan
    return {
        "slope": float(reg.slope),
        "ci_low": float(reg.slope) - half,
        "ci_high": float(reg.slope) + half,
        "n_points": int(ok.sum()),
    }


def _width_slope(table: pd.DataFrame) -> dict[str, float]:
    """Per subtask learned (step > 0) at >= 2 widths: slope of log step vs log width; the
    median over subtasks and the share below 0."""
    slopes = []
    for _, part in table.dropna(subset=["learned_step"]).groupby("task"):
        part = part[part["learned_step"] > 0]
        if part["width"].nunique() >= 2:
            fit = np.polyfit(np.log(part["width"]), np.log(part["learned_step"]), 1)
            slopes.append(float(fit[0]))
    if not slopes:
        return {"width_slope": np.nan, "width_slope_negative": np.nan, "width_slope_tasks": 0}
    arr = np.array(slopes)
    return {
        "width_slope": float(np.median(arr)),
        "width_slope_negative": float((arr < 0).mean()),
        "width_slope_tasks": len(arr),
    }


def _probs(run: dict[str, Any]) -> np.ndarray:
    n = int(run["n_tasks"])
    if bool(run["uniform"]):
        return np.full(n, 1.0 / n)
    return zipf_probs(n, float(run["alpha"]), offset=float(run["offset"]))


def _source_rows(
    source: Path, threshold: float
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Per-width rows and per-run rows of one source."""
    from quanta.parity.analyze import load_source

    _, runs, curves = load_source(source)
    width_rows, run_rows = [], []
    for record in runs.to_dict("records"):
        run = {str(k): v for k, v in record.items()}
        part = curves[(curves["run"] == run["run"])]
        part = part[part["seed"] == part["seed"].min()]
        steps = learned_steps(part, threshold)
        p = _probs(run)
        alpha = 0.0 if bool(run["uniform"]) else float(run["alpha"])
        key = {"source": str(source), "run": str(run["run"]), "alpha": alpha}
        evals = np.sort(part.loc[part["split"] == "test", "step"].unique())
        for w, table in steps.groupby("width"):
            table = table.sort_values("task")
            t = table["learned_step"].to_numpy()
            row = {**key, "width": int(str(w)), "n_learned": int(table["learned"].sum())}
            for f in MATCHED:
                at = evals[np.argmin(np.abs(evals - f * evals.max()))]
                row[f"learned_at_{f:g}"] = int((t <= at).sum())
            row |= {f"t_vs_p_{k}": v for k, v in step_slopes(t, p).items()}
            row["out_of_order"] = out_of_order(t, p)
            width_rows.append(row)
        run_rows.append({**key, **_width_slope(steps)})
    return width_rows, run_rows


def _alpha_n(source: Path) -> list[dict[str, Any]]:
    """α_N per α of an α-sweep (power-law fit of L vs N), next to α; empty otherwise."""
    path = source / "analysis" / "analysis.json"
    if path.is_file():
        exps = pd.DataFrame(json.loads(path.read_text())["exponents"])
    else:
        from quanta.parity.analyze import analyze

        exps = analyze(source, bootstrap=0).exponents
    if exps.empty:
        return []
    rows = exps[(exps["axis"] == "N") & (exps["fit"] == "power") & exps["success"].astype(bool)]
    if rows["alpha"].nunique() < 2:
        return []
    out = rows.groupby("alpha")["exponent"].mean().reset_index()
    return [
        {"source": str(source), "alpha": float(a), "alpha_N": float(e), "deviation": float(e - a)}
        for a, e in out.itertuples(index=False)
    ]


def analyze_domino(sources: Sequence[str | Path], *, threshold: float = 0.1) -> dict[str, Any]:
    """The domino measure of every source (see the module docstring); JSON-ready.

    Returns ``settings``, ``per_width`` (source × run × width), ``per_run`` (width slopes),
    ``alpha`` (α_N vs α of the α-sweeps) and ``summary`` (medians per source and α).
    """
    threshold = check_real(threshold, "threshold", _OWNER, low=0.0, low_open=True)
    if not sources:
        raise QuantaInputError(f"{_OWNER} needs at least one parity run or sweep directory.")
    width_rows: list[dict[str, Any]] = []
    run_rows: list[dict[str, Any]] = []
    alpha_rows: list[dict[str, Any]] = []
    for source in map(Path, sources):
        w, r = _source_rows(source, threshold)
        width_rows += w
        run_rows += r
        alpha_rows += _alpha_n(source)
    per_width, per_run = pd.DataFrame(width_rows), pd.DataFrame(run_rows)
    summary = (
        per_width.groupby(["source", "alpha"])
        .agg(
            t_vs_p_slope=("t_vs_p_slope", "median"),
            out_of_order=("out_of_order", "median"),
            widths=("width", "nunique"),
        )
        .join(
            per_run.groupby(["source", "alpha"])[["width_slope", "width_slope_negative"]].median()
        )
        .reset_index()
    )
    return {
        "settings": {"sources": [str(s) for s in sources], "threshold_nats": threshold},
        "matched_fractions": list(MATCHED),
        "per_width": _records(per_width),
        "per_run": _records(per_run),
        "alpha": alpha_rows,
        "summary": _records(summary),
    }


def _records(df: pd.DataFrame) -> list[dict[str, Any]]:
    return list(json.loads(df.to_json(orient="records", double_precision=10)))


def domino_figure(result: dict[str, Any]) -> Figure:
    """Left: slope of learned step vs p_i per width (pure optimization: -1), one line per source
    and α. Right: learned count vs width at matched steps, the first source's first run."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.6), layout="constrained")
    left, right = fig.subplots(1, 2)
    rows = pd.DataFrame(result["per_width"])
    for (source, alpha), part in rows.groupby(["source", "alpha"]):
        med = part.groupby("width")["t_vs_p_slope"].median()
        left.plot(
            med.index, med.to_numpy(), "o-", ms=3, label=f"{Path(str(source)).name}, α={alpha:g}"
        )
    left.axhline(-1.0, color="k", lw=0.8, ls="--", label="t ∝ 1/p (optimization only)")
    # Log axes only over data: a run that learned too little has no slope to draw.
    left.set(xlabel="width", ylabel="slope of log t_i vs log p_i")
    if rows["t_vs_p_slope"].notna().any():
        left.set_xscale("log")
    left.set_title("does a subtask wait for the more frequent ones?", fontsize=9)
    left.legend(fontsize=6)
    first = rows[rows["run"] == rows["run"].iloc[0]]
    first = first[first["source"] == first["source"].iloc[0]]
    for f in result["matched_fractions"]:
        right.plot(
            first["width"], first[f"learned_at_{f:g}"], "o-", ms=3, label=f"{f:.0%} of steps"
        )
    right.set(xscale="log", xlabel="width", ylabel="subtasks learned")
    from matplotlib.ticker import NullFormatter

    for ax in (left, right):  # minor labels of a log axis overlap across 8…512
        ax.xaxis.set_minor_formatter(NullFormatter())
    right.set_title(f"matched steps: {Path(str(first['source'].iloc[0])).name}", fontsize=9)
    right.legend(fontsize=7)
    return fig


@locked("out")
def run_domino(
    sources: Sequence[str | Path], out: str | Path, *, threshold: float = 0.1
) -> dict[str, Any]:
    """:func:`analyze_domino` into the run directory ``out`` (kind ``parity.domino``):
    ``domino.json``, ``domino.parquet`` (per width) and ``domino.png``."""
    from quanta.store import portable_path, read_result

    out = Path(out)
    hashes = []
    for s in sources:
        manifest = read_result(
            s, ("parity.train", "parity.sweep"), "'quanta parity train' or 'quanta parity sweep'"
        )
        hashes.append(manifest["config_hash"])
    config = {
        "sources": [portable_path(Path(s).resolve(), out) for s in sources],
        "source_hashes": hashes,
        "threshold": threshold,
    }
    return analysis_run(
        out,
        KIND,
        config,
        "domino",
        lambda: analyze_domino(sources, threshold=threshold),
        domino_figure,
    )
