"""Universality of quanta: do QDG runs of different models on the same tokens find the same
clusters? (``quanta qdg compare RUN RUN …``; issue 20, part 1.)

Every pair of runs is compared per K by :mod:`quanta.qdg.agreement`: ARI, NMI, clusters
matched one-to-one on Jaccard with the share of each run's clusters found in the other, each
number beside its **null** (the second run's labels permuted, sizes kept) and its **ceiling**
(each run re-clustered on subsamples of its own samples, from its stored gradients or Gram
matrix). With ``random_init`` runs (``quanta qdg run --random-init SEED``: an untrained model
of a run's architecture on the tokens the trained one selected), a second null: either run of
a pair replaced by each untrained one, the highest per metric — what an untrained network's
gradient geometry alone gives (the tokens, the architecture), not what training taught. The
runs must hold the same tokens — ``(doc_id, pos)`` of the same corpus — or, with
``intersect=True``, are compared on the tokens both selected (e.g. a small and a large model on
the tokens both get right). Layout of the output directory::

    manifest.json             settings, status (a quanta run directory)
    universality.json         runs, tokens compared, per pair × K: observed, null, ceiling
    matched_clusters.parquet  pair × K × matched cluster pair: sizes, overlap, Jaccard, found,
                              each cluster's description on the compared tokens
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from quanta._validation import QuantaInputError, check_int, check_real
from quanta.lock import locked

__all__ = ["QDGRun", "compare_runs", "load_run", "stored_affinity"]

KIND = "qdg.compare"
_OWNER = "quanta qdg compare"
_MIN_TOKENS = 10


@dataclass
class QDGRun:
    """One finished ``quanta qdg run`` directory, read: its samples (``doc_id``, ``pos``,
    ``token_id``, ``token``, ``previous``), its labels per K, its configuration and the
    fingerprint of its corpus (sha-256 of the token ids and document offsets)."""

    path: Path
    name: str
    config: dict[str, Any]
    samples: pd.DataFrame
    labels: dict[int, np.ndarray]
    corpus: str


def _fingerprint(corpus_dir: Path) -> str:
    digest = hashlib.sha256()
    for name in ("tokens.npy", "offsets.npy"):
        with open(corpus_dir / name, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def load_run(path: str | Path, *, random_init: bool = False) -> QDGRun:
    """Read a complete QDG run directory (refused with one line otherwise); ``random_init``:
    one made with ``--random-init`` (refused otherwise, and such a run is refused without it:
    an untrained model is a null, not a model compared)."""
    from quanta.store import read_result

    path = Path(path)
    manifest = read_result(path, ("qdg.run",), "'quanta qdg run'")
    if ("random_init" in manifest["config"]) != random_init:
        raise QuantaInputError(
            f"QDG run '{path}' is a random-init run ('qdg run --random-init'): pass it with "
            "--random-init, as a null."
            if not random_init
            else f"QDG run '{path}' is of a trained model; --random-init takes runs made with "
            "'qdg run --random-init SEED' (an untrained model on the trained one's tokens)."
        )
    corpus_dir = Path(manifest["config"]["losses"]) / "corpus"
    if not (corpus_dir / "tokens.npy").is_file():
        raise QuantaInputError(
            f"The corpus of QDG run '{path}' ({corpus_dir}) is gone; the runs' corpora cannot "
            "be compared without it."
        )
    table = pd.read_parquet(path / "labels.parquet")
    labels = {int(c[1:]): table[c].to_numpy() for c in table.columns if c.startswith("K") and c[1:]}
    name = str(manifest.get("model", {}).get("label") or manifest["config"].get("model"))
    if random_init:
        name += f" (random init, seed {manifest['config']['random_init']})"
    samples = pd.read_parquet(path / "samples.parquet")
    return QDGRun(path, name, manifest["config"], samples, labels, _fingerprint(corpus_dir))


def stored_affinity(run: QDGRun) -> Any | None:
    """The affinity the run clustered, rebuilt from its ``gram.npy`` or ``grads.npy`` with its
    own settings (affinity, center, knn); ``None`` when the run stored neither."""
    from quanta.qdg.cluster import affinity, cosine_from_gram, cosine_similarity, knn_affinity

    c = run.config
    transform, center, knn = c.get("affinity", "angular"), bool(c.get("center")), c.get("knn", 0)
    if (run.path / "gram.npy").is_file():
        gram = np.load(run.path / "gram.npy")
        norms = np.sqrt(np.diag(gram))
        return affinity(cosine_from_gram(gram, center=center), transform, norms=norms)
    if not (run.path / "grads.npy").is_file():
        return None
    grads = np.load(run.path / "grads.npy", mmap_mode="r")
    if knn:
        return knn_affinity(grads, n_neighbors=knn, transform=transform, center=center)
    norms = np.linalg.norm(np.asarray(grads, dtype=np.float64), axis=1)
    return affinity(cosine_similarity(grads, center=center), transform, norms=norms)


def _keys(run: QDGRun) -> pd.MultiIndex:
    return pd.MultiIndex.from_arrays([run.samples["doc_id"], run.samples["pos"]])


def _common_tokens(runs: Sequence[QDGRun], intersect: bool) -> pd.MultiIndex:
    """The ``(doc_id, pos)`` every run holds; refused unless all runs hold the same set, or,
    with ``intersect``, unless the intersection is large enough."""
    first = runs[0]
    for r in runs[1:]:
        if r.corpus != first.corpus:
            raise QuantaInputError(
                f"QDG runs '{first.path}' and '{r.path}' are on different corpora (token "
                f"fingerprints {first.corpus} ≠ {r.corpus}); compare runs of one corpus."
            )
    common = _keys(first)
    for r in runs[1:]:
        keys = _keys(r)
        if not intersect and not (len(keys) == len(common) and keys.isin(common).all()):
            raise QuantaInputError(
                f"QDG runs '{first.path}' and '{r.path}' hold different tokens ({len(common)} "
                f"and {len(keys)}, {int(keys.isin(common).sum())} shared); pass --intersect "
                "to compare them on the tokens both hold."
            )
        common = common[common.isin(keys)]
    if len(common) < _MIN_TOKENS:
        raise QuantaInputError(
            f"The QDG runs share {len(common)} tokens; a comparison needs at least "
            f"{_MIN_TOKENS} (select more tokens, or compare runs of more similar models)."
        )
    return common


def _ks(runs: Sequence[QDGRun], ks: Sequence[int] | None, n_tokens: int) -> list[int]:
    """The K to compare: ``ks`` (each held by every run) or every K all runs hold."""
    held = set.intersection(*(set(r.labels) for r in runs))
    if ks is None:
        if not held:
            raise QuantaInputError("The QDG runs have no cluster count K in common.")
        chosen = sorted(held)
    else:
        chosen = sorted({check_int(k, "K", _OWNER, low=2) for k in ks})
        for k in chosen:
            lacking = [str(r.path) for r in runs if k not in r.labels]
            if lacking:
                have = ", ".join(str(h) for h in sorted(held)) or "none"
                raise QuantaInputError(
                    f"K = {k} was not clustered by {', '.join(lacking)}; K held by every run: "
                    f"{have}."
                )
    if chosen[-1] > n_tokens:
        raise QuantaInputError(f"K = {chosen[-1]} exceeds the {n_tokens} compared tokens.")
    return chosen


@dataclass(frozen=True)
class _Options:
    ks: list[int]
    threshold: float
    n_permutations: int
    replicas: int
    fraction: float
    seed: int


@locked("out")
def compare_runs(
    runs: Sequence[str | Path],
    out: str | Path,
    *,
    ks: Sequence[int] | None = None,
    intersect: bool = False,
    threshold: float = 0.5,
    n_permutations: int = 100,
    replicas: int = 5,
    fraction: float = 0.8,
    seed: int = 0,
    random_init: Sequence[str | Path] = (),
) -> dict[str, Any]:
    """Compare QDG runs pairwise (module docstring) and write ``out``; returns what
    ``universality.json`` holds.

    Parameters
    ----------
    runs : two or more ``quanta qdg run`` directories, on the same tokens (or ``intersect``).
    ks : the cluster counts K to compare (each held by every run) [every K all runs hold].
    intersect : compare on the tokens all runs hold instead of refusing different token sets.
    threshold : Jaccard at or above which a matched cluster is *found* in the other run.
    n_permutations : label permutations of the null.
    replicas, fraction : re-clusterings of each run for its ceiling, each on this share of its
        samples (drawn without replacement).
    seed : seed of the permutations and the ceiling's subsamples and clusterings.
    random_init : ``quanta qdg run --random-init`` directories, the random-init null (module
        docstring); they must hold the compared tokens too (or ``intersect``).

    Every refusal (a single run, different corpora or tokens, a K a run lacks, bad settings)
    happens before anything is written.
    """
    from quanta.config import config_hash
    from quanta.store import RunDir, portable_path

    if len(runs) < 2:
        raise QuantaInputError(f"Compare at least two QDG runs; got {len(runs)}.")
    loaded = [load_run(r) for r in runs]
    untrained = [load_run(r, random_init=True) for r in random_init]
    common = _common_tokens([*loaded, *untrained], intersect)
    opts = _Options(
        ks=_ks([*loaded, *untrained], ks, len(common)),
        threshold=check_real(threshold, "threshold", _OWNER, low=0.0, high=1.0, low_open=True),
        n_permutations=check_int(n_permutations, "n_permutations", _OWNER, low=2),
        replicas=check_int(replicas, "replicas", _OWNER, low=2),
        fraction=check_real(fraction, "fraction", _OWNER, low=0.0, high=1.0, low_open=True),
        seed=check_int(seed, "seed", _OWNER, low=0),
    )
    config: dict[str, Any] = {"runs": [str(Path(r).resolve()) for r in runs]}
    config["intersect"] = intersect
    config.update(vars(opts))
    # The runs as stored relative to the output (inside its tree: relocatable); the hash of
    # the absolute form is kept as an alias, so earlier outputs are reused.
    stored = {**config, "runs": [portable_path(Path(r).resolve(), out) for r in runs]}
    if random_init:  # written only when given: earlier comparisons keep their hash
        config["random_init"] = [str(Path(r).resolve()) for r in random_init]
        stored["random_init"] = [portable_path(Path(r).resolve(), out) for r in random_init]
    run = RunDir(
        Path(out),
        KIND,
        stored,
        config_hash(stored),
        files=("matched_clusters.parquet", "universality.json"),
        aliases=frozenset({config_hash(config)}),
    )
    if run.open() == "complete":
        import json

        return dict(json.loads((Path(out) / "universality.json").read_text()))
    t0 = time.perf_counter()
    result, matched = _compare(loaded, common, opts, intersect, untrained)
    _write(Path(out), result, matched)
    run.write_manifest(status="complete", wall_seconds=time.perf_counter() - t0, extra={})
    return result


def _restricted(run: QDGRun, common: pd.MultiIndex) -> np.ndarray:
    """Row numbers of ``run``'s samples holding the tokens of ``common``, in that order."""
    return np.asarray(_keys(run).get_indexer(common))


