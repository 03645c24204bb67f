"""The envelope method's bias — the paper's appendix D.2, as a measurement.

The paper reads the Zipf exponent of quanta off the **envelope** of the rank-frequency curves
(the largest cluster size at each rank over all K) by a log-log OLS fit over a rank window
(PAPER.md §4.6: ranks 101–1000, slope −1.24). Its appendix shows, on planted clusters, that this
slope is a biased estimate of −(α+1). Here the bias is measured: samples with known quanta
(:func:`quanta.qdg.validate.toy_vectors`: Zipf frequencies ``p_k ∝ k^-(α+1)``, each sample its
quantum's random unit vector plus noise σ in d dimensions) are clustered for every K with each
affinity, and for growing K_max the envelope over K ≤ K_max is fitted over the rank window
(cut at K_max). Each row sets that slope beside

* ``true_slope`` = −(α+1), the planted exponent, and
* ``truth_window_slope``, the same OLS on the true cluster sizes of these samples over the same
  window — what a perfect clustering would give, so the difference between the two slopes is
  the clustering's (and the envelope's) own bias, not the finite sample's;

and ``single_slope``, the same fit on the K = K_max clustering alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from quanta._validation import QuantaInputError, check_choice, check_int, check_real
from quanta.store import writes_outputs

__all__ = ["EnvelopeBias", "envelope_bias", "window_slope", "write_envelope_bias"]

_OWNER = "quanta qdg envelope"


@dataclass
class EnvelopeBias:
    """``slopes``: one row per affinity × K_max (columns in the module docstring);
    ``rank_frequency``: ``affinity`` (or ``truth``) × K (0 = the envelope over all K) × rank →
    size; ``settings``: the planted model and the method's options."""

    slopes: pd.DataFrame
    rank_frequency: pd.DataFrame
    settings: dict[str, Any]


def window_slope(sizes: np.ndarray, ranks: tuple[int, int]) -> float:
    """OLS slope of log size vs log rank over ranks ``ranks[0] … ranks[1]`` of ``sizes``
    (sorted descending, rank 1 first; zero sizes dropped); NaN with fewer than 3 ranks.

    >>> round(window_slope(1000 * np.arange(1.0, 51) ** -1.5, (1, 50)), 6)
    -1.5
    """
    sizes = np.asarray(sizes, dtype=np.float64)
    r = np.arange(1, len(sizes) + 1)
    keep = (r >= ranks[0]) & (r <= ranks[1]) & (sizes > 0)
    if keep.sum() < 3:
        return float("nan")
    return float(np.polyfit(np.log(r[keep]), np.log(sizes[keep]), 1)[0])


