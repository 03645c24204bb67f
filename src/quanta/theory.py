"""The quantization model's predictions (PAPER.md §1) and a Monte-Carlo simulator of it.

Quanta are ordered by use frequency ``p_k ∝ k^-(α+1)``. A model that has learned the first
``n`` quanta has mean loss ``L(n) = L_∞ + δ Σ_{k>n} p_k`` (monogenic samples: a sample needing an
unlearned quantum costs ``δ`` more). Then

* parameters: ``n ∝ N``                ⇒ ``L(N) - L_∞ ∝ N^-α``,
* data:       quantum k learned once seen ``τ`` times ⇒ ``n ∝ D^{1/(α+1)}`` ⇒ ``∝ D^{-α/(α+1)}``,
* steps:      the same with ``D = S·B`` (online, batch B) ⇒ ``∝ S^{-α/(α+1)}``.

:func:`simulate` draws the data-limited cases by Monte Carlo (multinomial counts), so users can
see the theory's curves — and their finite-size deviations — for any α, τ and number of quanta.

Quanta of unequal capacity (issue 20; the derivation is docs/HYPOTHESIS.md): quantum ``i`` costs
``c_i`` capacity units and a model of capacity ``B ∝ N`` learns the set that maximizes
``Σ p_i`` subject to ``Σ c_i <= B`` (a 0/1 knapsack; :func:`capacity_learned`, greedy by
``p_i / c_i`` or exact). With ``c_i ∝ i^γ`` the exponent is ``α_N = α / (1 + γ)``
(:func:`capacity_exponent`); with costs drawn independently of rank it stays ``α`` and only the
prefactor moves (:func:`random_cost_prefactor`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import zeta

from quanta._validation import check_choice, check_int, check_real
from quanta.store import writes_outputs

__all__ = [
    "capacity_exponent",
    "capacity_learned",
    "capacity_loss",
    "loss_curve",
    "predicted_exponents",
    "random_cost_prefactor",
    "simulate",
    "theory_table",
    "write_theory",
    "zipf_pk",
]

_OWNER = "quanta.theory"


def zipf_pk(
    k: np.ndarray | Sequence[int] | int, alpha: float, *, n_quanta: int | None = None
) -> np.ndarray:
    """Use frequency of quantum ``k`` (1-based): ``k^-(α+1) / Z``.

    ``Z = ζ(α+1)`` for infinitely many quanta (needs α > 0), or ``Σ_{j≤n} j^-(α+1)`` for
    ``n_quanta = n``.

    Examples
    --------
    >>> round(float(zipf_pk(1, 0.4, n_quanta=500)), 4)  # PAPER.md §2
    0.3451
    >>> round(float(zipf_pk(1, 1.0)), 4)  # 1/ζ(2) = 6/π²
    0.6079
    """
    alpha = check_real(alpha, "alpha", _OWNER, low=0.0)
    k = np.asarray(k, dtype=np.float64)
    if n_quanta is None:
        if alpha == 0:
            raise ValueError(
                f"The 'alpha' parameter of {_OWNER} must be > 0 for infinitely "
                "many quanta (ζ(1) diverges); pass n_quanta. Got 0.0 instead."
            )
        norm = float(zeta(alpha + 1.0))
    else:
        n = check_int(n_quanta, "n_quanta", _OWNER, low=1)
        norm = float(np.sum(np.arange(1, n + 1, dtype=np.float64) ** -(alpha + 1.0)))
    return k ** -(alpha + 1.0) / norm


def loss_curve(
    n_learned: np.ndarray | Sequence[float],
    alpha: float,
    *,
    n_quanta: int | None = None,
    delta: float = 1.0,
    loss_floor: float = 0.0,
) -> np.ndarray:
    """``L(n) = L_∞ + δ Σ_{k>n} p_k``: mean loss with the first ``n`` quanta learned.

    ``n_quanta=None``: infinitely many quanta (ζ normalization).

    >>> loss_curve([0, 500], 0.4, n_quanta=500).tolist()
    [1.0, 0.0]
    >>> round(float(loss_curve([1], 1.0)[0]), 4)  # 1 - 6/π²
    0.3921
    """
    n = np.asarray(n_learned, dtype=np.int64)
    top = int(n.max(initial=0)) if n_quanta is None else n_quanta
    p = zipf_pk(np.arange(1, max(top, 1) + 1), alpha, n_quanta=n_quanta)
    unlearned = np.concatenate([[1.0], 1.0 - np.cumsum(p)])  # tail mass after n quanta
    return loss_floor + delta * np.clip(unlearned[np.clip(n, 0, top)], 0.0, None)


def predicted_exponents(alpha: float) -> dict[str, float]:
    """The quantization model's scaling exponents for Zipf exponent ``α``.

    >>> {k: round(v, 4) for k, v in predicted_exponents(0.4).items()}
    {'N': 0.4, 'D': 0.2857, 'S': 0.2857}
    """
    alpha = check_real(alpha, "alpha", _OWNER, low=0.0, low_open=True)
    return {"N": alpha, "D": alpha / (alpha + 1.0), "S": alpha / (alpha + 1.0)}


def simulate(
    alpha: float,
    *,
    kind: str,
    scales: Sequence[float] | np.ndarray,
    n_quanta: int | None = None,
    params_per_quantum: float = 1.0,
    tau: float = 10.0,
    batch_size: int = 1,
    delta: float = 1.0,
    seeds: int = 5,
    seed: int = 0,
) -> pd.DataFrame:
    """Curves of the quantization model: loss and quanta learned vs N, D or S.

    Parameters
    ----------
    alpha : float
        Zipf exponent α > 0 (the paper's).
    kind : {"N", "D", "S"}
        ``N``: parameters, the first ``floor(N / params_per_quantum)`` quanta learned
        (deterministic). ``D``: a dataset of ``D`` samples; quantum k learned when it occurs at
        least ``tau`` times. ``S``: online training, ``S`` steps of ``batch_size`` fresh samples,
        the same rule on the ``S·batch_size`` samples seen.
    scales : sequence of float
        The N, D or S values.
    n_quanta : int, optional
        Number of quanta. Default: infinitely many (ζ(α+1) normalization): quanta are simulated
        explicitly up to a rank none of which could reach ``tau`` occurrences at the largest
        scale, and the remaining mass counts as unlearned. A finite number makes curves bend
        once most quanta are learned (a finite-size effect worth seeing).
    seeds : int
        Monte-Carlo repetitions for D and S (counts are redrawn independently per scale).

    Returns
    -------
    pandas.DataFrame
        Columns ``kind, scale, seed, n_learned, loss`` (loss in units of δ, floor 0).

    Examples
    --------
    >>> df = simulate(0.5, kind="N", scales=[10, 100])
    >>> df["n_learned"].tolist()
    [10, 100]
    """
    kind = check_choice(kind, "kind", _OWNER, ["N", "D", "S"])
    alpha = check_real(alpha, "alpha", _OWNER, low=0.0, low_open=True)
    tau = check_real(tau, "tau", _OWNER, low=0.0, low_open=True)
    scales_arr = np.asarray(scales, dtype=np.float64)
    if scales_arr.ndim != 1 or scales_arr.size == 0 or not np.all(scales_arr > 0):
        raise ValueError(
            f"The 'scales' parameter of {_OWNER} must be a non-empty list of "
            f"positive numbers. Got {list(np.ravel(scales_arr))!r} instead."
        )
    if n_quanta is not None:
        n_quanta = check_int(n_quanta, "n_quanta", _OWNER, low=1)
    if kind == "N":
        n = np.floor(scales_arr / params_per_quantum).astype(np.int64)
        if n_quanta is not None:
            n = np.minimum(n, n_quanta)
        loss = loss_curve(n, alpha, n_quanta=n_quanta, delta=delta)
        return pd.DataFrame(
            {"kind": kind, "scale": scales_arr, "seed": 0, "n_learned": n, "loss": loss}
        )
    samples = np.round(scales_arr * (batch_size if kind == "S" else 1)).astype(np.int64)
    if n_quanta is None:
        # Beyond rank K the expected count at the largest scale is < tau/10: never learned.
        z = float(zeta(alpha + 1.0))
        explicit = int(np.ceil((samples.max() * 10 / (tau * z)) ** (1 / (alpha + 1.0)))) + 1
        explicit = min(explicit, 5_000_000)
        p = zipf_pk(np.arange(1, explicit + 1), alpha)
    else:
        p = zipf_pk(np.arange(1, n_quanta + 1), alpha, n_quanta=n_quanta)
    tail = max(0.0, 1.0 - float(p.sum()))  # mass of the quanta not simulated explicitly
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(check_int(seeds, "seeds", _OWNER, low=1)):
        # counts[i, k] ~ Multinomial(samples_i, p (+ tail)): one independent draw per scale.
        counts = rng.multinomial(samples, np.append(p, tail))[:, :-1]
        learned = counts >= tau
        loss = delta * ((p * ~learned).sum(axis=1) + tail)
        rows.append(
            pd.DataFrame(
                {
                    "kind": kind,
                    "scale": scales_arr,
                    "seed": s,
                    "n_learned": learned.sum(axis=1),
                    "loss": loss,
                }
            )
        )
    return pd.concat(rows, ignore_index=True)


#: Default scales of :func:`theory_table`: parameters (in units of ``params_per_quantum``),
#: samples, and steps (of ``batch_size`` samples).
DEFAULT_SCALES = {
    "N": np.geomspace(10, 1e4, 16),
    "D": np.geomspace(1e3, 1e7, 16),
    "S": np.geomspace(10, 1e5, 16),
}


def theory_table(
    alphas: Sequence[float],
    *,
    n_quanta: int | None = None,
    tau: float = 10.0,
    batch_size: int = 100,
    seeds: int = 5,
    seed: int = 0,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Simulated L(N), L(D), L(S) for every α and their fitted exponents next to the predicted.

    Returns ``(curves, exponents)``: ``curves`` is :func:`simulate`'s table (seed-averaged, with
    an ``alpha`` column); ``exponents`` has one row per α × kind: ``fitted`` (pure power law on
    the seed-averaged curve), ``predicted``, and ``n_learned_slope`` (log-log slope of quanta
    learned vs scale: 1 for N, 1/(α+1) for D and S).

    >>> _, e = theory_table([0.5], seeds=2)
    >>> e[["kind", "predicted"]].round(4).to_dict("list")
    {'kind': ['N', 'D', 'S'], 'predicted': [0.5, 0.3333, 0.3333]}
    """
    from quanta.scaling import fit_power_law

    curves, rows = [], []
    for i, alpha in enumerate(alphas):
        pred = predicted_exponents(alpha)
        for j, (kind, scales) in enumerate(DEFAULT_SCALES.items()):
            sim = simulate(
                alpha,
                kind=kind,
                scales=scales,
                n_quanta=n_quanta,
                tau=tau,
                batch_size=batch_size,
                seeds=seeds,
                seed=seed + 3 * i + j,  # independent draws for every curve
            )
            mean = sim.groupby("scale")[["loss", "n_learned"]].mean().reset_index()
            curves.append(mean.assign(kind=kind, alpha=alpha))
            ok = (mean["loss"] > 0).to_numpy()
            fit = fit_power_law(mean["scale"][ok], mean["loss"][ok], offset=False)
            grow = (mean["n_learned"] > 0).to_numpy()
            slope = np.polyfit(np.log(mean["scale"][grow]), np.log(mean["n_learned"][grow]), 1)[0]
            rows.append(
                {
                    "alpha": alpha,
                    "kind": kind,
                    "fitted": fit.alpha if fit.success else np.nan,
                    "predicted": pred[kind],
                    "n_learned_slope": float(slope),
                    "predicted_slope": 1.0 if kind == "N" else 1.0 / (alpha + 1.0),
                }
            )
    return pd.concat(curves, ignore_index=True), pd.DataFrame(rows)


# --------------------------------------------------------------------------- unequal capacity


def capacity_learned(
    p: np.ndarray | Sequence[float],
    costs: np.ndarray | Sequence[float],
    budget: float,
    *,
    method: str = "greedy",
) -> np.ndarray:
    """Which quanta a model of capacity ``budget`` learns when quantum ``i`` costs ``costs[i]``.

    The learned set maximizes the covered frequency ``Σ p_i`` subject to ``Σ c_i <= budget``.

    Parameters
    ----------
    p, costs : array ``[n]``
        Frequencies and costs (> 0) of the quanta.
    budget : float
        Capacity, in the units of ``costs``.
    method : {"greedy", "exact"}
        ``greedy``: quanta by decreasing ``p_i / c_i``, stopped at the first that does not fit
        (the continuum model the closed forms describe; ties keep the rank order). ``exact``:
        the 0/1 knapsack by dynamic programming; needs integer costs.

    Returns
    -------
    numpy.ndarray
        bool ``[n]``: learned.

    Examples
    --------
    >>> capacity_learned([0.5, 0.3, 0.2], [3, 1, 1], 2).tolist()
    [False, True, True]
    >>> capacity_learned([0.5, 0.3, 0.2], [2, 2, 1], 3, method="exact").tolist()
    [True, False, True]
    """
    method = check_choice(method, "method", _OWNER, ["greedy", "exact"])
    p_arr, c_arr = _quanta_arrays(p, costs)
    budget = check_real(budget, "budget", _OWNER, low=0.0)
    if method == "greedy":
        order = np.argsort(-p_arr / c_arr, kind="stable")
        fits = np.cumsum(c_arr[order]) <= budget * (1 + 1e-12)
        learned = np.zeros(len(p_arr), dtype=bool)
        learned[order[: int(np.argmin(fits)) if not fits.all() else len(fits)]] = True
        return learned
    if not np.all(c_arr == np.round(c_arr)):
        raise ValueError(
            f"The 'costs' parameter of {_OWNER} must be integers for method='exact'. "
            f"Got {c_arr.tolist()!r} instead."
        )
    return _knapsack(p_arr, c_arr.astype(np.int64), int(budget))


def _quanta_arrays(p: object, costs: object) -> tuple[np.ndarray, np.ndarray]:
    p_arr = np.asarray(p, dtype=np.float64)
    c_arr = np.asarray(costs, dtype=np.float64)
    if p_arr.ndim != 1 or p_arr.shape != c_arr.shape or not np.all(c_arr > 0):
        raise ValueError(
            f"The 'costs' parameter of {_OWNER} must be positive numbers, one per quantum "
            f"({p_arr.size}). Got {np.ravel(c_arr).tolist()!r} instead."
        )
    return p_arr, c_arr


def _knapsack(p: np.ndarray, c: np.ndarray, budget: int) -> np.ndarray:
    """Exact 0/1 knapsack (values ``p``, integer weights ``c``) by DP over the budget."""
    n = len(p)
    best = np.zeros(budget + 1)
    take = np.zeros((n, budget + 1), dtype=bool)
    for i in range(n):  # items one by one; the budget axis is vectorized
        if c[i] > budget:
            continue
        with_i = best[: budget + 1 - c[i]] + p[i]
        better = with_i > best[c[i] :]
        take[i, c[i] :] = better
        best[c[i] :] = np.where(better, with_i, best[c[i] :])
    learned = np.zeros(n, dtype=bool)
    room = budget
    for i in range(n - 1, -1, -1):  # walk back through the choices
        if take[i, room]:
            learned[i] = True
            room -= int(c[i])
    return learned


def capacity_loss(
    p: np.ndarray | Sequence[float],
    costs: np.ndarray | Sequence[float],
    budgets: np.ndarray | Sequence[float],
    *,
    method: str = "greedy",
    delta: float = 1.0,
) -> np.ndarray:
    """``L(B) = δ Σ_{unlearned} p_i`` at every capacity in ``budgets``: float64 ``[len(budgets)]``.

    >>> capacity_loss([0.5, 0.3, 0.2], [1, 1, 1], [0, 1, 3]).round(2).tolist()
    [1.0, 0.5, 0.0]
    """
    p_arr, c_arr = _quanta_arrays(p, costs)
    return np.array(
        [
            delta * float(p_arr[~capacity_learned(p_arr, c_arr, b, method=method)].sum())
            for b in np.asarray(budgets, dtype=np.float64)
        ]
    )


def capacity_exponent(alpha: float, gamma: float) -> float:
    """``α_N`` when quantum ``i`` (1-based rank) costs ``c_i ∝ i^γ``: ``α / (1 + γ)``.

    The first ``n`` quanta cost ``Σ_{i<=n} i^γ ≈ n^{1+γ} / (1+γ)``, so a capacity ``B ∝ N``
    holds ``n ∝ N^{1/(1+γ)}`` of them and ``L - L_∞ ∝ n^{-α} ∝ N^{-α/(1+γ)}`` (γ > -1; the
    greedy order stays the rank order while ``α + 1 + γ > 0``). ``γ = 0``: the paper's ``α``.

    >>> capacity_exponent(0.4, 1.0)
    0.2
    """
    alpha = check_real(alpha, "alpha", _OWNER, low=0.0, low_open=True)
    gamma = check_real(gamma, "gamma", _OWNER, low=-1.0, low_open=True)
    return alpha / (1.0 + gamma)


def random_cost_prefactor(alpha: float, costs: np.ndarray | Sequence[float]) -> dict[str, float]:
    """Many quanta, costs i.i.d. (independent of rank) from the empirical law ``costs``.

    The greedy set at multiplier λ is ``{i: c_i < p_i/λ}``; in the continuum limit
    ``B = λ^{-1/(α+1)} m`` and ``L = m^{α+1} B^{-α} / (α ζ(α+1))`` with
    ``m = E[c^{α/(α+1)}]`` (docs/HYPOTHESIS.md). So ``α_N = α`` and the model behaves as if
    every quantum cost ``c_eff = m^{(α+1)/α}``, a power mean below the mean cost: cheap quanta
    are learned early.

    Returns ``{"alpha_N", "c_eff", "mean_cost", "loss_coefficient"}`` (``L = coefficient ·
    B^-α``, δ = 1).

    >>> r = random_cost_prefactor(1.0, [1.0, 1.0])
    >>> r["alpha_N"], r["c_eff"]
    (1.0, 1.0)
    """
    alpha = check_real(alpha, "alpha", _OWNER, low=0.0, low_open=True)
    c = np.asarray(costs, dtype=np.float64)
    if c.size == 0 or not np.all(c > 0):
        raise ValueError(
            f"The 'costs' parameter of {_OWNER} must be a non-empty list of positive numbers. "
            f"Got {c.tolist()!r} instead."
        )
    m = float(np.mean(c ** (alpha / (alpha + 1.0))))
    return {
        "alpha_N": alpha,
        "c_eff": m ** ((alpha + 1.0) / alpha),
        "mean_cost": float(c.mean()),
        "loss_coefficient": m ** (alpha + 1.0) / (alpha * float(zeta(alpha + 1.0))),
    }


@writes_outputs("out")
def write_theory(
    curves: pd.DataFrame, exponents: pd.DataFrame, settings: dict[str, Any], out: str | Path
) -> list[Path]:
    """Write ``theory.parquet`` (``curves``), ``theory.json`` (``settings`` and ``exponents``)
    and ``theory.png`` into ``out``, recorded in its ``outputs.json``; returns the paths."""
    from quanta import plots
    from quanta.store import write_json, write_parquet

    out = Path(out)
    written = [out / "theory.parquet", out / "theory.json"]
    write_parquet(written[0], curves)
    write_json(written[1], {"settings": settings, "exponents": exponents.to_dict("records")})
    written.append(plots.save_figure(plots.theory_figure(curves, exponents), out / "theory.png"))
    return written
