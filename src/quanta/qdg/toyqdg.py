"""QDG on a trained sparse-parity network — the paper's appendix D.1 at its own setting.

PAPER.md §5: QDG on multitask sparse parity, a width-500 network at ≈ 0 loss; samples of one
subtask have higher angular similarity, yet the rank-frequency of the clusters did not recover
the Zipf law. Here the network is the member nearest ``width`` (500) of a finished
``quanta parity train`` run (the paper preset's run holds width 500 itself; the cpu run's widest
is 512), so nothing is retrained. The pipeline is the QDG library's, on the true quanta:

1. draw ``n_samples`` fresh samples from the run's own task (Zipf mixture, seeded) and keep
   those the member predicts with loss below ``threshold`` nats (QDG's step 1);
2. per-sample gradients of all weights and biases (``torch.func``: one ``vmap`` of ``grad``,
   on the run's device);
3. :func:`quanta.qdg.cluster.cosine_similarity` → :func:`~quanta.qdg.cluster.affinity` →
   :func:`~quanta.qdg.cluster.spectral_sweep` for every K;
4. rank-frequency of the clusters (and the envelope over K) next to the true subtask counts of
   the same samples, with ARI/NMI/purity per K and Zipf MLE exponents of both.

Memory: gradients are ``n × P`` float32, twice (raw and unit-normalized): at the paper's
setting (P = 603·500 + 1,002 = 302,502; 10,000 samples) 12 GB each.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from quanta._validation import QuantaInputError, check_int, check_real
from quanta.store import writes_outputs

__all__ = ["ToyQDG", "load_member", "member_gradients", "parity_qdg", "write_parity_qdg"]

_OWNER = "quanta qdg parity"


@dataclass
class ToyQDG:
    """What :func:`parity_qdg` found.

    ``scores``: one row per K (ARI, NMI, purity, Zipf MLE of cluster sizes and of the true
    subtask counts); ``rank_frequency``: ``kind`` ∈ {clusters, envelope, truth} × rank → size
    (clusters per K; the envelope over K; the true subtask counts of the same samples);
    ``settings``: the run, member, selection counts and options.
    """

    scores: pd.DataFrame
    rank_frequency: pd.DataFrame
    settings: dict[str, Any]


def load_member(
    run_dir: str | Path, width: int = 500, *, init_seed: int | None = None
) -> tuple[Any, Any, dict[str, Any]]:
    """The member nearest ``width`` of a finished parity run: ``(nn.Sequential, config, info)``.

    Among members of equal width the smallest init seed is taken, or ``init_seed`` (refused
    when the run has no member of that seed).
    """
    from quanta._tensorfile import load_tree, refuse_pickle
    from quanta.config import build_config
    from quanta.parity.config import ParityConfig
    from quanta.parity.model import FusedParityMLP
    from quanta.parity.run import MODEL, OLD_MODEL
    from quanta.store import read_result

    run_dir = Path(run_dir)
    manifest = read_result(run_dir, ("parity.train",), "'quanta parity train'")
    if not (run_dir / MODEL).is_file():
        refuse_pickle(
            run_dir / OLD_MODEL,
            "a model file",
            "train it again with 'quanta parity train' into a new --out directory",
        )
    if not (run_dir / MODEL).is_file():
        raise QuantaInputError(
            f"'{run_dir}' holds no finished parity run (no {MODEL}); finish 'quanta parity "
            "train' first."
        )
    cfg = build_config(ParityConfig, layers=[("the run's manifest", manifest["config"])])
    saved = load_tree(run_dir / MODEL)
    members = pd.DataFrame(saved["members"])
    fused = FusedParityMLP(
        cfg.n_tasks,
        cfg.n_bits,
        members["width"].tolist(),
        init_seeds=members["seed"].tolist(),
    )
    fused.load_state_dict(saved["state_dict"])
    if init_seed is not None:
        if init_seed not in set(members["seed"]):
            seeds = ", ".join(str(v) for v in sorted(set(members["seed"])))
            raise QuantaInputError(
                f"Parity run '{run_dir}' has no member of init seed {init_seed}; it has {seeds}."
            )
        members = members[members["seed"] == init_seed]
    order = members.assign(gap=(members["width"] - width).abs()).sort_values(["gap", "seed"])
    index = int(order.index[0])
    row = order.iloc[0]  # its index is the member's place in the fused net
    info = {
        "member": index,
        "width": int(row["width"]),
        "init_seed": int(row["seed"]),
        "n_params": int(row["n_params"]),
    }
    return fused.member_modules()[index], cfg, info


def member_gradients(
    net: Any, x: Any, y: Any, *, chunk: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample gradients of the cross-entropy (nats) of ``net`` on ``x [n, d_in]``,
    ``y [n]``: ``(gradients float32 [n, P], losses float64 [n])``, computed on the device of
    ``net``'s parameters, ``chunk`` samples per ``vmap``. P counts every weight and bias."""
    import torch
    from torch.func import functional_call, grad, vmap

    params = {k: v.detach() for k, v in net.named_parameters()}
    device = next(iter(params.values())).device

    def loss(p: dict[str, Any], xi: Any, yi: Any) -> Any:
        out = functional_call(net, p, (xi[None],))
        return torch.nn.functional.cross_entropy(out, yi[None])

    per_sample = vmap(grad(loss), in_dims=(None, 0, 0))
    grads, losses = [], []
    with torch.no_grad():
        for i in range(0, len(x), chunk):
            xb = x[i : i + chunk].to(device=device, dtype=torch.float32)
            yb = y[i : i + chunk].to(device=device, dtype=torch.long)
            g = per_sample(params, xb, yb)
            grads.append(torch.cat([v.reshape(len(xb), -1) for v in g.values()], dim=1).cpu())
            losses.append(torch.nn.functional.cross_entropy(net(xb), yb, reduction="none").cpu())
    return torch.cat(grads).numpy(), torch.cat(losses).double().numpy()


