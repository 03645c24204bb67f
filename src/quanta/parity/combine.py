"""Combination rules: how the losses of two quanta make the loss of a polygenic sample.

A polygenic sample of subtasks ``a`` and ``b`` (:mod:`quanta.parity.polytask`) has loss
``L_ab``; the same net's monogenic losses on ``a`` and ``b`` at the same width and step are
``L_a`` and ``L_b`` (nats). ``L0 = ln 2`` is the loss of a subtask not learned (chance on a
binary label). Each rule predicts ``L_ab`` from ``L_a, L_b`` with no free parameter:

* **additive** (the gains of the quanta add): ``L_ab − L0 = (L_a − L0) + (L_b − L0)``, i.e.
  ``L_ab = max(L_a + L_b − L0, 0)``.
* **one-at-a-time** (only the best quantum helps): ``L_ab = min(L_a, L_b)``.
* **independent** (each quantum is present with a probability read off its loss,
  ``q = 1 − L/L0`` clipped to ``[0, 1]``: a sample is solved, loss 0, with probability ``q``
  and at chance, loss ``L0``, otherwise; quanta present independently). OR, solved if either
  is present: ``q_ab = 1 − (1 − q_a)(1 − q_b)``; AND, solved only if both are:
  ``q_ab = q_a q_b``; then ``L_ab = L0 (1 − q_ab)``.
* **bottleneck** (the weakest link: only the worse quantum counts): ``L_ab = max(L_a, L_b)``.

:func:`fit_rules` scores every rule on every point (member × step × pair) of each kind: RMSE in
nats, a Gaussian log-likelihood per point (residuals ``N(0, σ²)`` with ``σ²`` the rule's mean
squared error, so ``ΔAIC = n · ln(MSE_rule / MSE_best)``), the RMSE on the *informative* points
(where the rules' predictions spread by more than ``informative_nats``: chance-level and solved
points fit every rule alike), and a bootstrap over pairs of the ratio and difference of the
runner-up's RMSE to the best's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from quanta._validation import check_int

__all__ = ["L0", "RULES", "CombinationFit", "fit_rules", "predict"]

#: The loss of an unlearned subtask (chance on a binary label), nats.
L0 = math.log(2.0)
RULES = ("additive", "one-at-a-time", "independent", "bottleneck")
#: Columns :func:`fit_rules` needs: the kind (``or``/``and``), the pair, the point, the losses.
POINT_COLUMNS = ["kind", "pair", "member", "step", "loss_a", "loss_b", "loss_ab"]


def predict(rule: str, kind: str, loss_a: np.ndarray, loss_b: np.ndarray) -> np.ndarray:
    """``L_ab`` predicted by ``rule`` for a sample of ``kind`` (``"or"``/``"and"``), nats.

    >>> predict("additive", "or", np.array([0.3]), np.array([0.5])).round(4).tolist()
    [0.1069]
    >>> predict("independent", "and", np.array([0.0]), np.array([L0])).round(4).tolist()
    [0.6931]
    """
    la, lb = np.asarray(loss_a, dtype=np.float64), np.asarray(loss_b, dtype=np.float64)
    if rule == "additive":
        return np.maximum(la + lb - L0, 0.0)
    if rule == "one-at-a-time":
        return np.minimum(la, lb)
    if rule == "bottleneck":
        return np.maximum(la, lb)
    if rule == "independent":
        qa, qb = (np.clip(1.0 - x / L0, 0.0, 1.0) for x in (la, lb))
        q = 1.0 - (1.0 - qa) * (1.0 - qb) if kind == "or" else qa * qb
        return L0 * (1.0 - q)
    raise ValueError(f"Unknown combination rule {rule!r}; the rules are {', '.join(RULES)}.")


@dataclass(frozen=True)
class CombinationFit:
    """The rules scored on the polygenic points.

    Attributes
    ----------
    scores : pandas.DataFrame
        One row per kind × rule: ``rmse_nats``, ``loglik_per_point``, ``delta_aic`` (0 for the
        best), ``rmse_informative_nats``, ``n_points``, ``n_informative``.
    verdicts : pandas.DataFrame
        One row per kind: ``best``, ``runner_up``, ``rmse_ratio`` (runner-up / best, > 1) with
        its bootstrap 95% interval ``ratio_ci_low/high``, ``rmse_difference_nats`` with
        ``difference_ci_low/high``, ``best_share`` (share of bootstrap replicates where the
        best stays best), ``n_pairs``, ``n_bootstrap``.
    """

    scores: pd.DataFrame
    verdicts: pd.DataFrame


def _rmse_by_pair(points: pd.DataFrame, kind: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Squared-error sums ``[n_pairs, n_rules]``, point counts ``[n_pairs]`` and pair ids."""
    pairs = np.sort(points["pair"].unique())
    index = np.searchsorted(pairs, points["pair"].to_numpy())
    la, lb, lab = (points[c].to_numpy(np.float64) for c in ("loss_a", "loss_b", "loss_ab"))
    sse = np.zeros((len(pairs), len(RULES)))
    for r, rule in enumerate(RULES):
        np.add.at(sse[:, r], index, (predict(rule, kind, la, lb) - lab) ** 2)
    return sse, np.bincount(index, minlength=len(pairs)).astype(np.float64), pairs


