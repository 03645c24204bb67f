"""The quantization model's predictions (PAPER.md §1) and a Monte-Carlo simulator of it.

Quanta are ordered by use frequency ``p_k ∝ k^-(α+1)``. A model that has learned the first
``n`` quanta has mean loss ``L(n) = L_∞ + δ Σ_{k>n} p_k`` (monogenic samples: a sample needing an
unlearned quantum costs ``δ`` more). Then

* parameters: ``n ∝ N``                ⇒ ``L(N) - L_∞ ∝ N^-α``,
* data:       quantum k learned once seen ``τ`` times ⇒ ``n ∝ D^{1/(α+1)}`` ⇒ ``∝ D^{-α/(α+1)}``,
* steps:      the same with ``D = S·B`` (online, batch B) ⇒ ``∝ S^{-α/(α+1)}``.

:func:`simulate` draws the data-limited cases by Monte Carlo (multinomial counts), so users can
see the theory's curves — and their finite-size deviations — for any α, τ and number of quanta.
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
    "loss_curve",
    "predicted_exponents",
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
