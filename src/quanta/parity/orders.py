"""Orders of learning: when each subtask is learned, and what that order follows (issue 20).

Shared by the unequal-capacity analysis (:mod:`quanta.parity.capacity`: does the order follow
frequency ``p_i`` or cost ``c_i``?) and the domino measure (:mod:`quanta.parity.domino`: does a
subtask wait for the more frequent ones, and does width change when it is learned?).

A subtask's *learned step* is the first evaluated step at which its test loss is below the
threshold (nats); a subtask never below it is *censored* (NaN step). Rank statistics put the
censored last (tied); log-log regressions use the learned ones only and say how many were left
out.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from quanta.parity.train import MIXTURE

__all__ = [
    "analysis_run",
    "explain_order",
    "json_ready",
    "learned_steps",
    "out_of_order",
    "set_agreement",
]


def learned_steps(curves: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """One row per member × subtask: ``width, seed, task, learned_step`` (NaN if never),
    ``final_loss`` (nats, at the last evaluated step) and ``learned`` (``final_loss <
    threshold``).

    ``curves`` is a ``curves.parquet`` table (a ``run`` column, if present, is kept).

    >>> c = pd.DataFrame({"member": 0, "width": 8, "seed": 0, "split": "test", "task": 0,
    ...                   "step": [0, 10, 20], "loss_nats": [0.7, 0.05, 0.02]})
    >>> learned_steps(c, 0.1)[["task", "learned_step", "learned"]].to_dict("records")
    [{'task': 0, 'learned_step': 10.0, 'learned': True}]
    """
    keys = [k for k in ("run", "member") if k in curves.columns]
    test = curves[(curves["split"] == "test") & (curves["task"] != MIXTURE)]
    test = test.sort_values([*keys, "task", "step"], kind="stable")
    groups = [*keys, "task"]
    last = test.groupby(groups, sort=True).tail(1).set_index(groups)
    below = test[test["loss_nats"] < threshold]
    first = below.groupby(groups)["step"].min()
    out = last[["width", "seed"]].copy()
    out["learned_step"] = first.reindex(out.index).astype(np.float64)
    out["final_loss"] = last["loss_nats"]
    out["learned"] = out["final_loss"] < threshold
    return out.reset_index()


def _ranks_censored(steps: np.ndarray) -> np.ndarray:
    """Ranks of learned steps, the censored (NaN) tied after every learned one."""
    from scipy.stats import rankdata

    filled = np.where(np.isnan(steps), np.inf, steps)
    return np.asarray(rankdata(filled), dtype=np.float64)


def explain_order(steps: np.ndarray, p: np.ndarray, cost: np.ndarray) -> dict[str, Any]:
    """What the learning order follows: frequency, cost, or both.

    Parameters
    ----------
    steps : float ``[n]``
        Learned steps (NaN = never learned).
    p, cost : float ``[n]``
        Frequencies and costs of the subtasks.

    Returns
    -------
    dict
        ``spearman_p`` (ρ of learned rank vs ``-p``: 1 = strictly by frequency),
        ``spearman_cost`` (ρ vs cost: 1 = strictly cheapest first), ``spearman_ratio`` (vs
        ``-p/c``); the regression ``log t = a log p + b log c + e`` on the learned ones:
        ``a``, ``b``, ``r2_joint``, ``r2_p`` (``log p`` alone), ``r2_cost`` (``log c``
        alone), ``n_learned``, ``n_censored``; and ``verdict``: ``"frequency"`` or
        ``"cost"`` (the predictor whose removal costs more R², when the other adds < 0.05),
        ``"both"``, or ``"undetermined"`` (fewer than 4 learned subtasks).

    Examples
    --------
    >>> p = 1.0 / np.arange(1, 9); c = np.array([2, 3, 4, 2, 3, 4, 2, 3.0])
    >>> explain_order(10 / p, p, c)["verdict"]
    'frequency'
    >>> explain_order(10 * c**3 * (1 + 0.01 * np.arange(8)), p, c)["verdict"]
    'cost'
    """
    steps, p, cost = (np.asarray(a, dtype=np.float64) for a in (steps, p, cost))
    ranks = _ranks_censored(steps)
    out: dict[str, Any] = {
        "spearman_p": _rho(ranks, -p),
        "spearman_cost": _rho(ranks, cost),
        "spearman_ratio": _rho(ranks, -p / cost),
    }
    ok = ~np.isnan(steps) & (steps > 0)
    out |= {"n_learned": int(ok.sum()), "n_censored": int(np.isnan(steps).sum())}
    if ok.sum() < 4:
        return (
            out
            | dict.fromkeys(("a", "b", "r2_joint", "r2_p", "r2_cost"), np.nan)
            | {"verdict": "undetermined"}
        )
    y, lp, lc = np.log(steps[ok]), np.log(p[ok]), np.log(cost[ok])
    joint, coef = _r2(y, np.column_stack([lp, lc]))
    r2_p, _ = _r2(y, lp[:, None])
    r2_c, _ = _r2(y, lc[:, None])
    # The R² each predictor adds to the other: the larger share decides.
    adds_p, adds_c = joint - r2_c, joint - r2_p
    if adds_c < 0.05 <= adds_p:
        verdict = "frequency"
    elif adds_p < 0.05 <= adds_c:
        verdict = "cost"
    else:
        verdict = (
            "both" if min(adds_p, adds_c) >= 0.05 else ("frequency" if r2_p >= r2_c else "cost")
        )
    return out | {
        "a": coef[0],
        "b": coef[1],
        "r2_joint": joint,
        "r2_p": r2_p,
        "r2_cost": r2_c,
        "verdict": verdict,
    }


def _rho(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman ρ; NaN when either side is constant (equal costs, nothing learned)."""
    from scipy.stats import spearmanr

    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return np.nan
    return float(spearmanr(a, b)[0])


