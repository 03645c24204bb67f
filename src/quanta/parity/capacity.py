"""Quanta of unequal capacity (issue 20, part 3): a parity run whose subtasks differ in cost
(``k_per_task``: subtask ``i`` is a ``k_i``-sparse parity, cost ``c_i = k_i`` hidden units) as
well as in frequency ``p_i``.

Two questions, both on one ``quanta parity train`` run of several widths:

* **Order**: does the learning order follow frequency or cost? Per member, every subtask's
  learned step against ``p_i`` and ``c_i`` (:func:`quanta.parity.orders.explain_order`), and
  the set learned at the end against the top subtasks by ``p_i``, by ``1/c_i`` and by
  ``p_i/c_i`` (the knapsack's greedy order).
* **L(N)**: the unlearned frequency mass at each width against the quantization model with
  unequal costs (:func:`quanta.theory.capacity_learned`: capacity ``B = width / C``, the set
  maximizing ``Σ p_i`` under ``Σ c_i <= B``) and with equal costs (every ``c_i`` the mean),
  each with its one constant ``C`` (hidden units per unit of cost) fitted by least squares.

The derivation is docs/HYPOTHESIS.md ("Quanta of unequal capacity").
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from quanta._validation import QuantaInputError, check_real
from quanta.lock import locked
from quanta.parity.orders import (
    analysis_run,
    explain_order,
    learned_steps,
    set_agreement,
)
from quanta.parity.train import MIXTURE
from quanta.theory import capacity_learned, random_cost_prefactor

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["KIND", "analyze_capacity", "capacity_figure", "run_capacity"]

KIND = "parity.capacity"
_OWNER = "quanta parity capacity"
# Hidden units per unit of cost searched when fitting C (log grid; wide enough that the best C
# never sits on an edge for widths 8…512 and k_i <= 10).
_C_GRID = np.geomspace(0.05, 200.0, 600)


def _task_arrays(config: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, Any]:
    from quanta.config import build_config
    from quanta.parity.config import ParityConfig

    cfg = build_config(ParityConfig, layers=[("the run's manifest", config)])
    return cfg.make_task().probs.numpy(), cfg.subtask_ks().astype(np.float64), cfg


def analyze_capacity(source: str | Path, *, threshold: float = 0.1) -> dict[str, Any]:
    """The order and L(N) analyses of one parity run (see the module docstring).

    Parameters
    ----------
    source : path
        A complete ``quanta parity train`` run with at least two widths.
    threshold : float
        Learned = test loss below this, nats (the learned step: the first evaluated step
        below it).

    Returns
    -------
    dict
        JSON-ready: ``settings``, ``order`` (the widest member), ``per_width`` (one record per
        width), ``prediction`` (fitted C, rmse and per-width predicted mass for the unequal and
        the equal-cost model, the closed form), ``subtasks`` (per subtask: p, cost, learned step
        at the widest width).
    """
    from quanta.parity.analyze import load_source

    threshold = check_real(threshold, "threshold", _OWNER, low=0.0, low_open=True)
    experiment, _, curves = load_source(source)
    if experiment != "run":
        raise QuantaInputError(
            f"'{source}' is a sweep; {_OWNER} reads one 'quanta parity train' run."
        )
    from quanta.store import read_result

    config = read_result(source, ("parity.train",), "'quanta parity train'")["config"]
    p, cost, cfg = _task_arrays(config)
    if len(cfg.widths) < 2:
        raise QuantaInputError(
            f"'{source}' has one width ({cfg.widths[0]}); {_OWNER} needs at least two."
        )
    steps = learned_steps(curves[curves["seed"] == min(cfg.init_seeds)], threshold)
    per_width = [
        _width_record(int(str(w)), part.sort_values("task"), p, cost, curves)
        for w, part in steps.groupby("width")
    ]
    widest = steps[steps["width"] == max(cfg.widths)].sort_values("task")
    order = explain_order(widest["learned_step"].to_numpy(), p, cost)
    return {
        "source": str(source),
        "settings": {
            "threshold_nats": threshold,
            "n_tasks": cfg.n_tasks,
            "alpha": cfg.alpha,
            "k_per_task": list(cfg.k_per_task),
            "k_order": cfg.k_order,
            "steps": cfg.steps,
            "widths": list(cfg.widths),
            "equal_costs": bool(np.ptp(cost) == 0),
        },
        "order": {"width": max(cfg.widths), **order},
        "per_width": per_width,
        "prediction": _prediction(per_width, p, cost, cfg.alpha),
        "subtasks": pd.DataFrame(
            {
                "task": np.arange(len(p)),
                "p": p,
                "cost": cost,
                "learned_step": widest["learned_step"].to_numpy(),
            }
        ).to_dict("records"),
    }


def _width_record(
    width: int, part: pd.DataFrame, p: np.ndarray, cost: np.ndarray, curves: pd.DataFrame
) -> dict[str, Any]:
    learned = part["learned"].to_numpy()
    order = explain_order(part["learned_step"].to_numpy(), p, cost)
    mix = curves[
        (curves["split"] == "test") & (curves["task"] == MIXTURE) & (curves["width"] == width)
    ]
    agreement = set_agreement(learned, {"p": p, "inv_cost": 1.0 / cost, "ratio": p / cost})
    return {
        "width": width,
        "n_learned": int(learned.sum()),
        "learned_tasks": np.flatnonzero(learned).tolist(),
        "unlearned_mass": float(p[~learned].sum()),
        "final_loss": float(mix.sort_values("step")["loss_nats"].to_numpy()[-1]),
        "spearman_p": order["spearman_p"],
        "spearman_cost": order["spearman_cost"],
        "verdict": order["verdict"],
        **{f"jaccard_{k}": v for k, v in agreement.items()},
    }


def _prediction(
    per_width: list[dict[str, Any]], p: np.ndarray, cost: np.ndarray, alpha: float
) -> dict[str, Any]:
    """Fit C (hidden units per unit of cost) for the unequal- and the equal-cost knapsack."""
    widths = np.array([r["width"] for r in per_width], dtype=np.float64)
    observed = np.array([r["unlearned_mass"] for r in per_width])
    out: dict[str, Any] = {"observed_mass": observed.tolist()}
    for name, costs in (("unequal", cost), ("equal", np.full_like(cost, cost.mean()))):
        curves = np.array(
            [[p[~capacity_learned(p, costs, w / c)].sum() for w in widths] for c in _C_GRID]
        )  # (grid, widths)
        err = ((curves - observed) ** 2).mean(axis=1)
        best = int(np.argmin(err))
        sets = [capacity_learned(p, costs, w / _C_GRID[best]) for w in widths]
        seen = [np.isin(np.arange(len(p)), r["learned_tasks"]) for r in per_width]
        out[name] = {
            "C": float(_C_GRID[best]),
            "rmse": float(np.sqrt(err[best])),
            "predicted_mass": curves[best].tolist(),
            "n_learned": [int(m.sum()) for m in sets],
            # Subtasks the fitted knapsack holds but training did not learn (and the reverse).
            "missed": [int((m & ~o).sum()) for m, o in zip(sets, seen, strict=True)],
            "extra": [int((~m & o).sum()) for m, o in zip(sets, seen, strict=True)],
        }
    out["closed_form"] = random_cost_prefactor(alpha, cost) if alpha > 0 else {}
    out["better"] = "unequal" if out["unequal"]["rmse"] < out["equal"]["rmse"] else "equal"
    return out


def capacity_figure(result: dict[str, Any]) -> Figure:
    """Left: learned step vs p_i at the widest width, one marker per cost. Right: unlearned
    frequency mass vs width, observed and both fitted predictions."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.6), layout="constrained")
    left, right = fig.subplots(1, 2)
    tasks = pd.DataFrame(result["subtasks"])
    for c, part in tasks.groupby("cost"):
        shown = part.dropna(subset=["learned_step"])
        left.scatter(shown["p"], shown["learned_step"], s=16, label=f"k = {c:g}")
    left.set(xlabel="frequency p_i", ylabel="learned step")
    if (tasks["learned_step"].fillna(0) > 0).any():  # log axes only over data
        left.set(xscale="log", yscale="log")
    left.set_title(f"width {result['order']['width']}: learned step vs p_i", fontsize=9)
    left.legend(fontsize=7)
    widths = [r["width"] for r in result["per_width"]]
    pred = result["prediction"]
    right.plot(widths, pred["observed_mass"], "ko-", label="observed")
    for name, style in (("unequal", "C0s--"), ("equal", "C1^:")):
        right.plot(
            widths,
            pred[name]["predicted_mass"],
            style,
            label=f"{name} costs, C = {pred[name]['C']:.2g}",
        )
    right.set(xscale="log", xlabel="width (hidden units)", ylabel="unlearned mass Σ p_i")
    right.set_title("knapsack prediction vs observed", fontsize=9)
    right.legend(fontsize=7)
    return fig


@locked(lambda a: a["out"] if a["out"] is not None else Path(a["source"]) / "capacity")
def run_capacity(
    source: str | Path, out: str | Path | None = None, *, threshold: float = 0.1
) -> dict[str, Any]:
    """:func:`analyze_capacity` into ``out`` (default ``SOURCE/capacity``): ``capacity.json``,
    ``capacity.parquet`` (per width) and ``capacity.png``, a run directory of kind
    ``parity.capacity`` (reused when complete and its inputs are unchanged)."""
    from quanta.store import portable_path, read_result

    source = Path(source)
    out = Path(out) if out is not None else source / "capacity"
    train = read_result(source, ("parity.train",), "'quanta parity train'")
    config = {
        "source": portable_path(source.resolve(), out),
        "source_hash": train["config_hash"],
        "threshold": threshold,
    }
    return analysis_run(
        out,
        KIND,
        config,
        "capacity",
        lambda: analyze_capacity(source, threshold=threshold),
        capacity_figure,
    )