def envelope_bias(
    *,
    n_samples: int = 2000,
    n_subtasks: int = 200,
    d: int = 1000,
    sigma: float = 2.0,
    alpha: float = 0.5,
    ks: Sequence[int] = (10, 20, 30, 50, 75, 100, 150, 200),
    transforms: Sequence[str] = ("angular", "relu_norm"),
    assign: str = "kmeans",
    n_init: int = 10,
    ranks: tuple[int, int] = (11, 200),
    seed: int = 0,
) -> EnvelopeBias:
    """Measure the envelope slope's departure from the planted exponent (module docstring).

    Parameters
    ----------
    n_samples, n_subtasks, d, sigma, alpha
        The planted model (:func:`quanta.qdg.validate.toy_vectors`); the paper's appendix:
        1000 subtasks, d = 1000, σ = 2.0.
    ks : sequence of int
        Cluster counts; the envelope at K_max uses every K ≤ K_max.
    transforms : sequence of str
        Affinities (:data:`quanta.qdg.cluster.AFFINITIES`); ``angular`` is the paper's.
    assign, n_init
        Label assigner of the spectral embedding (the paper's: k-means, n_init = 30).
    ranks : (int, int)
        The OLS window, cut at K_max (the paper: 101–1000 with K up to 1500).
    seed : int
        Seed of the planted samples and of the clustering.
    """
    from quanta.qdg.cluster import AFFINITIES, affinity, cosine_similarity, spectral_sweep
    from quanta.qdg.validate import toy_vectors

    alpha = check_real(alpha, "alpha", _OWNER, low=0.0, low_open=True)
    n_init = check_int(n_init, "n_init", _OWNER, low=1)
    lo = check_int(ranks[0], "ranks[0]", _OWNER, low=1)
    hi = check_int(ranks[1], "ranks[1]", _OWNER, low=lo + 2)
    ks = sorted({check_int(k, "K", _OWNER, low=2) for k in ks})
    if not ks:
        raise QuantaInputError("No cluster count K given.")
    if ks[-1] > n_samples:
        raise QuantaInputError(f"K = {ks[-1]} exceeds the number of samples ({n_samples}).")
    transforms = [check_choice(t, "affinity", _OWNER, list(AFFINITIES)) for t in transforms]
    if not transforms:
        raise QuantaInputError("No affinity given.")
    vectors, truth = toy_vectors(n_samples, n_subtasks, d, sigma, alpha=alpha, seed=seed)
    true_sizes = np.sort(np.bincount(truth))[::-1]
    true_sizes = true_sizes[true_sizes > 0]
    sim = cosine_similarity(vectors)
    norms = np.linalg.norm(vectors.astype(np.float64), axis=1)
    rows, tables = [], [_ranked("truth", 0, true_sizes)]
    for transform in transforms:
        labels = spectral_sweep(
            affinity(sim, transform, norms=norms), ks, assign=assign, n_init=n_init, seed=seed
        )
        sizes = {k: np.sort(np.bincount(lab))[::-1] for k, lab in labels.items()}
        part_rows, part_tables = _envelopes(transform, sizes, true_sizes, (lo, hi), alpha)
        rows += part_rows
        tables += part_tables
    slopes = pd.DataFrame(rows)
    slopes["bias"] = slopes["envelope_slope"] - slopes["true_slope"]
    settings = {
        "n_samples": n_samples,
        "n_subtasks": n_subtasks,
        "n_subtasks_present": len(true_sizes),
        "d": d,
        "sigma": sigma,
        "alpha": alpha,
        "true_slope": -(alpha + 1.0),
        "ks": ks,
        "affinities": transforms,
        "assign": assign,
        "n_init": n_init,
        "ranks": [lo, hi],
        "seed": seed,
    }
    return EnvelopeBias(slopes, pd.concat(tables, ignore_index=True), settings)


def _envelopes(
    transform: str,
    sizes: dict[int, np.ndarray],
    true_sizes: np.ndarray,
    ranks: tuple[int, int],
    alpha: float,
) -> tuple[list[dict[str, Any]], list[pd.DataFrame]]:
    """One affinity's slopes for every K_max (``sizes``: K → cluster sizes, descending) — the
    envelope over K ≤ K_max, the single K_max, the true sizes, each over
    ``ranks`` cut at K_max — and its rank-frequency tables (each K, then the envelope)."""
    lo, hi = ranks
    rows, tables = [], []
    envelope = np.zeros(max(sizes))
    for k_max in sorted(sizes):
        s = sizes[k_max]
        envelope[: len(s)] = np.maximum(envelope[: len(s)], s)
        window = (lo, min(hi, k_max))
        rows.append(
            {
                "affinity": transform,
                "K_max": k_max,
                "rank_low": window[0],
                "rank_high": window[1],
                "envelope_slope": window_slope(envelope[:k_max], window),
                "single_slope": window_slope(s, window),
                "truth_window_slope": window_slope(true_sizes, window),
                "true_slope": -(alpha + 1.0),
            }
        )
        tables.append(_ranked(transform, k_max, s))
    tables.append(_ranked(transform, 0, envelope))
    return rows, tables


def _ranked(what: str, k: int, sizes: np.ndarray) -> pd.DataFrame:
    sizes = sizes[sizes > 0]
    return pd.DataFrame(
        {"affinity": what, "K": k, "rank": np.arange(1, len(sizes) + 1), "size": sizes}
    )


@writes_outputs("out")
def write_envelope_bias(result: EnvelopeBias, out: str | Path) -> list[Path]:
    """Write ``envelope_bias.json``, ``slopes.parquet``, ``rank_frequency.parquet`` and
    ``envelope_bias.png`` into ``out``; returns the paths."""
    from quanta.plots import save_figure
    from quanta.qdg.toy_plots import envelope_bias_figure
    from quanta.store import write_json, write_parquet

    out = Path(out)
    slopes = result.slopes.astype(object).where(result.slopes.notna(), None)
    write_json(
        out / "envelope_bias.json",
        {"settings": result.settings, "slopes": slopes.to_dict("records")},
    )
    write_parquet(out / "slopes.parquet", result.slopes)
    write_parquet(out / "rank_frequency.parquet", result.rank_frequency)
    fig = save_figure(envelope_bias_figure(result), out / "envelope_bias.png")
    return [out / "envelope_bias.json", out / "slopes.parquet", out / "rank_frequency.parquet", fig]