def parity_qdg(
    run_dir: str | Path,
    *,
    width: int = 500,
    n_samples: int = 1000,
    threshold: float = 0.1,
    ks: Sequence[int] = (10, 20, 50, 100),
    transform: str = "angular",
    assign: str = "kmeans",
    n_init: int = 10,
    device: str = "cpu",
    seed: int = 0,
) -> ToyQDG:
    """QDG on the member nearest ``width`` of the parity run ``run_dir`` (module docstring).

    Parameters
    ----------
    n_samples : int
        Samples drawn from the task's Zipf mixture before selection.
    threshold : float
        Keep samples whose loss is below this, nats (the paper's QDG: 0.1).
    ks : sequence of int
        Cluster counts K; each must not exceed the number of selected samples.
    transform, assign, n_init
        Affinity (:data:`quanta.qdg.cluster.AFFINITIES`; the paper's: angular) and label
        assigner (the paper's: k-means with ``n_init`` restarts).
    device : str
        Torch device for the gradients ("cpu", "cuda", "cuda:1").
    seed : int
        Seed of the samples and of the clustering.
    """
    import torch

    from quanta._validation import check_device
    from quanta.qdg.cluster import affinity, cosine_similarity, spectral_sweep

    n_samples = check_int(n_samples, "n_samples", _OWNER, low=2)
    threshold = check_real(threshold, "threshold", _OWNER, low=0.0, low_open=True)
    width = check_int(width, "width", _OWNER, low=1)
    seed = check_int(seed, "seed", _OWNER, low=0)
    check_device(device, _OWNER)
    ks = sorted({check_int(k, "K", _OWNER, low=2) for k in ks})
    if not ks:
        raise QuantaInputError("No cluster count K given.")
    net, cfg, info = load_member(run_dir, width)
    net = net.to(device)
    task = cfg.make_task()
    batch = task.sample_compact(n_samples, generator=torch.Generator().manual_seed(seed))
    grads, losses = member_gradients(net, batch.dense(task.n_tasks), batch.y)
    keep = losses < threshold
    n_kept = int(keep.sum())
    if n_kept < max(ks[-1], 10):
        raise QuantaInputError(
            f"Only {n_kept} of {n_samples} samples have loss < {threshold:g} nats; K up to "
            f"{ks[-1]} needs at least {max(ks[-1], 10)}. Draw more samples (--n) or train longer."
        )
    grads, truth = grads[keep], batch.task.numpy()[keep]
    sim = cosine_similarity(grads)
    aff = affinity(sim, transform, norms=np.linalg.norm(grads, axis=1))
    labels = spectral_sweep(aff, ks, assign=assign, n_init=n_init, seed=seed)
    true_counts = np.bincount(truth, minlength=task.n_tasks)
    scores, tables = _against_truth(labels, truth, true_counts)
    settings = {
        "run": str(run_dir),
        **info,
        "n_tasks": cfg.n_tasks,
        "n_bits": cfg.n_bits,
        "k": cfg.k,
        "alpha": cfg.alpha,
        "steps": cfg.steps,
        "n_drawn": n_samples,
        "n_selected": n_kept,
        "n_subtasks_present": int((true_counts > 0).sum()),
        "threshold_nats": threshold,
        "affinity": transform,
        "assign": assign,
        "n_init": n_init,
        "ks": ks,
        "seed": seed,
        "device": device,
        "true_exponent": cfg.alpha + 1.0,
    }
    return ToyQDG(scores, tables, settings)