def _scores(points: pd.DataFrame, kind: str, informative_nats: float) -> pd.DataFrame:
    la, lb, lab = (points[c].to_numpy(np.float64) for c in ("loss_a", "loss_b", "loss_ab"))
    preds = np.stack([predict(rule, kind, la, lb) for rule in RULES])  # (R, n)
    resid = preds - lab
    informative = preds.max(axis=0) - preds.min(axis=0) > informative_nats
    mse = np.mean(resid**2, axis=1)
    n = lab.size
    # A zero MSE (a perfect rule) has an infinite likelihood; a floor keeps the score finite.
    var = np.maximum(mse, 1e-12)
    loglik = -0.5 * (np.log(2 * np.pi * var) + 1.0)
    rows = []
    for r, rule in enumerate(RULES):
        inf_resid = resid[r, informative]
        rows.append(
            {
                "kind": kind,
                "rule": rule,
                "rmse_nats": float(np.sqrt(mse[r])),
                "loglik_per_point": float(loglik[r]),
                "delta_aic": float(n * np.log(var[r] / var.min())),
                "rmse_informative_nats": float(np.sqrt(np.mean(inf_resid**2)))
                if inf_resid.size
                else float("nan"),
                "n_points": int(n),
                "n_informative": int(informative.sum()),
            }
        )
    return pd.DataFrame(rows)


def fit_rules(
    points: pd.DataFrame,
    *,
    bootstrap: int = 1000,
    seed: int = 0,
    informative_nats: float = 0.05,
) -> CombinationFit:
    """Score every rule of :data:`RULES` on ``points`` (columns :data:`POINT_COLUMNS`).

    The bootstrap resamples pairs with replacement (all points of a pair together: a pair's
    points along width and steps are not independent), keeps the best and runner-up of the
    full data, and reports the 2.5/97.5 percentiles of their RMSE ratio and difference.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> la, lb = rng.uniform(0, L0, 200), rng.uniform(0, L0, 200)
    >>> pts = pd.DataFrame({"kind": "or", "pair": np.arange(200) % 5, "member": 0,
    ...                     "step": np.arange(200), "loss_a": la, "loss_b": lb,
    ...                     "loss_ab": np.minimum(la, lb) + rng.normal(0, 0.01, 200)})
    >>> fit_rules(pts, bootstrap=50).verdicts["best"].tolist()
    ['one-at-a-time']
    """
    bootstrap = check_int(bootstrap, "bootstrap", "fit_rules", low=1)
    missing = [c for c in POINT_COLUMNS if c not in points.columns]
    if missing:
        raise ValueError(f"fit_rules() needs the columns {POINT_COLUMNS}; missing {missing}.")
    rng = np.random.default_rng(seed)
    scores, verdicts = [], []
    for kind in sorted(points["kind"].unique(), key=lambda k: (k != "or", k)):
        sub = points[points["kind"] == kind]
        table = _scores(sub, kind, informative_nats)
        order = np.argsort(table["rmse_nats"].to_numpy(), kind="stable")
        best, second = int(order[0]), int(order[1])
        sse, counts, pairs = _rmse_by_pair(sub, kind)
        draws = rng.integers(0, len(pairs), size=(bootstrap, len(pairs)))
        rmse = np.sqrt(sse[draws].sum(axis=1) / counts[draws].sum(axis=1)[:, None])  # (B, R)
        ratio = rmse[:, second] / np.maximum(rmse[:, best], 1e-12)
        diff = rmse[:, second] - rmse[:, best]
        full = table["rmse_nats"].to_numpy()
        verdicts.append(
            {
                "kind": kind,
                "best": RULES[best],
                "runner_up": RULES[second],
                "rmse_best_nats": float(full[best]),
                "rmse_ratio": float(full[second] / max(full[best], 1e-12)),
                "ratio_ci_low": float(np.percentile(ratio, 2.5)),
                "ratio_ci_high": float(np.percentile(ratio, 97.5)),
                "rmse_difference_nats": float(full[second] - full[best]),
                "difference_ci_low": float(np.percentile(diff, 2.5)),
                "difference_ci_high": float(np.percentile(diff, 97.5)),
                "best_share": float(np.mean(rmse.argmin(axis=1) == best)),
                "n_pairs": len(pairs),
                "n_bootstrap": bootstrap,
            }
        )
        scores.append(table)
    return CombinationFit(pd.concat(scores, ignore_index=True), pd.DataFrame(verdicts))