def _compare(
    runs: Sequence[QDGRun],
    common: pd.MultiIndex,
    opts: _Options,
    intersect: bool,
    untrained: Sequence[QDGRun] = (),
) -> tuple[dict[str, Any], pd.DataFrame]:
    """``universality.json``'s content and the matched-cluster table."""
    rows = {r.path: _restricted(r, common) for r in [*runs, *untrained]}
    ceilings = {r.path: _ceiling(r, opts) for r in runs}
    pairs, matched = [], []
    for a, b in combinations(runs, 2):
        per_k = []
        for k in opts.ks:
            la, lb = a.labels[k][rows[a.path]], b.labels[k][rows[b.path]]
            row = _pair_scores(la, lb, k, opts, ceilings[a.path], ceilings[b.path])
            nulls = [u.labels[k][rows[u.path]] for u in untrained]
            per_k.append(_with_random_init(row, la, lb, nulls, opts.threshold))
            matched.append(_described(a, b, rows, la, lb, k, opts.threshold))
        pairs.append({"a": str(a.path), "b": str(b.path), "per_k": per_k})
    result = {
        "runs": [{"path": str(r.path), "model": r.name, "n_samples": len(r.samples)} for r in runs],
        "n_tokens": len(common),
        "intersect": intersect,
        "corpus": runs[0].corpus,
        "ks": opts.ks,
        "threshold_jaccard": opts.threshold,
        "null": f"labels of b permuted over the tokens (sizes kept), {opts.n_permutations} draws",
        "ceiling": (
            f"each run re-clustered {opts.replicas} times on {opts.fraction:.0%} of its samples "
            "(other seeds) vs its own labels; a pair's ceiling is the lower of its two runs'"
        ),
        "ceilings": {str(path): c for path, c in ceilings.items()},
        "random_init_runs": [
            {"path": str(u.path), "model": u.name, "seed": u.config["random_init"]}
            for u in untrained
        ],
        "random_init": (
            "either run of a pair replaced by each random-init run (an untrained model of the "
            "same architecture on the trained model's tokens); per metric the highest"
            if untrained
            else None
        ),
        "pairs": pairs,
    }
    return result, pd.concat(matched, ignore_index=True)


