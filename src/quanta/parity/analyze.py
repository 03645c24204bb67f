"""Scaling analyses of a parity run or sweep: L vs N / D / S with fitted exponents next to the
quantization model's predictions, quanta learned vs scale, convergence time vs frequency,
per-subtask heat maps and, across an α-sweep, α_N / α_D / α_S vs α (PAPER.md §1–2).

Which panels a source yields follows from what varies in it:

* **N** (parameters): members of different widths; loss = final mixture test loss, averaged over
  seeds at each parameter count. One fit per setting of the other varied axes.
* **D** (data): runs with fixed training sets (``n_train > 0``) of ≥ 3 sizes; loss = test loss at
  the step of minimum validation loss (early stopping; PAPER.md §2), one fit per width.
* **S** (steps): the largest online member's mixture test curve (seed-averaged).

Every fit starts at the first scale where (on average) a subtask is learned — the regime the
theory speaks about; below it the loss sits at chance (ln 2) or above it (small fixed datasets
are memorized). Excluded points are still stored and drawn, faded.

Two thresholds, as in the paper (PAPER.md §2), each with its unit: a subtask counts as
*learned* (learned-count panels) when its test loss is below 0.1 **nats** (the runs'
``learned_threshold``), and it has *converged* (convergence time, the step at which it is first
learned) when its test loss is below 0.1 **bits** = 0.1·ln 2 ≈ 0.0693 nats. Both are recorded,
value, unit and nats, under ``thresholds`` in ``analysis.json``. Fits are
:func:`quanta.scaling.fit_power_law`: ``power`` = the paper's pure power law (log-log least
squares) with bootstrap CIs, shown in figures; ``offset`` = with an irreducible-loss term, listed
in the tables for comparison. Slopes (learned count vs scale, convergence step vs p_i) are
log-log least squares (:func:`scipy.stats.linregress`) with t-based 95% intervals.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from quanta._validation import QuantaInputError, check_choice, check_int, check_real
from quanta.config import config_fields
from quanta.parity.config import ParityConfig
from quanta.parity.task import zipf_probs
from quanta.parity.train import MIXTURE
from quanta.scaling import fit_power_law
from quanta.store import writes_outputs
from quanta.theory import predicted_exponents

__all__ = ["Analysis", "analyze", "load_source", "write_analysis"]

_OWNER = "quanta parity analyze"
#: Config keys that never define a group (seeds are averaged; runtime keys don't matter).
_AVERAGED = ("seed",)
_SCALE_UNITS = {"N": "parameters", "D": "training samples", "S": "optimizer steps"}


@dataclass
class Analysis:
    """Everything :func:`analyze` computed; :func:`write_analysis` stores it.

    Tables (tidy, one row per …):

    ``exponents``: fitted loss exponent (axis N/D/S × group × fit kind) with CI and prediction;
    ``slopes``: log-log slope (learned count vs N/D/S, convergence step vs p_i) with CI and
    prediction; ``points``: every plotted point; ``subtasks``: per-subtask loss across scale
    (heat maps) and convergence steps.
    """

    source: Path
    experiment: str
    threshold_nats: float
    exponents: pd.DataFrame
    slopes: pd.DataFrame
    points: pd.DataFrame
    subtasks: pd.DataFrame
    settings: dict[str, Any] = field(default_factory=dict)
    #: ``{"learned": …, "convergence": …}``, each ``{"value", "unit", "nats", "label"}``.
    thresholds: dict[str, dict[str, Any]] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """JSON-ready numbers: settings, exponents and slopes."""
        return {
            "source": str(self.source),
            "experiment": self.experiment,
            "threshold_nats": self.threshold_nats,
            "thresholds": self.thresholds,
            "settings": self.settings,
            "exponents": _records(self.exponents),
            "slopes": _records(self.slopes),
        }


def _records(df: pd.DataFrame) -> list[dict[str, Any]]:
    return json.loads(df.to_json(orient="records", double_precision=10))


# --------------------------------------------------------------------------- loading


def load_source(path: str | Path) -> tuple[str, pd.DataFrame, pd.DataFrame]:
    """Read a parity run or sweep directory: ``(experiment, runs, curves)``.

    ``runs`` has one row per run (``run`` key and every config value); ``curves`` is the tidy
    curves table of all runs with a ``run`` column. A single run's experiment is ``"run"``.
    """
    from quanta.store import read_result

    path = Path(path)
    manifest = read_result(
        path, ("parity.train", "parity.sweep"), "'quanta parity train' or 'quanta parity sweep'"
    )
    kind = manifest["kind"]
    if kind == "parity.train":
        config = manifest["config"]
        runs = pd.DataFrame([{"run": path.name, **_scalars(config)}])
        curves = pd.read_parquet(path / "curves.parquet").assign(run=path.name)
        curves = curves.reset_index(drop=True)
        return "run", runs, curves
    rows = []
    for run in sorted({p.name for p in (path / "runs").iterdir() if p.is_dir()}):
        config = json.loads((path / "runs" / run / "manifest.json").read_text())["config"]
        rows.append({"run": run, **_scalars(config)})
    results = pd.read_parquet(path / "results.parquet")
    runs = pd.DataFrame(rows)
    runs = runs[runs["run"].isin(results["run"].unique())].reset_index(drop=True)
    curves = results[[c for c in results.columns if c not in runs.columns or c == "run"]]
    curves = curves.rename(columns={"init_seed": "seed"}).reset_index(drop=True)
    return str(manifest["config"].get("experiment", "custom")), runs, curves


def _scalars(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if not isinstance(v, list | tuple | dict)}


# --------------------------------------------------------------------------- per-member table


def member_table(runs: pd.DataFrame, curves: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """One row per run × member: final test loss, learned count, and (fixed-D runs) the
    early-stopping step with the test loss and learned count there."""
    test = curves[curves["split"] == "test"]
    last_step = test.groupby("run")["step"].transform("max")
    final = test[test["step"] == last_step]
    keys = ["run", "member"]
    mix = final[final["task"] == MIXTURE].set_index(keys)
    out = mix[["width", "seed", "n_params", "step"]].rename(
        columns={"seed": "init_seed", "step": "final_step"}
    )
    out["final_loss"] = mix["loss_nats"]
    out["n_learned"] = _learned(final, threshold).reindex(out.index).fillna(0).astype(int)
    val = curves[(curves["split"] == "val") & (curves["task"] == MIXTURE)]
    if not val.empty:
        best = val.loc[val.groupby(keys)["loss_nats"].idxmin(), [*keys, "step"]]
        best = best.rename(columns={"step": "early_stop_step"})
        at_best = test.merge(best, on=keys)
        at_best = at_best[at_best["step"] == at_best["early_stop_step"]]
        out["early_stop_step"] = best.set_index(keys)["early_stop_step"]
        out["early_stop_loss"] = at_best[at_best["task"] == MIXTURE].set_index(keys)["loss_nats"]
        out["n_learned_early"] = _learned(at_best, threshold).reindex(out.index).fillna(0)
    return out.reset_index().merge(runs, on="run")


def _learned(rows: pd.DataFrame, threshold: float) -> pd.Series:
    tasks = rows[rows["task"] != MIXTURE]
    return (tasks["loss_nats"] < threshold).groupby([tasks["run"], tasks["member"]]).sum()


# --------------------------------------------------------------------------- analysis


def analyze(
    path: str | Path,
    *,
    threshold: float | None = None,
    units: str = "nats",
    convergence_threshold: float = 0.1,
    convergence_units: str = "bits",
    bootstrap: int = 1000,
    seed: int = 0,
) -> Analysis:
    """Analyze a parity run or sweep directory (see the module docstring for what is fitted).

    Parameters
    ----------
    threshold : float, optional
        A subtask is learned (learned-count panels) when its test loss is below this (in
        ``units``). Default: the runs' ``learned_threshold`` (0.1 nats unless configured; the
        paper's number-learned figure).
    units : {"nats", "bits"}
        Units of ``threshold``.
    convergence_threshold : float
        A subtask's convergence step is the first evaluated step at which its test loss is
        below this (in ``convergence_units``). Default 0.1 bits, the paper's convergence-time
        figure (= 0.1·ln 2 ≈ 0.0693 nats).
    convergence_units : {"bits", "nats"}
        Units of ``convergence_threshold``.
    bootstrap : int
        Bootstrap replicates for exponent confidence intervals.
    seed : int
        Seed of the bootstrap.
    """
    units = check_choice(units, "units", _OWNER, ["nats", "bits"])
    convergence_units = check_choice(
        convergence_units, "convergence_units", _OWNER, ["bits", "nats"]
    )
    convergence_threshold = check_real(
        convergence_threshold, "convergence_threshold", _OWNER, low=0.0, low_open=True
    )
    bootstrap = check_int(bootstrap, "bootstrap", _OWNER, low=0)
    seed = check_int(seed, "seed", _OWNER, low=0)
    experiment, runs, curves = load_source(path)
    if threshold is None:
        threshold, units = float(runs["learned_threshold"].iloc[0]), "nats"
    else:
        threshold = check_real(threshold, "threshold", _OWNER, low=0.0, low_open=True)
    thresholds = {
        "learned": _threshold(threshold, units),
        "convergence": _threshold(convergence_threshold, convergence_units),
    }
    threshold_nats = thresholds["learned"]["nats"]
    members = member_table(runs, curves, threshold_nats)
    runtime = {n for n, (_, f) in config_fields(ParityConfig).items() if f.metadata.get("runtime")}
    varied = [
        c
        for c in runs.columns
        if c not in ("run", *_AVERAGED, *runtime) and runs[c].nunique(dropna=False) > 1
    ]
    fit = _Fitter(bootstrap, seed)
    points: list[pd.DataFrame] = []
    subtasks: list[pd.DataFrame] = []
    _scale_n(members, curves, varied, fit, points, subtasks)
    _scale_d(members, curves, varied, fit, points, subtasks)
    conv_nats = thresholds["convergence"]["nats"]
    _scale_s(members, curves, runs, varied, fit, points, subtasks, threshold_nats, conv_nats)
    return Analysis(
        source=Path(path),
        experiment=experiment,
        threshold_nats=threshold_nats,
        exponents=pd.DataFrame(fit.exponents, columns=_EXPONENT_COLUMNS),
        slopes=pd.DataFrame(fit.slopes, columns=_SLOPE_COLUMNS),
        points=pd.concat(points, ignore_index=True) if points else pd.DataFrame(),
        subtasks=pd.concat(subtasks, ignore_index=True) if subtasks else pd.DataFrame(),
        settings={
            "bootstrap": bootstrap,
            "seed": seed,
            "varied": varied,
            "n_runs": len(runs),
            "n_members": len(members),
        },
        thresholds=thresholds,
    )


def _threshold(value: float, unit: str) -> dict[str, Any]:
    """A loss threshold as given, in nats (1 bit = ln 2 nats) and as figures label it."""
    nats = value * (np.log(2.0) if unit == "bits" else 1.0)
    return {"value": value, "unit": unit, "nats": nats, "label": f"loss < {value:g} {unit}"}


_EXPONENT_COLUMNS = [
    "axis",
    "group",
    "alpha",
    "fit",
    "exponent",
    "ci_low",
    "ci_high",
    "c0",
    "c1",
    "predicted",
    "success",
    "message",
    "n_points",
    "x_min",
    "x_max",
]
_SLOPE_COLUMNS = [
    "quantity",
    "group",
    "alpha",
    "slope",
    "ci_low",
    "ci_high",
    "predicted",
    "n_points",
    "n_excluded",
]


class _Fitter:
    """Collects exponent and slope rows."""

    def __init__(self, bootstrap: int, seed: int) -> None:
        self.bootstrap, self.seed = bootstrap, seed
        self.exponents: list[dict[str, Any]] = []
        self.slopes: list[dict[str, Any]] = []

    def loss(self, axis: str, group: str, alpha: float, x: np.ndarray, y: np.ndarray) -> None:
        predicted = predicted_exponents(alpha)[axis] if alpha > 0 else np.nan
        for kind, offset in (("power", False), ("offset", True)):
            base = {
                "axis": axis,
                "group": group,
                "alpha": alpha,
                "fit": kind,
                "predicted": predicted,
                "n_points": len(x),
                "x_min": float(x.min()) if len(x) else np.nan,
                "x_max": float(x.max()) if len(x) else np.nan,
            }
            need = 3 if offset else 2
            if len(x) < need or not np.all(y > 0):
                why = (
                    "loss is 0 at some points"
                    if len(x) >= need
                    else f"{len(x)} points where a subtask is learned; a fit needs {need}"
                )
                self.exponents.append({**base, "success": False, "message": why})
                continue
            f = fit_power_law(
                x, y, offset=offset, bootstrap=self.bootstrap if not offset else 0, seed=self.seed
            )
            ci = f.alpha_ci or (np.nan, np.nan)
            self.exponents.append(
                {
                    **base,
                    "exponent": f.alpha if f.success else np.nan,
                    "ci_low": ci[0],
                    "ci_high": ci[1],
                    "c0": f.c0,
                    "c1": f.c1,
                    "success": f.success,
                    "message": f.message,
                }
            )

    def slope(
        self,
        quantity: str,
        group: str,
        alpha: float,
        x: np.ndarray,
        y: np.ndarray,
        predicted: float,
    ) -> dict[str, Any]:
        from scipy import stats

        keep = (x > 0) & (y > 0)
        row: dict[str, Any] = {
            "quantity": quantity,
            "group": group,
            "alpha": alpha,
            "predicted": predicted,
            "n_points": int(keep.sum()),
            "n_excluded": int((~keep).sum()),
        }
        lx, ly = np.log(x[keep]), np.log(y[keep])
        if keep.sum() >= 3 and np.ptp(lx) > 0:
            reg = stats.linregress(lx, ly)
            half = stats.t.ppf(0.975, keep.sum() - 2) * reg.stderr
            row |= {"slope": reg.slope, "ci_low": reg.slope - half, "ci_high": reg.slope + half}
        else:
            row |= {"slope": np.nan, "ci_low": np.nan, "ci_high": np.nan}
        self.slopes.append(row)
        return row


def _groups(df: pd.DataFrame, ctx: list[str]) -> list[tuple[str, pd.DataFrame]]:
    """Split by the context columns; label each group like ``alpha=0.2, width=64``."""
    if not ctx:
        return [("all", df)]
    out = []
    for values, part in df.groupby(ctx, sort=True):
        values = values if isinstance(values, tuple) else (values,)
        out.append((", ".join(f"{k}={_fmt(v)}" for k, v in zip(ctx, values, strict=True)), part))
    return out


def _fmt(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def _alpha(df: pd.DataFrame) -> float:
    return 0.0 if bool(df["uniform"].iloc[0]) else float(df["alpha"].iloc[0])


def _scale_n(
    members: pd.DataFrame,
    curves: pd.DataFrame,
    varied: list[str],
    fit: _Fitter,
    points: list[pd.DataFrame],
    subtasks: list[pd.DataFrame],
) -> None:
    for group, part in _groups(members, varied):
        by_n = part.groupby("n_params").agg(
            loss=("final_loss", "mean"), n_learned=("n_learned", "mean"), width=("width", "first")
        )
        if len(by_n) < 2:
            continue
        alpha = _alpha(part)
        _fit_axis("N", group, alpha, by_n, fit, points)
        first = part[part["run"] == part["run"].iloc[0]]
        first = first[first["init_seed"] == first["init_seed"].min()]
        rows = curves.merge(first[["run", "member", "final_step"]], on=["run", "member"])
        rows = rows[(rows["split"] == "test") & (rows["step"] == rows["final_step"])]
        subtasks.append(_heat("N", group, alpha, rows, "n_params"))


def _scale_d(
    members: pd.DataFrame,
    curves: pd.DataFrame,
    varied: list[str],
    fit: _Fitter,
    points: list[pd.DataFrame],
    subtasks: list[pd.DataFrame],
) -> None:
    fixed = members[members["n_train"] > 0]
    if fixed.empty or fixed["n_train"].nunique() < 2:
        return
    ctx = [c for c in varied if c != "n_train"] + ["width"]
    for group, part in _groups(fixed, ctx):
        by_d = part.groupby("n_train").agg(
            loss=("early_stop_loss", "mean"), n_learned=("n_learned_early", "mean")
        )
        if len(by_d) < 2:
            continue
        alpha = _alpha(part)
        _fit_axis("D", group, alpha, by_d, fit, points)
        first = part.sort_values(["n_train", "seed", "init_seed"]).drop_duplicates("n_train")
        rows = curves.merge(
            first[["run", "member", "n_train", "early_stop_step"]], on=["run", "member"]
        )
        rows = rows[(rows["split"] == "test") & (rows["step"] == rows["early_stop_step"])]
        subtasks.append(_heat("D", group, alpha, rows, "n_train"))


def _scale_s(
    members: pd.DataFrame,
    curves: pd.DataFrame,
    runs: pd.DataFrame,
    varied: list[str],
    fit: _Fitter,
    points: list[pd.DataFrame],
    subtasks: list[pd.DataFrame],
    threshold: float,
    conv_threshold: float,
) -> None:
    online = members[members["n_train"] == 0]
    if online.empty:
        return
    ctx = [c for c in varied if c != "steps"]
    for group, part in _groups(online, ctx):
        part = part[(part["steps"] == part["steps"].max()) & (part["width"] == part["width"].max())]
        alpha = _alpha(part)
        rows = curves.merge(part[["run", "member"]], on=["run", "member"])
        rows = rows[(rows["split"] == "test") & (rows["step"] > 0)]
        tasks = rows[rows["task"] != MIXTURE].assign(learned=lambda d: d["loss_nats"] < threshold)
        n_learned = tasks.groupby(["run", "member", "step"])["learned"].sum().groupby("step").mean()
        mix = rows[rows["task"] == MIXTURE].groupby("step")["loss_nats"].mean()
        by_s = pd.DataFrame({"loss": mix, "n_learned": n_learned.reindex(mix.index)})
        _fit_axis("S", group, alpha, by_s, fit, points)
        _convergence(group, alpha, tasks, runs, fit, subtasks, conv_threshold)
        one = part[(part["run"] == part["run"].iloc[0])].head(1)
        subtasks.append(_heat("S", group, alpha, rows.merge(one[["run", "member"]]), "step"))


def _convergence(
    group: str,
    alpha: float,
    tasks: pd.DataFrame,
    runs: pd.DataFrame,
    fit: _Fitter,
    subtasks: list[pd.DataFrame],
    threshold: float,
) -> None:
    """First step at which each subtask's test loss is below ``threshold`` (nats), vs its p_i."""
    learned = tasks[tasks["loss_nats"] < threshold]
    first = learned.groupby(["run", "member", "task"])["step"].min().rename("converged_step")
    all_tasks = tasks.drop_duplicates(["run", "member", "task"])[["run", "member", "task"]]
    conv = all_tasks.merge(first.reset_index(), how="left", on=["run", "member", "task"])
    conv["p"] = _task_probs(conv, runs)
    fit.slope(
        "convergence_step_vs_p",
        group,
        alpha,
        conv["p"].to_numpy(),
        conv["converged_step"].fillna(0).to_numpy(dtype=np.float64),
        -1.0,
    )
    subtasks.append(
        conv.assign(panel="convergence", group=group, alpha=alpha, scale=np.nan, loss=np.nan)[
            ["panel", "group", "alpha", "task", "p", "scale", "loss", "converged_step"]
        ]
    )


