"""The QDG pipeline on a losses directory: select → gradients → similarity → clusters for
every K → rank-frequency and Zipf fits. Layout of the output directory::

    manifest.json          settings, status (a quanta run directory: resumable, refused if
                           another configuration is pointed at it); the model and the
                           selection threshold used, with why
    samples.parquet        the selected tokens (row, doc_id, pos, token_id, loss) with context,
                           the predicted token and the token before it (decoded)
    grads.npy              their gradients [n, dim] (or projections [n, k]), float32
                           (similarity "sketch"), or
    gram.npy               their exact Gram matrix [n, n], float64 (similarity "exact",
                           accumulated over parameter blocks; no gradient rows stored)
    grads.json             dims, backward passes, the head path that ran ("chunked" | "full"),
                           the parameters selected and those excluded with why (and blocks,
                           for "exact")
    labels.parquet         sample × K cluster labels
    clusters.parquet       K, cluster, size, rank, top tokens, description (one line)
    rank_frequency.parquet K, rank, size (K = 0: the envelope over K)
    zipf.json              per K: discrete-MLE exponent with CI and bias; the paper's envelope
                           OLS; the model (name, N) and the selection (threshold used, why)
    rank_frequency.png     sizes vs rank for every K and the envelope
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd

from quanta._validation import QuantaInputError, check_choice, check_device, check_int
from quanta.lock import locked

__all__ = ["pick_model", "run_qdg"]

KIND = "qdg.run"
#: The finished files of a QDG run (hashed in its manifest, checked on reuse); ``qdg report``
#: and ``qdg scale`` write theirs later, beside them.
FILES = ("*.parquet", "*.npy", "grads.json", "zipf.json", "rank_frequency.png")
_OWNER = "quanta qdg run"


@locked("out")
def run_qdg(
    losses_dir: str | Path,
    out: str | Path,
    *,
    model: int | str = 0,
    threshold: float | str = 0.1,
    min_samples: int | None = None,
    induction: bool = True,
    n: int = 2000,
    every: int | None = None,
    similarity: str = "sketch",
    projection_dim: int | None = 8192,
    block_params: int | None = None,
    param_filter: str | None = None,
    transform: str = "angular",
    center: bool = False,
    knn: int = 0,
    ks: tuple[int, ...] = (10, 20, 50, 100, 200),
    assign: str = "cluster_qr",
    n_init: int = 10,
    alpha_n: float | None = None,
    seed: int = 0,
    head: str = "auto",
    random_init: int | None = None,
    device: str = "cpu",
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Run QDG with one model of a ``quanta lm losses`` directory.

    ``model`` is a label (``name@revision``), a name, or an index into the models sorted by
    non-embedding parameters (0 = smallest, the paper's; −1 = largest); see :func:`pick_model`.
    Tokens with loss < ``threshold`` nats (or ``"auto"``: the paper's 0.1, raised only when
    fewer than ``min_samples`` pass; see :func:`quanta.qdg.select.choose_threshold`) outside
    induction, thinned to every ``every``-th, are subsampled to ``n``; fewer than
    ``min_samples`` (default ``n``) is refused before anything is written.

    Similarities: ``similarity="sketch"`` (default) takes cosines of the gradients'
    CountSketch projections to ``projection_dim`` (``None``: the exact rows, stored n × dim);
    ``"exact"`` takes them from the exact Gram matrix accumulated over blocks of
    ``block_params`` parameters (:func:`quanta.qdg.grads.exact_gram`: no rows stored, the
    gradients recomputed once per block) — the paper's. ``assign="kmeans"`` runs k-means
    ``n_init`` times (the paper: 30; scikit-learn's default 10). The model is loaded on
    ``device`` and every tensor is made there (a runtime setting: not part of the
    configuration's identity, so a run may be resumed on another device).

    The quantization model predicts cluster sizes ∝ rank^−(1+α_N); ``alpha_n`` defaults to the
    mean-loss exponent fitted by ``quanta lm analyze`` on the same directory, if present.

    ``head`` ("auto" | "chunked" | "full") is how each token's loss is computed, as for
    ``quanta lm losses`` (:func:`quanta.lm.head.resolve_head`: the model's own logits where the
    fast head disagrees with them); the path taken is recorded in ``grads.json``. A runtime
    setting like ``device``: every path computes the same loss. A model that is not causal
    is refused before anything is written.

    ``random_init`` (a seed): the gradients of an untrained model of ``model``'s architecture
    (:func:`quanta.lm.suite.random_model`) on the tokens the trained ``model`` selects (its
    losses): the random-init null of ``quanta qdg compare --random-init``.
    """
    from quanta.lm.head import resolve_head
    from quanta.lm.suite import load_model, random_model
    from quanta.qdg.cluster import spectral_sweep
    from quanta.qdg.grads import select_params

    settings = _Settings(
        model=model,
        threshold=threshold,
        min_samples=min_samples,
        induction=induction,
        n=n,
        every=every,
        similarity=similarity,
        projection_dim=projection_dim,
        block_params=block_params,
        param_filter=param_filter,
        transform=transform,
        center=center,
        knn=knn,
        ks=ks,
        assign=assign,
        n_init=n_init,
        alpha_n=alpha_n,
        seed=seed,
        head=head,
        random_init=random_init,
        device=device,
    )
    prep = _prepare(losses_dir, settings)  # every refusal: nothing written, no model loaded
    s, out = prep.settings, Path(out)
    if s.random_init is None:
        net = load_model(prep.ref, device=device)
    else:
        net = random_model(prep.ref, s.random_init, device=device)
    select_params(net, param_filter)
    path = resolve_head(net, prep.corpus.doc(0), head=s.head, owner=_OWNER, device=device)
    prep = replace(prep, settings=replace(s, head=path))  # checked once, warned at most once
    run = _claim(out, prep, device)
    if run.open() == "complete":
        return json.loads((out / "zipf.json").read_text())
    t0 = time.perf_counter()
    context = _write_samples(out, prep)
    aff = _affinity(out, net, prep, progress)
    labels = spectral_sweep(aff, s.ks, assign=s.assign, n_init=s.n_init, seed=s.seed)
    result = _write_clusters(out, prep, context, labels)
    run.write_manifest(
        status="complete",
        wall_seconds=time.perf_counter() - t0,
        extra={
            "n_samples": len(prep.samples),
            "model": prep.model_info,
            "selection": prep.choice.to_dict(),
            "device": device,
        },
    )
    return result


