"""Planted-truth validation of QDG: run the same similarity → affinity → clustering → Zipf
pipeline where the true quanta are known.

* :func:`toy_vectors` — PAPER.md §5's toy model of clustering bias: ``n_subtasks`` with Zipf
  frequencies ``p_k ∝ k^-(α+1)``; each sample is its subtask's random unit vector in ``d``
  dimensions plus Gaussian noise of scale ``sigma`` per coordinate... scaled by 1/√d so
  ``sigma`` is the noise-to-signal norm ratio.
* :func:`parity_gradients` — per-sample gradients of a network trained on multitask sparse
  parity (the toy engine), with each sample's true subtask.
* :func:`score` — ARI, NMI and purity of labels against the truth, and the recovered vs true
  Zipf exponent of cluster sizes.
* :func:`planted_truth` — the table of ``quanta qdg validate``: :func:`compare_affinities` over
  a (d, σ) grid of toy vectors, or on the gradients of a small trained parity net.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from quanta._validation import check_choice, check_int, check_real
from quanta.store import writes_outputs

__all__ = [
    "compare_affinities",
    "parity_gradients",
    "planted_truth",
    "score",
    "toy_vectors",
    "write_planted_truth",
]

_OWNER = "quanta qdg validate"


def toy_vectors(
    n_samples: int, n_subtasks: int, d: int, sigma: float, *, alpha: float = 0.5, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """``(vectors [n, d], true subtask [n])`` of the appendix-D toy model."""
    n_samples = check_int(n_samples, "n_samples", _OWNER, low=2)
    n_subtasks = check_int(n_subtasks, "n_subtasks", _OWNER, low=2)
    d = check_int(d, "d", _OWNER, low=2)
    sigma = check_real(sigma, "sigma", _OWNER, low=0.0)
    rng = np.random.default_rng(seed)
    p = np.arange(1, n_subtasks + 1, dtype=np.float64) ** -(alpha + 1.0)
    truth = rng.choice(n_subtasks, size=n_samples, p=p / p.sum())
    centers = rng.normal(size=(n_subtasks, d))
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    noise = rng.normal(scale=sigma / np.sqrt(d), size=(n_samples, d))
    return (centers[truth] + noise).astype(np.float32), truth


def score(truth: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """ARI, NMI and purity (share of samples in their cluster's majority subtask)."""
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    table = pd.crosstab(labels, truth)
    return {
        "ari": float(adjusted_rand_score(truth, labels)),
        "nmi": float(normalized_mutual_info_score(truth, labels)),
        "purity": float(table.max(axis=1).sum() / len(truth)),
    }


def compare_affinities(
    vectors: np.ndarray,
    truth: np.ndarray,
    *,
    k: int | None = None,
    transforms: tuple[str, ...] = ("angular", "relu", "shift", "relu_norm"),
    assigns: tuple[str, ...] = ("cluster_qr", "kmeans"),
    center: bool = False,
    seed: int = 0,
) -> pd.DataFrame:
    """Scores of every affinity transform × label assigner at K = number of true subtasks
    present (or ``k``), with the Zipf exponent of recovered vs true cluster sizes."""
    from quanta.qdg.cluster import affinity, cosine_similarity, spectral_sweep, zipf_mle

    k = k or len(np.unique(truth))
    sim = cosine_similarity(vectors, center=center)
    norms = np.linalg.norm(np.asarray(vectors, dtype=np.float64), axis=1)
    true_fit = zipf_mle(np.bincount(truth), bootstrap=0)
    rows = []
    for transform in transforms:
        a = affinity(sim, transform, norms=norms)
        for assign in assigns:
            labels = spectral_sweep(a, [k], assign=assign, seed=seed)[k]
            fit = zipf_mle(np.bincount(labels), bootstrap=0)
            rows.append(
                {
                    "affinity": transform,
                    "assign": assign,
                    "K": k,
                    **score(truth, labels),
                    "zipf_recovered": fit["exponent"],
                    "zipf_true": true_fit["exponent"],
                }
            )
    return pd.DataFrame(rows)


def parity_gradients(
    cfg: Any, *, n_samples: int = 600, member: int = -1, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Train ``cfg`` (a :class:`quanta.parity.ParityConfig`) and return per-sample gradients
    of one member's loss (default: the widest) on ``n_samples`` fresh samples drawn from the
    task's Zipf mixture (so the true cluster sizes follow the Zipf law), sorted by subtask,
    with each sample's true subtask. Gradients are of all weights and biases."""
    import torch
    from torch.func import functional_call, grad, vmap

    from quanta.parity import train_parity

    result = train_parity(cfg)
    net = result.model.member_modules()[member]
    task = cfg.make_task()
    gen = torch.Generator().manual_seed(seed)
    batch = task.sample_compact(check_int(n_samples, "n_samples", _OWNER, low=2), generator=gen)
    batch = batch.select(torch.argsort(batch.task, stable=True))
    x, y, t = batch.dense(task.n_tasks), batch.y, batch.task
    params = {k: v.detach() for k, v in net.named_parameters()}

    def loss(p: dict[str, Any], xi: Any, yi: Any) -> Any:
        out = functional_call(net, p, (xi[None],))
        return torch.nn.functional.cross_entropy(out, yi[None])

    per_sample = vmap(grad(loss), in_dims=(None, 0, 0))(params, x.float(), y.long())
    g = torch.cat([v.reshape(len(x), -1) for v in per_sample.values()], dim=1)
    return g.numpy(), t.numpy()


def planted_truth(
    source: str = "toy",
    *,
    samples: int = 3000,
    subtasks: int = 100,
    alpha: float = 0.5,
    dims: Sequence[int] = (1000,),
    sigmas: Sequence[float] = (2.0,),
    parity_samples: int = 600,
    center: bool = False,
    seed: int = 0,
) -> pd.DataFrame:
    """Every affinity × assigner scored where the true quanta are known (``quanta qdg
    validate``).

    ``source="toy"``: :func:`toy_vectors` of ``samples`` samples from ``subtasks`` Zipf(α)
    subtasks for every dimension ``d`` of ``dims`` × noise ``σ`` of ``sigmas`` (columns ``d``,
    ``sigma`` added). ``source="parity"``: :func:`parity_gradients` of ``parity_samples``
    samples of a small sparse-parity net (20 subtasks, 12 bits, width 128, 3,000 steps)
    trained with ``seed``. One row per (setting ×) affinity × assigner, as
    :func:`compare_affinities`.
    """
    check_choice(source, "source", _OWNER, ["toy", "parity"])
    if source == "parity":
        from quanta.parity import ParityConfig

        cfg = ParityConfig(
            n_tasks=20,
            n_bits=12,
            widths=(128,),
            steps=3000,
            batch_size=500,
            test_per_task=50,
            eval_points=5,
            seed=seed,
        )
        g, truth = parity_gradients(cfg, n_samples=parity_samples, seed=seed)
        return pd.concat(
            [compare_affinities(g, truth, center=center, seed=seed)], ignore_index=True
        )
    frames = []
    for d in dims:
        for sigma in sigmas:
            v, truth = toy_vectors(samples, subtasks, d, sigma, alpha=alpha, seed=seed)
            frames.append(
                compare_affinities(v, truth, center=center, seed=seed).assign(d=d, sigma=sigma)
            )
    return pd.concat(frames, ignore_index=True)


@writes_outputs("out")
def write_planted_truth(table: pd.DataFrame, out: str | Path) -> Path:
    """Write the table of :func:`planted_truth` as ``out/validate.parquet``, recorded in its
    ``outputs.json``; returns the path."""
    from quanta.store import write_parquet

    path = Path(out) / "validate.parquet"
    write_parquet(path, table)
    return path
