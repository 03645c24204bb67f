"""QDG steps 3–5 (PAPER.md §4): similarity → affinity → spectral clustering over many K →
Zipf law of cluster sizes.

* :func:`cosine_similarity` — blockwise ``Ĝ Ĝᵀ`` of row-normalized gradients read from a
  (memory-mapped) array, optionally centered first (real gradients share a common direction);
  :func:`cosine_from_gram` — the same cosines from a Gram matrix ``G Gᵀ`` (the exact
  similarities of :func:`quanta.qdg.grads.exact_gram`, whose rows are never stored).
* :func:`affinity` — an explicit transform of cosine C, recorded by name: ``angular``
  1 − arccos(C)/π (the paper's; C clipped to [−1, 1] first), ``relu`` max(C, 0), ``shift``
  (1 + C)/2, ``relu_norm`` relu(C)·|g_i||g_j| (norm-weighted); checked symmetric, finite and
  non-negative.
* :func:`spectral_sweep` — the spectral embedding is computed **once** for the largest K
  (scikit-learn's ``spectral_embedding``, the same call ``SpectralClustering`` makes) and its
  leading K columns are labelled for every K (``kmeans`` with ``n_init``, :func:`cluster_qr` or
  :func:`discretize`), instead of recomputing everything per K.
* :func:`cluster_qr`, :func:`discretize` — the two non-k-means assigners of scikit-learn's
  ``SpectralClustering``, owned here (scikit-learn keeps them in a private module); they give
  the same labels as scikit-learn's on the same embedding (tested).
* :func:`zipf_mle` — the exponent s of cluster sizes ∝ rank^−s by discrete maximum likelihood
  over ranks 1…K with a bootstrap CI; :func:`rank_frequency` and the envelope over K, and
  :func:`envelope_slope` — the paper's log-log OLS on the envelope, for comparison.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from quanta._validation import QuantaInputError, check_choice, check_int

__all__ = [
    "AFFINITIES",
    "KNN_AFFINITIES",
    "affinity",
    "cluster_qr",
    "cosine_from_gram",
    "cosine_similarity",
    "discretize",
    "envelope_slope",
    "knn_affinity",
    "rank_frequency",
    "spectral_sweep",
    "zipf_mle",
]

_OWNER = "quanta qdg cluster"
AFFINITIES = ("angular", "relu", "shift", "relu_norm")
# ``relu_norm`` weights each pair by both gradient norms, which only the dense affinity computes.
KNN_AFFINITIES = ("angular", "relu", "shift")


def cosine_similarity(g: np.ndarray, *, center: bool = False, block: int = 2048) -> np.ndarray:
    """``C[i, j] = cos(g_i, g_j)`` as float32 [n, n], computed ``block`` rows at a time."""
    n = len(g)
    mean = np.zeros(g.shape[1])
    if center:
        for i in range(0, n, block):
            mean += np.asarray(g[i : i + block], dtype=np.float64).sum(axis=0)
        mean /= n
    unit = np.empty(g.shape, dtype=np.float32)
    for i in range(0, n, block):
        rows = np.asarray(g[i : i + block], dtype=np.float64) - mean
        norms = np.linalg.norm(rows, axis=1, keepdims=True)
        if not np.all(np.isfinite(rows)) or np.any(norms == 0):
            raise QuantaInputError(
                "Gradients hold NaN/Inf or zero vectors; cosine similarity is undefined."
            )
        unit[i : i + block] = rows / norms
    sim = np.empty((n, n), dtype=np.float32)
    for i in range(0, n, block):
        sim[i : i + block] = unit[i : i + block] @ unit.T
    return sim


def cosine_from_gram(gram: np.ndarray, *, center: bool = False) -> np.ndarray:
    """``C[i, j] = cos(g_i, g_j)`` as float32 [n, n] from the Gram matrix ``G = X Xᵀ``.

    The same cosines :func:`cosine_similarity` computes from the rows ``X``: centering
    (subtracting the mean row) is ``H G H`` with ``H = I − 11ᵀ/n``, done as
    ``G − r1ᵀ − 1rᵀ + m`` (``r`` the row means, ``m`` the grand mean); normalizing divides by
    ``√(G_ii G_jj)`` of the (centered) diagonal — the squared norms. Arithmetic in float64.

    >>> x = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]])
    >>> np.allclose(cosine_from_gram(x @ x.T), cosine_similarity(x), atol=1e-7)
    True
    """
    g = np.array(gram, dtype=np.float64)  # a copy: the caller's matrix is not changed
    if g.ndim != 2 or g.shape[0] != g.shape[1]:
        raise QuantaInputError(f"A Gram matrix must be square; got shape {g.shape}.")
    if center:  # in place: n = 10,000 makes every n × n float64 temporary 800 MB
        r, m = g.mean(axis=1), g.mean()
        g -= r[:, None]
        g -= r[None, :]
        g += m
    d = np.diag(g).copy()
    if not np.all(np.isfinite(g)) or np.any(d <= 0):
        raise QuantaInputError(
            "Gradients hold NaN/Inf or zero vectors; cosine similarity is undefined."
        )
    s = 1.0 / np.sqrt(d)
    g *= s[:, None]
    g *= s[None, :]
    return g.astype(np.float32)


def _transform(sim: np.ndarray, transform: str) -> np.ndarray:
    """angular, relu or shift of cosine similarities (clipped to [-1, 1] first)."""
    c = np.clip(sim, -1.0, 1.0)
    if transform == "angular":
        return 1.0 - np.arccos(c) / np.pi
    if transform == "relu":
        return np.maximum(c, 0.0)
    return (1.0 + c) / 2.0


def affinity(
    sim: np.ndarray,
    transform: str = "angular",
    *,
    diagonal: float | None = None,
    norms: np.ndarray | None = None,
) -> np.ndarray:
    """Affinity from cosine similarity (see the module docstring); ``diagonal`` overwrites
    the diagonal (``None`` keeps the transform's value). ``relu_norm`` is the |G|·|G| variant:
    relu(C)·|g_i|·|g_j| / max|g|², weighting pairs of large gradients (needs ``norms``)."""
    transform = check_choice(transform, "affinity", _OWNER, list(AFFINITIES))
    a = _transform(sim, "relu" if transform == "relu_norm" else transform)
    if transform == "relu_norm":
        if norms is None or len(norms) != len(sim):
            raise QuantaInputError("The relu_norm affinity needs one gradient norm per sample.")
        scale = np.asarray(norms, dtype=np.float64) / float(np.max(norms))
        a = a * np.outer(scale, scale)
    a = a.astype(np.float32, copy=False)
    if diagonal is not None:
        np.fill_diagonal(a, diagonal)
    if not np.all(np.isfinite(a)):
        raise QuantaInputError("The affinity matrix holds NaN/Inf.")
    if a.min() < 0:
        raise QuantaInputError("The affinity matrix has negative entries.")
    if not np.allclose(a, a.T, atol=1e-5):
        raise QuantaInputError("The affinity matrix is not symmetric.")
    return (a + a.T) / 2  # exact symmetry (float32 products differ in the last bit)


def knn_affinity(
    g: np.ndarray,
    *,
    n_neighbors: int = 30,
    transform: str = "relu",
    center: bool = False,
    block: int = 2048,
) -> Any:
    """Sparse affinity for large n: each sample keeps its ``n_neighbors`` most cosine-similar
    samples (transformed as in :func:`affinity`), symmetrized by the maximum — memory
    O(n · n_neighbors) instead of O(n²). Rows are compared a block at a time."""
    from scipy import sparse

    transform = check_choice(transform, "affinity", _OWNER, list(KNN_AFFINITIES))
    n = len(g)
    n_neighbors = check_int(n_neighbors, "n_neighbors", _OWNER, low=1, high=max(n - 1, 1))
    mean = np.asarray(g, dtype=np.float64).mean(axis=0) if center else 0.0
    unit = np.asarray(g, dtype=np.float64) - mean
    norms = np.linalg.norm(unit, axis=1, keepdims=True)
    if not np.all(np.isfinite(unit)) or np.any(norms == 0):
        raise QuantaInputError("Gradients hold NaN/Inf or zero vectors; cosine is undefined.")
    unit = (unit / norms).astype(np.float32)
    rows, cols, vals = [], [], []
    for i in range(0, n, block):
        sim = unit[i : i + block] @ unit.T
        idx = np.arange(i, min(i + block, n))
        sim[np.arange(len(idx)), idx] = -np.inf  # not its own neighbour
        nb = np.argpartition(-sim, n_neighbors, axis=1)[:, :n_neighbors]
        rows.append(np.repeat(idx, n_neighbors))
        cols.append(nb.ravel())
        vals.append(np.take_along_axis(sim, nb, axis=1).ravel())
    a = _transform(np.concatenate(vals), transform)
    m = sparse.csr_matrix((a, (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
    return m.maximum(m.T).tocsr()


def spectral_sweep(
    aff: Any,
    ks: Sequence[int],
    *,
    assign: str = "kmeans",
    n_init: int = 10,
    eigen_solver: str | None = None,
    seed: int = 0,
) -> dict[int, np.ndarray]:
    """Labels for every K in ``ks`` from one spectral embedding of the precomputed affinity
    ``aff`` (dense or sparse, symmetric, non-negative)."""
    from sklearn.cluster import KMeans
    from sklearn.manifold import spectral_embedding

    assign = check_choice(assign, "assign", _OWNER, ["kmeans", "cluster_qr", "discretize"])
    n = aff.shape[0]
    ks = sorted({check_int(k, "K", _OWNER, low=2) for k in ks})
    if not ks:
        raise QuantaInputError("No cluster count K given.")
    if ks[-1] > n:
        raise QuantaInputError(f"K = {ks[-1]} exceeds the number of samples ({n}).")
    maps = spectral_embedding(
        aff, n_components=ks[-1], eigen_solver=eigen_solver, random_state=seed, drop_first=False
    )
    # cluster_qr and discretize are owned (below), not imported from scikit-learn's private
    # module, which may change or vanish in any release without a deprecation, and labels
    # recorded under an assigner's name must stay reproducible. Tests pin both to scikit-learn.
    out = {}
    for k in ks:
        emb = maps[:, :k]
        if assign == "kmeans":
            labels = KMeans(k, n_init=n_init, random_state=seed).fit_predict(emb)
        elif assign == "cluster_qr":
            labels = cluster_qr(emb)
        else:
            labels = discretize(emb, seed=seed)
        out[k] = np.asarray(labels, dtype=np.int32)
    return out


def cluster_qr(vectors: np.ndarray) -> np.ndarray:
    """Labels from a spectral embedding by column-pivoted QR (Damle, Minden & Ying 2019).

    The K pivots of a QR with column pivoting of ``vectorsᵀ`` are the K samples whose embedded
    rows are the most linearly independent, one per cluster when the clusters are separated.
    The orthogonal factor ``U Vᵀ`` of those K rows (their polar factor, from an SVD) rotates the
    embedding so that each cluster lies along one axis; a sample's label is the axis it is
    closest to. Deterministic: no seed, no restarts. The same algorithm as scikit-learn's
    ``SpectralClustering(assign_labels="cluster_qr")``.

    Parameters
    ----------
    vectors : ndarray of shape (n, K)
        The spectral embedding (``n`` samples, ``K`` clusters).

    Returns
    -------
    ndarray of int, shape (n,)
        Cluster labels in ``0 … K-1``.

    References
    ----------
    A. Damle, V. Minden, L. Ying, "Simple, direct and efficient multi-way spectral
    clustering", Information and Inference 8(1), 2019. doi:10.1093/imaiai/iay008.

    Examples
    --------
    >>> v = np.array([[1.0, 0.1], [0.9, -0.1], [0.1, 1.0], [-0.1, 0.8]])
    >>> cluster_qr(v).tolist()
    [0, 0, 1, 1]
    """
    from scipy.linalg import qr, svd

    v = np.asarray(vectors)
    k = v.shape[1]
    _, piv = qr(v.T, mode="r", pivoting=True)  # only the pivots are needed, not Q
    u, _, vt = svd(v[piv[:k]].T)  # (K, K)
    return np.abs(v @ (u @ vt).conj()).argmax(axis=1)


def discretize(
    vectors: np.ndarray, *, seed: int = 0, max_restarts: int = 30, max_iter: int = 20
) -> np.ndarray:
    """Labels from a spectral embedding by Yu & Shi's (2003) discretization.

    The embedding's columns are scaled to norm √n and its rows to the unit sphere; then a
    partition matrix X and a rotation R are alternated: X = the one-hot argmax of the rotated
    rows, R = the orthogonal Procrustes solution mapping the rows onto X, until the relaxed
    normalized-cut value stops changing (or after ``max_iter`` rounds). R starts from a random
    row (``seed``) and then, greedily, the rows most orthogonal to those already taken.
    The random draws are those of scikit-learn's ``discretize`` (a legacy ``RandomState``), so
    the same embedding and seed give the same labels as scikit-learn.

    Parameters
    ----------
    vectors : ndarray of shape (n, K)
        The spectral embedding (``n`` samples, ``K`` clusters); not modified.
    seed : int, default 0
        Seed of the first row of the initial rotation.
    max_restarts : int, default 30
        New random starts allowed when an SVD does not converge.
    max_iter : int, default 20
        Rounds of the alternation before it stops anyway.

    Returns
    -------
    ndarray of int, shape (n,)
        Cluster labels in ``0 … K-1``.

    References
    ----------
    S. X. Yu, J. Shi, "Multiclass spectral clustering", ICCV 2003.

    Examples
    --------
    >>> v = np.array([[1.0, 0.1], [0.9, -0.1], [0.1, 1.0], [-0.1, 0.8]])
    >>> labels = discretize(v, seed=0)
    >>> bool(labels[0] == labels[1] != labels[2] == labels[3])
    True
    """
    from scipy import sparse

    max_restarts = check_int(max_restarts, "max_restarts", "discretize", low=1)
    max_iter = check_int(max_iter, "max_iter", "discretize", low=1)
    rng = np.random.RandomState(seed)
    x = np.array(vectors, dtype=np.float64)  # (n, K), a copy
    n, k = x.shape
    # The operations (and their order) follow Yu & Shi as scikit-learn writes them, so that
    # rounding, and with it every argmax, is the same as in scikit-learn.
    col_norms = np.array([np.linalg.norm(col) for col in x.T])  # per column: BLAS dot rounding
    x = x / col_norms * np.sqrt(n)
    x = x * np.where(x[0] != 0, -np.sign(x[0]), 1.0)  # each column starts ≤ 0
    x = x / np.sqrt((x**2).sum(axis=1))[:, None]
    for _ in range(max_restarts):
        rot = np.zeros((k, k))
        rot[:, 0] = x[rng.randint(n)]
        far = np.zeros(n)
        for j in range(1, k):
            far += np.abs(x @ rot[:, j - 1])
            rot[:, j] = x[far.argmin()]
        ncut_before = 0.0
        for step in range(1, max_iter + 2):
            labels = (x @ rot).argmax(axis=1)
            onehot = sparse.csc_array((np.ones(n), (np.arange(n), labels)), shape=(n, k))
            sums = onehot.T @ x  # (K, K): the sum of each cluster's rows
            try:
                u, s, vt = np.linalg.svd(sums)
            except np.linalg.LinAlgError:
                break  # a fresh random start
            ncut = 2.0 * (n - s.sum())
            if abs(ncut - ncut_before) < np.finfo(float).eps or step > max_iter:
                return labels
            ncut_before = ncut
            rot = vt.T @ u.T
    raise np.linalg.LinAlgError(
        f"discretize: the SVD did not converge in {max_restarts} random starts."
    )


def rank_frequency(labels: dict[int, np.ndarray]) -> pd.DataFrame:
    """Cluster sizes sorted descending vs rank for every K, plus the envelope (``K = 0``:
    the largest size at each rank over all K)."""
    rows = []
    for k, lab in labels.items():
        sizes = np.sort(np.bincount(lab))[::-1]
        sizes = sizes[sizes > 0]
        rows.append(pd.DataFrame({"K": k, "rank": np.arange(1, len(sizes) + 1), "size": sizes}))
    table = pd.concat(rows, ignore_index=True)
    env = table.groupby("rank")["size"].max().reset_index().assign(K=0)
    return pd.concat([table, env[["K", "rank", "size"]]], ignore_index=True)


def zipf_mle(
    sizes: np.ndarray,
    *,
    bootstrap: int = 200,
    seed: int = 0,
    bounds: tuple[float, float] = (0.01, 6.0),
) -> dict[str, Any]:
    """Exponent s of ``size(rank) ∝ rank^-s`` by discrete maximum likelihood.

    The samples are treated as draws over ranks 1…K (K = number of clusters) from
    ``p(r) = r^-s / H(K, s)``; the log-likelihood ``-s Σ_r c_r ln r − N ln H(K, s)`` is maximized
    over ``bounds``. The CI is a basic bootstrap interval from a parametric bootstrap
    (multinomial redraws from the fit, re-sorted like the data), which also gives the
    estimator's ``bias`` at this sample size (large when clusters hold few samples each).
    Ending on a bound is reported, not returned as a number.
    """
    from scipy.optimize import minimize_scalar

    counts = np.sort(np.asarray(sizes, dtype=np.float64))[::-1]
    counts = counts[counts > 0]
    if len(counts) < 2 or counts.sum() < 10:
        raise QuantaInputError(
            f"A Zipf fit needs ≥ 2 clusters and ≥ 10 samples; got {len(counts)} and "
            f"{int(counts.sum())}."
        )
    log_r = np.log(np.arange(1, len(counts) + 1))

    def fit(c: np.ndarray) -> float:
        n = c.sum()

        def nll(s: float) -> float:
            return float(s * (c * log_r).sum() + n * np.log(np.exp(-s * log_r).sum()))

        res = minimize_scalar(nll, bounds=bounds, method="bounded", options={"xatol": 1e-6})
        return float(res.x)

    s = fit(counts)
    on_bound = min(abs(s - bounds[0]), abs(s - bounds[1])) < 1e-3
    ci, bias = None, None
    if bootstrap and not on_bound:
        rng = np.random.default_rng(seed)
        p = np.exp(-s * log_r)
        p /= p.sum()
        draws = rng.multinomial(int(counts.sum()), p, size=bootstrap)
        boot = np.array([fit(np.sort(d)[::-1]) for d in draws])
        # Basic (pivotal) interval: the estimator is biased when clusters hold few samples
        # (sorting small counts), and the pivot carries that bias over to the interval.
        bias = float(boot.mean() - s)
        lo_q, hi_q = np.percentile(boot, [2.5, 97.5])
        ci = (float(2 * s - hi_q), float(2 * s - lo_q))
    return {
        "exponent": None if on_bound else s,
        "ci": ci,
        "bias": bias,
        "exponent_corrected": None if bias is None or on_bound else s - bias,
        "success": not on_bound,
        "message": "ok" if not on_bound else f"exponent ended on a bound of {bounds}",
        "n_clusters": len(counts),
        "n_samples": int(counts.sum()),
    }


def envelope_slope(table: pd.DataFrame, ranks: tuple[int, int] = (101, 1000)) -> float:
    """The paper's estimate: OLS slope of log size vs log rank of the envelope (``K = 0`` rows
    of :func:`rank_frequency`) over ``ranks``."""
    env = table[(table["K"] == 0) & table["rank"].between(*ranks)]
    if len(env) < 2:
        raise QuantaInputError(
            f"The envelope has {len(env)} ranks in {ranks}; choose a range inside 1…"
            f"{int(table['rank'].max())}."
        )
    return float(np.polyfit(np.log(env["rank"]), np.log(env["size"]), 1)[0])