def _with_random_init(
    row: dict[str, Any],
    la: np.ndarray,
    lb: np.ndarray,
    nulls: Sequence[np.ndarray],
    threshold: float,
) -> dict[str, Any]:
    """``row`` with its random-init null (:func:`quanta.qdg.agreement.random_init_null`;
    ``None`` without random-init runs) and the observed value placed between that null (0) and
    the ceiling (1) as ``normalized_init``."""
    from quanta.qdg.agreement import normalized, random_init_null

    best = random_init_null(la, lb, nulls, threshold=threshold)
    if best is None:
        return {**row, "random_init": None, "normalized_init": None}
    scaled = normalized(row["observed"], {m: {"mean": v} for m, v in best.items()}, row["ceiling"])
    return {**row, "random_init": best, "normalized_init": scaled}


def _pair_scores(
    la: np.ndarray,
    lb: np.ndarray,
    k: int,
    opts: _Options,
    ceiling_a: dict[str, Any] | None,
    ceiling_b: dict[str, Any] | None,
) -> dict[str, Any]:
    """Observed, null and ceiling of one pair at one K."""
    from quanta.qdg.agreement import METRICS, agreement, null_agreement

    observed = agreement(la, lb, threshold=opts.threshold)
    null = null_agreement(
        la, lb, n_permutations=opts.n_permutations, threshold=opts.threshold, seed=opts.seed
    )
    ceiling = None
    if ceiling_a is not None and ceiling_b is not None:
        ca, cb = ceiling_a[str(k)], ceiling_b[str(k)]
        ceiling = {m: min(ca[m]["mean"], cb[m]["mean"]) for m in METRICS}
    from quanta.qdg.agreement import normalized

    return {
        "K": k,
        "observed": observed,
        "null": null,
        "ceiling": ceiling,
        "normalized": normalized(observed, null, ceiling),
    }