def _fit_axis(
    axis: str,
    group: str,
    alpha: float,
    table: pd.DataFrame,
    fit: _Fitter,
    points: list[pd.DataFrame],
) -> None:
    """Fit loss vs scale (from the first learned subtask on) and learned count vs scale;
    ``table`` is indexed by the scale with columns ``loss`` and ``n_learned``."""
    x = table.index.to_numpy(dtype=np.float64)
    loss, n_learned = table["loss"].to_numpy(), table["n_learned"].to_numpy()
    start = _fit_start(x, n_learned)
    keep = x >= start
    fit.loss(axis, group, alpha, x[keep], loss[keep])
    theory = 1.0 if axis == "N" else 1.0 / (alpha + 1.0)  # n ∝ N, n ∝ D^(1/(α+1))
    fit.slope(f"learned_vs_{axis}", group, alpha, x, n_learned, theory)
    points.append(
        pd.DataFrame(
            {
                "axis": axis,
                "unit": _SCALE_UNITS[axis],
                "group": group,
                "alpha": alpha,
                "x": x,
                "loss": loss,
                "n_learned": n_learned,
                "in_fit": keep,
            }
        )
    )


def _fit_start(x: np.ndarray, n_learned: np.ndarray) -> float:
    """The first scale at which (on average) a subtask is learned: fits start there. Before it
    the loss sits near ln 2 (or above, when a small fixed dataset is memorized) and the theory
    predicts no power law. ``inf`` when nothing is ever learned."""
    learned = x[n_learned >= 1]
    return float(learned.min()) if len(learned) else np.inf