@dataclass(frozen=True)
class _Settings:
    """Every keyword of :func:`run_qdg` but ``progress``: what one run is asked to do."""

    model: int | str
    threshold: float | str
    min_samples: int | None
    induction: bool
    n: int
    every: int | None
    similarity: str
    projection_dim: int | None
    block_params: int | None
    param_filter: str | None
    transform: str
    center: bool
    knn: int
    ks: Sequence[int]
    assign: str
    n_init: int
    alpha_n: float | None
    seed: int
    head: str
    random_init: int | None
    device: str


@dataclass(frozen=True)
class _Prepared:
    """What :func:`_prepare` checked and resolved: no file written, no model loaded."""

    losses_dir: Path
    settings: _Settings  # checked: ks sorted and unique, min_samples resolved
    corpus: Any  # quanta.lm.corpus.TokenizedCorpus
    samples: pd.DataFrame
    choice: Any  # quanta.qdg.select.ThresholdChoice
    config: dict[str, Any]  # the run's identity (hashed)
    ref: Any  # quanta.lm.suite.ModelRef
    model_info: dict[str, Any]


def _claim(out: Path, prep: _Prepared, device: str) -> Any:
    """The run directory of ``prep`` on ``device`` (a :class:`quanta.store.RunDir`, not opened:
    the device is recorded, not hashed)."""
    from quanta.config import config_hash
    from quanta.store import RunDir, portable_path

    # The losses directory as stored relative to the run (inside its tree), so that a moved
    # tree resumes; runs made before that keep their hash (an alias).
    stored = {**prep.config, "losses": portable_path(prep.config["losses"], out)}
    old = frozenset({config_hash(prep.config)})
    config = {**stored, "device": device}
    return RunDir(out, KIND, config, config_hash(stored), frozenset({"device"}), FILES, aliases=old)


