"""Universality in the toy world: QDG on two sparse-parity nets of different init seeds, on the
same samples, compared with each other and with the true subtasks (``quanta qdg compare
--parity RUN [RUN]``).

The two nets are two members of one ``quanta parity train`` run (the member nearest ``width``
of each of its two smallest init seeds: same data order, different init — the PolyPythias
protocol), or the member nearest ``width`` of each of two runs of the same task. Both get the
same ``n_samples`` fresh samples of the task's Zipf mixture (seeded); those both predict with
loss below ``threshold`` nats are clustered from each net's per-sample gradients
(:func:`quanta.qdg.toyqdg.member_gradients`) as ``quanta qdg parity`` does. Three pairs are
scored per K by :mod:`quanta.qdg.agreement`, each number with its null and ceiling: seed a vs
seed b, and each against the true subtasks (whose ceiling is the net's own). The random-init
null: an untrained net of the same width (init seed one above the pair's largest) clustered on
the same samples, in place of a trained side (:func:`quanta.qdg.agreement.random_init_null`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from quanta._validation import QuantaInputError, check_device, check_int, check_real
from quanta.store import writes_outputs

__all__ = ["ToyOptions", "parity_universality", "write_parity_universality"]

_OWNER = "quanta qdg compare --parity"
# What makes two runs the same task (and the same samples for one seed).
_TASK_KEYS = ("n_tasks", "n_bits", "k", "alpha", "seed")


@dataclass(frozen=True)
class ToyOptions:
    """Settings of :func:`parity_universality` (each as ``quanta qdg parity``'s, plus the
    null's permutations and the ceiling's replicas and subsample share)."""

    width: int = 500
    n_samples: int = 1000
    threshold: float = 0.1
    ks: Sequence[int] = (10, 20, 50)
    transform: str = "angular"
    assign: str = "kmeans"
    n_init: int = 10
    jaccard: float = 0.5
    n_permutations: int = 100
    replicas: int = 5
    fraction: float = 0.8
    device: str = "cpu"
    seed: int = 0


def _members(runs: Sequence[str | Path], width: int) -> list[tuple[Any, Any, dict[str, Any]]]:
    """The two nets to compare (module docstring), each ``(net, config, info)``."""
    from quanta.qdg.toyqdg import load_member

    if len(runs) not in (1, 2):
        raise QuantaInputError(
            f"--parity takes one parity run (two of its init seeds) or two runs; got {len(runs)}."
        )
    if len(runs) == 2:
        pair = [load_member(r, width) for r in runs]
        a, b = (p[1] for p in pair)
        differ = [k for k in _TASK_KEYS if getattr(a, k) != getattr(b, k)]
        if differ:
            raise QuantaInputError(
                f"Parity runs '{runs[0]}' and '{runs[1]}' are of different tasks ("
                f"{', '.join(differ)} differ); compare runs of one task."
            )
        return pair
    first = load_member(runs[0], width)
    seeds = sorted(set(first[1].init_seeds))
    if len(seeds) < 2:
        raise QuantaInputError(
            f"Parity run '{runs[0]}' has one init seed ({seeds[0]}); train it with "
            "--init-seeds 0,1 or pass a second run."
        )
    return [load_member(runs[0], width, init_seed=s) for s in seeds[:2]]


def _checked(o: ToyOptions) -> ToyOptions:
    check_int(o.width, "width", _OWNER, low=1)
    check_int(o.n_samples, "n_samples", _OWNER, low=2)
    check_real(o.threshold, "threshold", _OWNER, low=0.0, low_open=True)
    check_device(o.device, _OWNER)
    check_real(o.jaccard, "threshold", _OWNER, low=0.0, high=1.0, low_open=True)
    check_int(o.n_permutations, "n_permutations", _OWNER, low=2)
    check_int(o.replicas, "replicas", _OWNER, low=2)
    check_real(o.fraction, "fraction", _OWNER, low=0.0, high=1.0, low_open=True)
    ks = sorted({check_int(k, "K", _OWNER, low=2) for k in o.ks})
    if not ks:
        raise QuantaInputError("No cluster count K given.")
    return ToyOptions(**{**vars(o), "ks": ks})


def parity_universality(runs: Sequence[str | Path], options: ToyOptions) -> dict[str, Any]:
    """Compare QDG on two parity nets with each other and with the truth (module
    docstring); returns ``universality.json``'s content (the layout of
    :func:`quanta.qdg.compare.compare_runs`, runs named by member, plus ``truth``)."""
    import torch

    o = _checked(options)
    pair = _members(runs, o.width)
    cfg = pair[0][1]
    task = cfg.make_task()
    batch = task.sample_compact(o.n_samples, generator=torch.Generator().manual_seed(o.seed))
    grads, keep = _gradients(pair, batch, task.n_tasks, o)
    truth = batch.task.numpy()[keep]
    sources = [runs[0], runs[0]] if len(runs) == 1 else list(runs)
    names = [
        f"width {info['width']}, init seed {info['init_seed']} ({r})"
        for r, (_, _, info) in zip(sources, pair, strict=True)
    ]
    labels, ceilings = [], {}
    for name, g in zip(names, grads, strict=True):
        lab, ceiling = _cluster(g[keep], o)
        labels.append(lab)
        ceilings[name] = ceiling
    untrained, untrained_name = _untrained(pair, batch, task.n_tasks, keep, o)
    true = {k: truth for k in o.ks}
    c0, c1 = ceilings[names[0]], ceilings[names[1]]
    pairs = [
        _pair(names[0], names[1], labels[0], labels[1], c0, c1, o, untrained, (True, True)),
        _pair(names[0], "truth", labels[0], true, c0, None, o, untrained, (True, False)),
        _pair(names[1], "truth", labels[1], true, c1, None, o, untrained, (True, False)),
    ]
    return {
        "runs": [
            *({"path": n, "model": n, "n_samples": int(keep.sum())} for n in names),
            {"path": "truth", "model": "true subtasks", "n_samples": int(keep.sum())},
        ],
        "n_tokens": int(keep.sum()),
        "n_drawn": o.n_samples,
        "n_subtasks_present": len(np.unique(truth)),
        "task": {k: getattr(cfg, k) for k in _TASK_KEYS},
        "ks": list(o.ks),
        "threshold_jaccard": o.jaccard,
        "null": f"labels of b permuted over the samples (sizes kept), {o.n_permutations} draws",
        "ceiling": (
            f"each net re-clustered {o.replicas} times on {o.fraction:.0%} of the samples "
            "(other seeds) vs its own labels; against the truth, the net's own ceiling"
        ),
        "ceilings": ceilings,
        "random_init_runs": [{"path": untrained_name, "model": untrained_name, "seed": None}],
        "random_init": "a trained net of a pair replaced by an untrained one of the same width "
        "on the same samples (the truth is never replaced); per metric the highest",
        "pairs": pairs,
    }


def _untrained(
    pair: list[tuple[Any, Any, dict[str, Any]]], batch: Any, n_tasks: int, keep: Any, o: ToyOptions
) -> tuple[dict[int, np.ndarray], str]:
    """Labels per K of an untrained net of the pair's width (init seed one above theirs) on the
    kept samples, and its name."""
    from quanta.parity.model import FusedParityMLP
    from quanta.qdg.toyqdg import member_gradients

    cfg, info = pair[0][1], pair[0][2]
    seed = max(int(p[2]["init_seed"]) for p in pair) + 1
    net = FusedParityMLP(cfg.n_tasks, cfg.n_bits, [info["width"]], init_seeds=[seed])
    g, _ = member_gradients(net.member_modules()[0].to(o.device), batch.dense(n_tasks), batch.y)
    labels, _ = _cluster(g[keep], o, ceiling=False)
    return labels, f"width {info['width']}, init seed {seed}, untrained"


def _gradients(
    pair: list[tuple[Any, Any, dict[str, Any]]], batch: Any, n_tasks: int, o: ToyOptions
) -> tuple[list[np.ndarray], np.ndarray]:
    """Each net's per-sample gradients and the samples both predict below the threshold."""
    from quanta.qdg.toyqdg import member_gradients

    grads, keep = [], np.ones(len(batch.y), dtype=bool)
    for net, _, _ in pair:
        g, losses = member_gradients(net.to(o.device), batch.dense(n_tasks), batch.y)
        grads.append(g)
        keep &= losses < o.threshold
    need = max(max(o.ks) + 1, 10)
    if keep.sum() < need / o.fraction:
        raise QuantaInputError(
            f"Only {int(keep.sum())} of {o.n_samples} samples have loss < {o.threshold:g} nats "
            f"for both nets; K up to {max(o.ks)} needs at least {int(np.ceil(need / o.fraction))}."
            " Draw more samples (--n) or train longer."
        )
    return grads, keep