def _task_probs(df: pd.DataFrame, runs: pd.DataFrame) -> np.ndarray:
    """p_i of every row's (run, task)."""
    out = np.empty(len(df))
    info = {str(r["run"]): r for r in runs.to_dict("records")}
    for run, idx in df.groupby("run").indices.items():
        r = info[str(run)]
        n = int(r["n_tasks"])
        probs = (
            np.full(n, 1.0 / n)
            if bool(r["uniform"])
            else zipf_probs(n, float(r["alpha"]), offset=float(r["offset"]))
        )
        out[idx] = probs[df["task"].to_numpy()[idx]]
    return out


def _heat(axis: str, group: str, alpha: float, rows: pd.DataFrame, scale: str) -> pd.DataFrame:
    """Per-subtask test loss across scale (one member per scale value)."""
    tasks = rows[rows["task"] != MIXTURE]
    return pd.DataFrame(
        {
            "panel": f"heat_{axis}",
            "group": group,
            "alpha": alpha,
            "task": tasks["task"].to_numpy(),
            "p": np.nan,
            "scale": tasks[scale].to_numpy(dtype=np.float64),
            "loss": tasks["loss_nats"].to_numpy(),
            "converged_step": np.nan,
        }
    )


# --------------------------------------------------------------------------- output


@writes_outputs(lambda a: a["out"] if a["out"] is not None else a["analysis"].source / "analysis")
def write_analysis(analysis: Analysis, out: str | Path | None = None) -> list[Path]:
    """Write tables (JSON + Parquet) and PNG figures to ``out`` (default ``SOURCE/analysis``);
    returns the written paths. Files are replaced atomically; nothing else in ``out`` is touched.
    """
    from quanta import plots
    from quanta.store import write_json, write_parquet

    out = Path(out) if out is not None else analysis.source / "analysis"
    if out.exists() and not out.is_dir():
        raise QuantaInputError(f"Output path '{out}' exists and is not a directory.")
    written = []
    write_json(out / "analysis.json", analysis.summary())
    written.append(out / "analysis.json")
    for name in ("exponents", "slopes", "points", "subtasks"):
        df = getattr(analysis, name)
        if not df.empty:
            write_parquet(out / f"{name}.parquet", df)
            written.append(out / f"{name}.parquet")
    figures = plots.analysis_figures(analysis)
    for name, fig in figures.items():
        written.append(plots.save_figure(fig, out / f"{name}.png"))
    return written