def _write_samples(out: Path, prep: _Prepared) -> pd.DataFrame:
    """``samples.parquet``: the selected tokens with their context, the predicted token and the
    token before it (decoded); returns that context table."""
    from quanta.lm.curves import token_context
    from quanta.lm.suite import load_tokenizer
    from quanta.store import write_parquet

    corpus, samples = prep.corpus, prep.samples
    tokenizer = load_tokenizer(prep.ref)
    context = token_context(
        prep.losses_dir, samples["row"].tolist(), context_tokens=40, tokenizer=tokenizer
    )
    flat = corpus.offsets[samples["doc_id"].to_numpy()] + samples["pos"].to_numpy()
    context["previous"] = [tokenizer.decode([int(t)]) for t in corpus.tokens[flat - 1]]
    write_parquet(
        out / "samples.parquet", samples.assign(**context[["context", "token", "previous"]])
    )
    return context


class _Backwards:
    """Counts backward passes for ``progress(done, total)``; ``total`` is set per mode."""

    def __init__(self, progress: Callable[[int, int], None] | None, total: int) -> None:
        self.progress, self.done, self.total = progress, 0, total

    def __call__(self, m: int) -> None:
        self.done += m
        if self.progress is not None:
            self.progress(self.done, self.total)


def _affinity(
    out: Path, net: Any, prep: _Prepared, progress: Callable[[int, int], None] | None
) -> Any:
    """The samples' affinity matrix (dense, or sparse with ``knn``), from ``gram.npy`` or
    ``grads.npy``, each computed (with ``grads.json``) unless a previous attempt left it."""
    from quanta.qdg.cluster import affinity, cosine_from_gram, cosine_similarity, knn_affinity

    s = prep.settings
    tick = _Backwards(progress, len(prep.samples))
    if s.similarity == "exact":
        gram = _exact_gram(out, net, prep, tick)
        norms = np.sqrt(np.diag(gram))
        return affinity(cosine_from_gram(gram, center=s.center), s.transform, norms=norms)
    grads = _gradients(out, net, prep, tick)
    if s.knn:
        return knn_affinity(grads, n_neighbors=s.knn, transform=s.transform, center=s.center)
    norms = np.sqrt(
        np.concatenate(
            [
                (np.asarray(grads[i : i + 2048], np.float64) ** 2).sum(1)
                for i in range(0, len(grads), 2048)
            ]
        )
    )
    return affinity(cosine_similarity(grads, center=s.center), s.transform, norms=norms)