def _against_truth(
    labels: dict[int, np.ndarray], truth: np.ndarray, true_counts: np.ndarray
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Scores per K against the true subtasks (ARI, NMI, purity, Zipf exponents recovered and
    true) and the rank-frequency table: clusters per K, their envelope, the true counts."""
    from quanta.qdg.cluster import zipf_mle
    from quanta.qdg.validate import score

    true_fit = zipf_mle(true_counts, bootstrap=0)
    rows, tables = [], []
    for k, lab in labels.items():
        sizes = np.sort(np.bincount(lab))[::-1]
        sizes = sizes[sizes > 0]
        fit = zipf_mle(sizes, bootstrap=0)
        rows.append(
            {
                "K": k,
                **score(truth, lab),
                "n_clusters": len(sizes),
                "zipf_recovered": fit["exponent"],
                "zipf_true": true_fit["exponent"],
            }
        )
        tables.append(_ranked("clusters", k, sizes))
    clusters = pd.concat(tables, ignore_index=True)
    envelope = clusters.groupby("rank")["size"].max().to_numpy()
    true_sorted = np.sort(true_counts[true_counts > 0])[::-1]
    tables += [_ranked("envelope", 0, envelope), _ranked("truth", 0, true_sorted)]
    return pd.DataFrame(rows), pd.concat(tables, ignore_index=True)


def _ranked(kind: str, k: int, sizes: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({"kind": kind, "K": k, "rank": np.arange(1, len(sizes) + 1), "size": sizes})


@writes_outputs("out")
def write_parity_qdg(result: ToyQDG, out: str | Path) -> list[Path]:
    """Write ``parity_qdg.json`` (settings + scores), ``scores.parquet``,
    ``rank_frequency.parquet`` and ``rank_frequency.png`` into ``out``; returns the paths."""
    from quanta.plots import save_figure
    from quanta.qdg.toy_plots import parity_qdg_figure
    from quanta.store import write_json, write_parquet

    out = Path(out)
    scores = result.scores.astype(object).where(result.scores.notna(), None)
    write_json(
        out / "parity_qdg.json",
        {"settings": result.settings, "scores": scores.to_dict("records")},
    )
    write_parquet(out / "scores.parquet", result.scores)
    write_parquet(out / "rank_frequency.parquet", result.rank_frequency)
    fig = save_figure(parity_qdg_figure(result), out / "rank_frequency.png")
    return [out / "parity_qdg.json", out / "scores.parquet", out / "rank_frequency.parquet", fig]