def _ceiling(run: QDGRun, opts: _Options) -> dict[str, Any] | None:
    """:func:`quanta.qdg.agreement.ceiling_agreement` of one run, keyed by K as text."""
    from quanta.qdg.agreement import ceiling_agreement

    aff = stored_affinity(run)
    if aff is None:
        return None
    labels = {k: run.labels[k] for k in opts.ks}
    found = ceiling_agreement(
        aff,
        labels,
        assign=run.config.get("assign", "cluster_qr"),
        n_init=run.config.get("n_init", 10),
        replicas=opts.replicas,
        fraction=opts.fraction,
        threshold=opts.threshold,
        seed=opts.seed,
    )
    return {str(k): v for k, v in found.items()}


def _described(
    a: QDGRun,
    b: QDGRun,
    rows: dict[Path, np.ndarray],
    la: np.ndarray,
    lb: np.ndarray,
    k: int,
    threshold: float,
) -> pd.DataFrame:
    """The matched cluster pairs of one K, each cluster described on the compared tokens."""
    from quanta.qdg.agreement import match_clusters

    table = match_clusters(la, lb, threshold=threshold)
    for side, run, lab, cluster in (("a", a, la, "cluster_a"), ("b", b, lb, "cluster_b")):
        samples = run.samples.iloc[rows[run.path]]
        table[f"description_{side}"] = [
            _describe(samples, lab == c) for c in table[cluster].to_numpy()
        ]
    return table.assign(a=str(a.path), b=str(b.path), K=k)


def _describe(samples: pd.DataFrame, members: np.ndarray) -> str:
    from quanta.qdg.describe import describe_cluster

    if "token" not in samples:
        return ""
    chosen = samples[members]
    return describe_cluster(chosen["token"].tolist(), chosen["previous"].tolist())


def _write(out: Path, result: dict[str, Any], matched: pd.DataFrame) -> None:
    from quanta.store import write_json, write_parquet

    write_parquet(out / "matched_clusters.parquet", matched)
    write_json(out / "universality.json", result)