def _exact_gram(out: Path, net: Any, prep: _Prepared, tick: _Backwards) -> np.ndarray:
    """``gram.npy`` (and ``grads.json``): the exact Gram matrix, accumulated over blocks."""
    from quanta.qdg.grads import exact_gram, gram_block_params, select_params
    from quanta.store import atomic_write, write_json

    s, samples = prep.settings, prep.samples
    gram_file = out / "gram.npy"
    if not gram_file.exists():
        dim = sum(p.numel() for _, p in select_params(net, s.param_filter))
        blocks = -(-dim // gram_block_params(dim, len(samples), s.block_params))
        tick.total = len(samples) * blocks
        gram, info = exact_gram(
            net,
            prep.corpus,
            samples,
            param_filter=s.param_filter,
            block_params=s.block_params,
            head=s.head,
            progress=tick,
        )
        with atomic_write(gram_file) as fh:
            np.save(fh, gram)
        write_json(out / "grads.json", {**info, "device": s.device})
    return np.load(gram_file)


def _gradients(out: Path, net: Any, prep: _Prepared, tick: _Backwards) -> np.ndarray:
    """``grads.npy`` (and ``grads.json``): the samples' gradients or their CountSketch
    projections, memory-mapped."""
    from quanta.qdg.grads import per_token_gradients
    from quanta.store import write_json

    s = prep.settings
    grads_file = out / "grads.npy"
    if not grads_file.exists():
        info = per_token_gradients(
            net,
            prep.corpus,
            prep.samples,
            grads_file,
            param_filter=s.param_filter,
            projection_dim=s.projection_dim,
            seed=s.seed,
            head=s.head,
            progress=tick,
        )
        write_json(out / "grads.json", {**info, "device": s.device})
    return np.load(grads_file, mmap_mode="r")


def _write_clusters(
    out: Path, prep: _Prepared, context: pd.DataFrame, labels: dict[int, np.ndarray]
) -> dict[str, Any]:
    """``labels``, ``rank_frequency``, ``clusters`` (.parquet), ``zipf.json`` and the
    rank-frequency figure; returns what ``zipf.json`` holds."""
    from quanta import plots
    from quanta.qdg.cluster import envelope_slope, rank_frequency, zipf_mle
    from quanta.store import write_json, write_parquet

    s, n_samples = prep.settings, len(prep.samples)
    write_parquet(
        out / "labels.parquet",
        pd.DataFrame({"sample": np.arange(n_samples), **{f"K{k}": v for k, v in labels.items()}}),
    )
    table = rank_frequency(labels)
    write_parquet(out / "rank_frequency.parquet", table)
    write_parquet(out / "clusters.parquet", _clusters(context, labels))
    fits = {str(k): zipf_mle(np.bincount(v), seed=s.seed) for k, v in labels.items()}
    env_ranks = (min(101, n_samples // 10 + 1), min(1000, int(table["rank"].max())))
    try:
        env = envelope_slope(table, env_ranks)
    except QuantaInputError:
        env = None
    alpha_n = s.alpha_n if s.alpha_n is not None else _fitted_alpha(prep.losses_dir)
    result = {
        "alpha_n": alpha_n,
        "predicted_exponent": None if alpha_n is None else 1.0 + float(alpha_n),
        "zipf": fits,
        "envelope_slope": env,
        "envelope_ranks": env_ranks,
        "n_samples": n_samples,
        "model": prep.model_info["label"],
        "model_info": prep.model_info,
        "selection": prep.choice.to_dict(),
        "similarity": s.similarity,
        "assign": s.assign,
        "n_init": s.n_init if s.assign == "kmeans" else None,
    }
    write_json(out / "zipf.json", result)
    plots.save_figure(plots.rank_frequency_figure(table, fits), out / "rank_frequency.png")
    return result


def _fitted_alpha(losses_dir: Path) -> float | None:
    """The mean-loss exponent of ``quanta lm analyze`` on ``losses_dir``, when it was run."""
    summary = losses_dir / "analysis" / "analysis.json"
    if not summary.exists():
        return None
    alpha: float | None = (json.loads(summary.read_text()).get("fit") or {}).get("alpha")
    return alpha


def _prepare(losses_dir: str | Path, settings: _Settings) -> _Prepared:
    """Check every setting of :func:`run_qdg` and select its samples, writing nothing."""
    from quanta.lm.curves import load_losses

    s = _checked(settings)
    losses_dir = Path(losses_dir)
    manifest, models, losses = load_losses(losses_dir)
    chosen = pick_model(models, s.model)
    column = int(chosen["model"])
    corpus, samples, choice = _select(losses_dir, np.asarray(losses[:, column]), s)
    ks = tuple(sorted({check_int(k, "K", _OWNER, low=2) for k in s.ks}))
    if ks[-1] > len(samples):
        raise QuantaInputError(
            f"K = {ks[-1]} exceeds the {len(samples)} selected samples; lower --ks or select more."
        )
    s = replace(s, ks=ks)
    config = _identity(losses_dir, str(chosen["label"]), s)
    # Everything that can be refused is checked before the directory is claimed.
    check_int(s.knn, "knn", _OWNER, low=0, high=len(samples) - 1)
    spec = manifest["config"]["models"][column]
    model_info = {
        "label": str(chosen["label"]),
        "name": str(chosen["name"]),
        "n_params": int(chosen["n_params"]),
        "size_index": int(chosen["size_index"]),
        "n_models": len(models),
        **({} if s.random_init is None else {"random_init": s.random_init}),
    }
    ref = _model_ref(spec)
    return _Prepared(losses_dir, s, corpus, samples, choice, config, ref, model_info)


def _model_ref(spec: dict[str, Any]) -> Any:
    from quanta.lm.suite import ModelRef

    return ModelRef(spec["name"], spec["source"], spec["revision"])


def _checked(s: _Settings) -> _Settings:
    """``s`` with every setting that needs no file checked, ``min_samples`` resolved."""
    _check_arguments(
        s.transform,
        knn=s.knn,
        assign=s.assign,
        similarity=s.similarity,
        projection_dim=s.projection_dim,
        block_params=s.block_params,
    )
    n_init = check_int(s.n_init, "n_init", _OWNER, low=1)
    if s.random_init is not None:
        check_int(s.random_init, "random_init", _OWNER, low=0)
    check_device(s.device, _OWNER)
    check_choice(s.head, "head", _OWNER, ["auto", "chunked", "full"])
    n = check_int(s.n, "n", _OWNER, low=10)
    min_samples = n if s.min_samples is None else s.min_samples
    min_samples = check_int(min_samples, "min_samples", _OWNER, low=10, high=n)
    return replace(s, n_init=n_init, n=n, min_samples=min_samples)


def _select(
    losses_dir: Path, column_losses: np.ndarray, s: _Settings
) -> tuple[Any, pd.DataFrame, Any]:
    """The corpus, the selected samples and the threshold choice (refused with too few)."""
    from quanta.lm.corpus import load_corpus
    from quanta.qdg.select import choose_threshold, select_tokens

    corpus = load_corpus(losses_dir / "corpus")
    choice = choose_threshold(
        corpus,
        column_losses,
        threshold=s.threshold,
        min_samples=cast(int, s.min_samples),  # resolved by _checked
        induction=s.induction,
        every=s.every,
    )
    samples = select_tokens(
        corpus,
        column_losses,
        threshold=choice.threshold,
        induction=s.induction,
        n=s.n,
        every=s.every,
        seed=s.seed,
    )
    return corpus, samples, choice


def _identity(losses_dir: Path, label: str, s: _Settings) -> dict[str, Any]:
    """The run's configuration (hashed: the directory's identity)."""
    return {
        "losses": str(losses_dir.resolve()),
        "model": label,
        "threshold": s.threshold,
        "min_samples": s.min_samples,
        "induction": s.induction,
        "n": s.n,
        "every": s.every,
        "projection_dim": None if s.similarity == "exact" else s.projection_dim,
        # Keys added later appear only where they matter, so earlier runs keep their hash.
        **({"similarity": "exact"} if s.similarity == "exact" else {}),
        **({"n_init": s.n_init} if s.assign == "kmeans" else {}),
        "param_filter": s.param_filter,
        "affinity": s.transform,
        "center": s.center,
        "knn": s.knn,
        "ks": list(s.ks),
        "assign": s.assign,
        "seed": s.seed,
        **({} if s.random_init is None else {"random_init": s.random_init}),
    }


def _check_arguments(
    transform: str,
    *,
    knn: int,
    assign: str,
    similarity: str,
    projection_dim: int | None,
    block_params: int | None,
) -> None:
    """Refuse bad settings before any file is read or written."""
    from quanta.qdg.cluster import AFFINITIES, KNN_AFFINITIES

    check_choice(transform, "affinity", _OWNER, list(AFFINITIES))
    check_choice(assign, "assign", _OWNER, ["kmeans", "cluster_qr", "discretize"])
    check_choice(similarity, "similarity", _OWNER, ["sketch", "exact"])
    if projection_dim is not None:
        check_int(projection_dim, "projection_dim", _OWNER, low=1)
    if block_params is not None:
        check_int(block_params, "block_params", _OWNER, low=1)
    check_int(knn, "knn", _OWNER, low=0)
    if knn and similarity == "exact":
        raise QuantaInputError(
            f"knn = {knn} needs similarity 'sketch' (the sparse affinity is built from stored "
            "gradient rows); the exact similarity is a dense n × n Gram matrix: use knn = 0."
        )
    if knn and transform not in KNN_AFFINITIES:
        allowed = ", ".join(repr(a) for a in KNN_AFFINITIES)
        raise QuantaInputError(
            f"The 'affinity' parameter of {_OWNER} must be one of {allowed} with knn = {knn} "
            f"(the sparse nearest-neighbour affinity; {transform!r} needs knn = 0, dense). "
            f"Got {transform!r} instead."
        )


def pick_model(models: pd.DataFrame, model: int | str) -> pd.Series:
    """The row of a losses directory's ``models`` table that ``model`` names.

    ``model`` is a label (``name@revision``), else a name (one row only), else an integer
    (or its text) indexing the models sorted by ``n_params`` — ties in the directory's order —
    where negative counts from the largest (−1). The row gets ``size_index`` (its place in that
    order, from 0). Anything else is refused with one line listing the models.

    >>> t = pd.DataFrame({"model": [0, 1, 2], "name": ["big", "small", "mid"],
    ...                   "label": ["big@step9", "small@step9", "mid@step9"],
    ...                   "n_params": [900, 100, 500]})
    >>> [pick_model(t, m)["name"] for m in (0, -1, -3, "mid", "big@step9", "1", 2)]
    ['small', 'big', 'small', 'mid', 'big', 'mid', 'big']
    """
    by_size = models.sort_values("n_params", kind="stable").reset_index(drop=True)
    by_size["size_index"] = np.arange(len(by_size))
    text = str(model).strip()
    for key in ("label", "name"):
        hit = by_size[by_size[key].astype(str) == text]
        if len(hit) == 1:
            return hit.iloc[0]
        if len(hit) > 1:
            raise QuantaInputError(
                f"--model {text!r} names {len(hit)} models ({', '.join(hit['label'])}); "
                "pass one label or index."
            )
    m = len(by_size)
    if isinstance(model, (int, np.integer)) and not isinstance(model, bool):
        index: int | None = int(model)
    else:
        index = int(text) if re.fullmatch(r"[+-]?\d+", text) else None
    if index is None or not -m <= index < m:
        listing = "; ".join(
            f"{i} {label} (N = {n:,})"
            for i, (label, n) in enumerate(zip(by_size["label"], by_size["n_params"], strict=True))
        )
        raise QuantaInputError(
            f"The 'model' parameter of {_OWNER} must be a model label, name or an index in "
            f"[{-m}, {m - 1}] (negative counts from the largest). Got {model!r} instead. "
            f"Models by size: {listing}."
        )
    return by_size.iloc[index]


def _clusters(samples: pd.DataFrame, labels: dict[int, np.ndarray]) -> pd.DataFrame:
    """One row per cluster of every K: rank by size, size, its five most common tokens and a
    one-line description (:func:`quanta.qdg.describe.describe_cluster`)."""
    from quanta.qdg.describe import describe_cluster

    rows = []
    tokens = samples["token"].to_numpy()
    previous = samples["previous"].to_numpy()
    for k, lab in labels.items():
        sizes = np.bincount(lab)
        order = np.argsort(-sizes, kind="stable")
        for rank, c in enumerate(order, start=1):
            members = np.flatnonzero(lab == c)
            top = pd.Series(tokens[members]).value_counts().head(5)
            rows.append(
                {
                    "K": k,
                    "cluster": int(c),
                    "rank": rank,
                    "size": int(sizes[c]),
                    "top_tokens": [f"{t!r}×{m}" for t, m in top.items()],
                    "description": describe_cluster(
                        tokens[members].tolist(), previous[members].tolist()
                    ),
                }
            )
    return pd.DataFrame(rows)
