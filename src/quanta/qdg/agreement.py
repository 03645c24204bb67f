"""How much two clusterings of the same samples agree — with the numbers that say what a value
means: its null and its ceiling (the universality of quanta, issue 20).

* :func:`match_clusters` — clusters matched one-to-one by the Hungarian algorithm
  (``scipy.optimize.linear_sum_assignment``) on their Jaccard index
  ``|A ∩ B| / |A ∪ B|``; a cluster is *found* in the other clustering when its partner's
  Jaccard is at least ``threshold``.
* :func:`agreement` — ARI and NMI (``sklearn.metrics``), the share of each side's clusters
  found in the other, and the mean Jaccard of the matched pairs.
* :func:`null_agreement` — the same numbers for ``b``'s labels permuted over the samples
  (``n_permutations`` seeded draws): the cluster sizes are kept, any relation to ``a`` is not.
  Reported as the mean and the central 95% range.
* :func:`random_init_null` — a trained side of the pair replaced by an untrained model of the
  same architecture on the same samples (its clustering's labels): per metric the highest
  agreement, what the samples and the architecture give before any learning.
* :func:`ceiling_agreement` — the same model clustered twice: the affinity of a run is
  re-clustered on random subsamples of its samples (``fraction``, without replacement) with
  other seeds (k-means restarts, the spectral embedding's start), each compared to the run's
  own labels on the same samples. Two models cannot be expected to agree more than one model
  agrees with itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from quanta._validation import QuantaInputError, check_int, check_real

__all__ = [
    "METRICS",
    "agreement",
    "ceiling_agreement",
    "match_clusters",
    "normalized",
    "null_agreement",
    "random_init_null",
]

_OWNER = "quanta qdg compare"
METRICS = ("ari", "nmi", "share_a", "share_b", "mean_jaccard")


def _as_labels(a: Any, b: Any) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a), np.asarray(b)
    if a.ndim != 1 or a.shape != b.shape or len(a) < 2:
        raise QuantaInputError(
            f"Two clusterings are compared on the same samples: got {a.shape} and {b.shape} "
            "labels (one label per sample, at least 2 samples)."
        )
    return a, b


def match_clusters(a: Any, b: Any, *, threshold: float = 0.5) -> pd.DataFrame:
    """One row per cluster pair matched one-to-one on Jaccard (the Hungarian algorithm,
    maximizing the total Jaccard): ``cluster_a``, ``cluster_b``, ``size_a``, ``size_b``,
    ``overlap`` (samples in both), ``jaccard`` and ``found`` (jaccard ≥ ``threshold``),
    sorted by ``size_a`` (largest first). Only non-empty clusters take part; with unequal
    cluster counts the extra clusters of the larger side stay unmatched.

    >>> match_clusters([0, 0, 1, 1, 2], [5, 5, 7, 7, 7])[["cluster_a", "cluster_b", "jaccard"]]
       cluster_a  cluster_b   jaccard
    0          0          5  1.000000
    1          1          7  0.666667
    """
    from scipy.optimize import linear_sum_assignment
    from sklearn.metrics.cluster import contingency_matrix

    a, b = _as_labels(a, b)
    threshold = check_real(threshold, "threshold", _OWNER, low=0.0, high=1.0, low_open=True)
    ids_a, inv_a = np.unique(a, return_inverse=True)
    ids_b, inv_b = np.unique(b, return_inverse=True)
    overlap = contingency_matrix(inv_a, inv_b)  # (clusters of a, clusters of b)
    size_a, size_b = overlap.sum(axis=1), overlap.sum(axis=0)
    jaccard = overlap / (size_a[:, None] + size_b[None, :] - overlap)
    rows, cols = linear_sum_assignment(jaccard, maximize=True)
    table = pd.DataFrame(
        {
            "cluster_a": ids_a[rows],
            "cluster_b": ids_b[cols],
            "size_a": size_a[rows],
            "size_b": size_b[cols],
            "overlap": overlap[rows, cols],
            "jaccard": jaccard[rows, cols],
        }
    )
    table["found"] = table["jaccard"] >= threshold
    return table.sort_values(["size_a", "cluster_a"], ascending=[False, True], kind="stable")


def agreement(a: Any, b: Any, *, threshold: float = 0.5) -> dict[str, float]:
    """ARI, NMI, the shares of ``a``'s and of ``b``'s non-empty clusters found in the other
    (one-to-one, Jaccard ≥ ``threshold``) and the mean Jaccard of the matched pairs.

    >>> r = agreement([0, 0, 1, 1], [1, 1, 0, 0])
    >>> [round(r[m], 3) for m in METRICS]
    [1.0, 1.0, 1.0, 1.0, 1.0]
    """
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    a, b = _as_labels(a, b)
    matched = match_clusters(a, b, threshold=threshold)
    found = int(matched["found"].sum())
    return {
        "ari": float(adjusted_rand_score(a, b)),
        "nmi": float(normalized_mutual_info_score(a, b)),
        "share_a": found / len(np.unique(a)),
        "share_b": found / len(np.unique(b)),
        "mean_jaccard": float(matched["jaccard"].mean()),
    }


def _summary(values: Sequence[dict[str, float]]) -> dict[str, dict[str, float]]:
    """Per metric: the mean and the central 95% range (2.5th, 97.5th percentiles)."""
    out = {}
    for m in METRICS:
        v = np.array([r[m] for r in values], dtype=np.float64)
        lo, hi = np.percentile(v, [2.5, 97.5])
        out[m] = {"mean": float(v.mean()), "low": float(lo), "high": float(hi)}
    return out


def null_agreement(
    a: Any, b: Any, *, n_permutations: int = 100, threshold: float = 0.5, seed: int = 0
) -> dict[str, dict[str, float]]:
    """:func:`agreement` of ``a`` with ``b``'s labels randomly permuted over the samples
    (sizes kept), ``n_permutations`` seeded draws: per metric ``{"mean", "low", "high"}``
    (``low``/``high``: the central 95% range)."""
    a, b = _as_labels(a, b)
    n_permutations = check_int(n_permutations, "n_permutations", _OWNER, low=2)
    rng = np.random.default_rng(seed)
    return _summary(
        [agreement(a, rng.permutation(b), threshold=threshold) for _ in range(n_permutations)]
    )


def random_init_null(
    a: Any,
    b: Any,
    untrained: Sequence[Any],
    *,
    threshold: float = 0.5,
    trained: tuple[bool, bool] = (True, True),
) -> dict[str, float] | None:
    """Per metric, the highest :func:`agreement` of the pair with one trained side replaced by
    an untrained model's labels ``u`` (each of ``untrained``): ``agreement(u, b)`` for ``a``,
    ``agreement(a, u)`` for ``b`` — each side's ``share_*`` keeps its place. ``trained`` says
    which sides are models (the true subtasks are never replaced). ``None`` with no
    untrained labels.

    >>> r = random_init_null([0, 0, 1, 1], [0, 0, 1, 1], [[0, 1, 0, 1]])
    >>> round(r["ari"], 2), r["share_a"]
    (-0.5, 0.0)
    """
    best: dict[str, float] = {}
    for u in untrained:
        found = [agreement(u, b, threshold=threshold)] if trained[0] else []
        if trained[1]:
            found.append(agreement(a, u, threshold=threshold))
        for f in found:
            best = {m: max(best.get(m, -np.inf), f[m]) for m in METRICS}
    return best or None


def ceiling_agreement(
    aff: Any,
    labels: dict[int, np.ndarray],
    *,
    assign: str = "cluster_qr",
    n_init: int = 10,
    replicas: int = 5,
    fraction: float = 0.8,
    threshold: float = 0.5,
    seed: int = 0,
) -> dict[int, dict[str, dict[str, float]]]:
    """The same model clustered twice (module docstring): per K of ``labels`` (a run's labels
    for every K, from ``aff``), ``replicas`` re-clusterings of ``aff`` restricted to a random
    ``fraction`` of the samples, with seeds ``seed + 1 …``, each scored by :func:`agreement`
    against ``labels[K]`` on those samples. Per K and metric: ``{"mean", "low", "high"}``.

    ``aff`` is the run's affinity (dense or sparse, n × n); ``assign`` and ``n_init`` are the
    run's label assigner and k-means restarts.
    """
    from quanta.qdg.cluster import spectral_sweep

    replicas = check_int(replicas, "replicas", _OWNER, low=2)
    fraction = check_real(fraction, "fraction", _OWNER, low=0.0, high=1.0, low_open=True)
    n = aff.shape[0]
    ks = sorted(labels)
    keep = round(fraction * n)
    if keep <= ks[-1]:
        raise QuantaInputError(
            f"A ceiling subsample of {keep} of {n} samples cannot hold K = {ks[-1]} clusters; "
            "raise --fraction or compare a smaller K."
        )
    rng = np.random.default_rng(seed)
    scores: dict[int, list[dict[str, float]]] = {k: [] for k in ks}
    for r in range(replicas):
        idx = np.sort(rng.choice(n, size=keep, replace=False))
        sub = aff[idx][:, idx]
        again = spectral_sweep(sub, ks, assign=assign, n_init=n_init, seed=seed + 1 + r)
        for k in ks:
            scores[k].append(agreement(labels[k][idx], again[k], threshold=threshold))
    return {k: _summary(v) for k, v in scores.items()}


def normalized(
    observed: dict[str, float],
    null: dict[str, dict[str, float]],
    ceiling: dict[str, float] | None,
) -> dict[str, float | None] | None:
    """Per metric, where the observed value sits between its null mean (0) and its ceiling
    (1): ``(observed − null) / (ceiling − null)``; ``None`` where the ceiling is not above the
    null (nothing to scale by) or unknown.

    >>> normalized({"ari": 0.5}, {"ari": {"mean": 0.0}}, {"ari": 0.8})
    {'ari': 0.625}
    """
    if ceiling is None:
        return None
    out: dict[str, float | None] = {}
    for m, value in observed.items():
        span = ceiling[m] - null[m]["mean"]
        out[m] = (value - null[m]["mean"]) / span if span > 1e-9 else None
    return out