def _r2(y: np.ndarray, x: np.ndarray) -> tuple[float, np.ndarray]:
    """R² and slopes of least squares ``y ~ 1 + x``; a constant predictor explains nothing."""
    design = np.column_stack([np.ones(len(y)), x])
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    resid = y - design @ coef
    total = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - float((resid**2).sum()) / total if total > 0 else np.nan
    return r2, coef[1:]


def out_of_order(steps: np.ndarray, p: np.ndarray) -> float:
    """Fraction of pairs learned out of frequency order: of the pairs of learned subtasks with
    ``p_i > p_j`` and different learned steps, the share where ``j`` came first. NaN without
    such pairs. Pure frequency order gives 0; an order independent of frequency about 0.5.

    >>> out_of_order(np.array([1.0, 2, 3]), np.array([0.5, 0.3, 0.2]))
    0.0
    >>> out_of_order(np.array([3.0, 2, np.nan]), np.array([0.5, 0.3, 0.2]))
    1.0
    """
    steps, p = np.asarray(steps, dtype=np.float64), np.asarray(p, dtype=np.float64)
    ok = ~np.isnan(steps)
    t, q = steps[ok], p[ok]
    more_frequent = q[:, None] > q[None, :]
    decided = more_frequent & (t[:, None] != t[None, :])
    n = int(decided.sum())
    return float((decided & (t[:, None] > t[None, :])).sum() / n) if n else np.nan


def set_agreement(learned: np.ndarray, keys: dict[str, np.ndarray]) -> dict[str, float]:
    """Jaccard of the learned set with the top-``n`` subtasks by each key (``n`` = how many
    are learned; larger key = learned first). NaN when nothing (or everything) is learned.

    >>> set_agreement(np.array([True, True, False]), {"p": np.array([3.0, 2, 1])})
    {'p': 1.0}
    """
    learned = np.asarray(learned, dtype=bool)
    n = int(learned.sum())
    out = {}
    for name, key in keys.items():
        if n in (0, len(learned)):
            out[name] = np.nan
            continue
        top = np.zeros(len(learned), dtype=bool)
        top[np.argsort(-np.asarray(key, dtype=np.float64), kind="stable")[:n]] = True
        out[name] = float((top & learned).sum() / (top | learned).sum())
    return out


def json_ready(obj: Any) -> Any:
    """``obj`` with NaN / inf floats as None and numpy scalars as Python ones (strict JSON).

    >>> json_ready({"a": [np.float64("nan"), np.int64(2)]})
    {'a': [None, 2]}
    """
    if isinstance(obj, dict):
        return {k: json_ready(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_ready(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


def analysis_run(
    out: Path,
    kind: str,
    config: dict[str, Any],
    name: str,
    compute: Callable[[], dict[str, Any]],
    figure: Callable[[dict[str, Any]], Any],
) -> dict[str, Any]:
    """The run directory ``out`` (kind ``kind``) of one orders analysis: ``name.json`` (the
    result of ``compute()``), ``name.parquet`` (its ``per_width`` rows) and ``name.png``
    (``figure(result)``), reused when complete for the same ``config``. ``compute`` runs before
    the directory is claimed, so a refused input leaves nothing behind. Shared by
    ``quanta parity capacity`` and ``quanta parity domino``."""
    import json
    import time

    from quanta.config import config_hash
    from quanta.plots import save_figure
    from quanta.store import RunDir, write_json, write_parquet

    files = (f"{name}.json", f"{name}.parquet", f"{name}.png")
    run = RunDir(out, kind, config, config_hash(config), files=files)
    t0 = time.perf_counter()
    result = compute()
    if run.open() == "complete":
        return dict(json.loads((out / files[0]).read_text()))
    result = json_ready(result)
    write_json(out / files[0], result)
    write_parquet(out / files[1], pd.DataFrame(result["per_width"]))
    save_figure(figure(result), out / files[2])
    run.write_manifest(status="complete", wall_seconds=time.perf_counter() - t0, extra={})
    return result