def _cluster(
    g: np.ndarray, o: ToyOptions, *, ceiling: bool = True
) -> tuple[dict[int, np.ndarray], dict[str, Any]]:
    """Labels per K of one net's gradients, and its ceiling (keyed by K as text; empty without
    ``ceiling``)."""
    from quanta.qdg.agreement import ceiling_agreement
    from quanta.qdg.cluster import affinity, cosine_similarity, spectral_sweep

    aff = affinity(cosine_similarity(g), o.transform, norms=np.linalg.norm(g, axis=1))
    labels = spectral_sweep(aff, o.ks, assign=o.assign, n_init=o.n_init, seed=o.seed)
    if not ceiling:
        return labels, {}
    found = ceiling_agreement(
        aff,
        labels,
        assign=o.assign,
        n_init=o.n_init,
        replicas=o.replicas,
        fraction=o.fraction,
        threshold=o.jaccard,
        seed=o.seed,
    )
    return labels, {str(k): v for k, v in found.items()}


def _pair(
    a: str,
    b: str,
    la: dict[int, np.ndarray],
    lb: dict[int, np.ndarray],
    ceiling_a: dict[str, Any],
    ceiling_b: dict[str, Any] | None,
    o: ToyOptions,
    untrained: dict[int, np.ndarray],
    trained: tuple[bool, bool],
) -> dict[str, Any]:
    """One pair's observed, nulls and ceiling per K."""
    from quanta.qdg.agreement import (
        METRICS,
        agreement,
        normalized,
        null_agreement,
        random_init_null,
    )

    per_k = []
    for k in o.ks:
        tops = [c[str(k)] for c in (ceiling_a, ceiling_b) if c is not None]
        observed = agreement(la[k], lb[k], threshold=o.jaccard)
        null = null_agreement(
            la[k], lb[k], n_permutations=o.n_permutations, threshold=o.jaccard, seed=o.seed
        )
        ceiling = {m: min(t[m]["mean"] for t in tops) for m in METRICS}
        init = random_init_null(la[k], lb[k], [untrained[k]], threshold=o.jaccard, trained=trained)
        per_k.append(
            {
                "K": k,
                "observed": observed,
                "null": null,
                "ceiling": ceiling,
                "normalized": normalized(observed, null, ceiling),
                "random_init": init,
                "normalized_init": None
                if init is None
                else normalized(observed, {m: {"mean": v} for m, v in init.items()}, ceiling),
            }
        )
    return {"a": a, "b": b, "per_k": per_k}


@writes_outputs("out")
def write_parity_universality(result: dict[str, Any], out: str | Path) -> Path:
    """Write ``result`` (:func:`parity_universality`) as ``out/universality.json``, recorded
    in its ``outputs.json``; returns the path."""
    from quanta.store import write_json

    path = Path(out) / "universality.json"
    write_json(path, result)
    return path
