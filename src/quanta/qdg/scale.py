"""Quanta across scale: is each QDG cluster learned abruptly at some scale, in order of its
frequency? (The paper's hypothesis, PAPER.md §1; the paper never tests it on its clusters.)

For every cluster of one K of a ``quanta qdg run`` directory, the mean loss (nats) of its tokens
under every model of a ``quanta lm losses`` directory — across model sizes N (each model's final
revision) and, for every model with ≥ 2 checkpoints ``step<S>`` in the directory, across steps
S — then the scale at which each cluster is *learned* and the log-log slope of that scale
against the cluster's frequency rank and frequency, with a bootstrap CI over clusters.

**Learned.** A cluster's curve ``L(x)`` (x = N or S, sorted) is learned at the smallest x from
which it *stays* below a threshold ``T``: by default halfway, in log-loss, between its first
and last point (``T = sqrt(L_first · L_last)``), or an absolute ``threshold`` in nats. The
crossing is interpolated linearly in (ln x, ln L) between the last point at or above T and the
first point of the run below it, so the estimate is not pinned to the few grid points. Why
this definition: clusters differ in irreducible loss (a cluster of hard tokens may never reach
0.1 nats at these scales), so a fixed threshold measures difficulty as much as timing, whereas
the half-way point of each cluster's own drop is the centre of a reverse-S (the toy world's
abrupt transition) and is defined for a smooth power-law decline too; "stays below" ignores a
noisy dip before the drop; log space because the hypothesis is a power law in x. A curve that
falls by less than ``min_drop`` nats from first to last point is *not learned across this
range* ("no_drop"); with an absolute threshold a cluster below it at the first point is learned
*at or before the first* model ("at_first"), one never below it from some point on is
*never* learned ("never"). Censored clusters are counted and left out of the fit.

**Prediction** (the quantization model, PAPER.md §1). Quanta are learned in order of
frequency ``p_k ∝ k^-(α+1)``, n quanta need N ∝ n parameters, so the rank-k cluster is learned
at N_k ∝ k: slope **1** against rank and **−1/(1+α)** against frequency. In time, subtask k
converges at S_k ∝ 1/p_k: slope **−1** against frequency and **1+α** against rank. α is the
mean-loss exponent α_N (from the QDG run's ``zipf.json`` or ``lm analyze``), when known.

Samples are matched to the losses directory's rows by ``(doc_id, pos, token_id)`` through its
corpus index table, never by row number: two losses directories of one corpus but different
``--max-len``/``--max-docs`` number their rows differently.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from quanta._validation import QuantaInputError, check_int, check_real
from quanta.store import read_outputs, writes_outputs

__all__ = ["ClusterScaling", "cluster_scaling", "learned_scale", "write_cluster_scaling"]

_OWNER = "quanta qdg scale"
STATUSES = ("learned", "at_first", "never", "no_drop")
PREDICTIONS = {
    "N vs rank": "1 (n ∝ N: the rank-k quantum is learned at N ∝ k)",
    "N vs frequency": "−1/(1+α_N) (p_k ∝ k^-(1+α))",
    "step vs frequency": "−1 (convergence time ∝ 1/p)",
    "step vs rank": "1+α_N",
}
DEFINITION = (
    "learned at the smallest scale from which the cluster's mean loss stays below T, "
    "interpolated in (ln scale, ln loss); T = sqrt(L_first·L_last) (halfway in log-loss) "
    "unless an absolute threshold is given; a drop below min_drop nats = not learned"
)


@dataclass
class ClusterScaling:
    """Result of :func:`cluster_scaling`; :func:`write_cluster_scaling` stores it.

    ``curves``: one row per cluster × model × group (group ``N`` or ``step:<model name>``):
    mean loss (nats) of the cluster's tokens. ``learned``: one row per cluster × group, its
    learned scale and status. ``slopes``: one row per group × versus (rank | frequency).
    """

    curves: pd.DataFrame
    learned: pd.DataFrame
    slopes: pd.DataFrame
    summary: dict[str, Any] = field(default_factory=dict)


def learned_scale(
    scale: np.ndarray, curves: np.ndarray, *, threshold: float | None = None, min_drop: float = 0.1
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Learned scale of each curve (see the module docstring).

    Parameters
    ----------
    scale : array [M]
        Increasing positive scales (N or steps).
    curves : array [C, M]
        Loss (nats, > 0) of each curve at each scale.
    threshold : float, optional
        Absolute threshold in nats; default: halfway in log-loss between first and last point.
    min_drop : float
        Curves falling by less than this (nats, first − last) are "no_drop".

    Returns
    -------
    (learned, status, threshold) : arrays [C]
        ``learned`` is NaN unless ``status == "learned"``.

    >>> x = np.array([1.0, 10.0, 100.0, 1000.0])
    >>> L = np.array([[4.0, 4.0, 1.0, 1.0], [4.0, 4.0, 4.0, 3.99], [4.0, 3.0, 1.5, 1.0]])
    >>> n, status, t = learned_scale(x, L)
    >>> np.round(n, 1).tolist(), status.tolist(), np.round(t, 2).tolist()
    ([31.6, nan, 38.5], ['learned', 'no_drop', 'learned'], [2.0, 3.99, 2.0])
    """
    scale = np.asarray(scale, dtype=np.float64)
    y = np.log(np.maximum(np.asarray(curves, dtype=np.float64), 1e-12))  # (C, M)
    first, last = y[:, 0], y[:, -1]
    t = (first + last) / 2 if threshold is None else np.full(len(y), np.log(threshold))
    below = y < t[:, None]
    stays = np.logical_and.accumulate(below[:, ::-1], axis=1)[:, ::-1]  # below from j on
    j = np.where(stays.any(axis=1), stays.argmax(axis=1), -1)
    status = np.full(len(y), "learned", dtype=object)
    status[j == 0] = "at_first"
    status[j < 0] = "never"
    drop = np.exp(first) - np.exp(last)
    status[(status == "learned") & (drop < min_drop)] = "no_drop"
    if threshold is None:
        status[drop < min_drop] = "no_drop"
    out = np.full(len(y), np.nan)
    ok = np.flatnonzero(status == "learned")
    lx = np.log(scale)
    hi, lo = y[ok, j[ok] - 1], y[ok, j[ok]]  # at or above T, then below it
    frac = (hi - t[ok]) / np.where(hi > lo, hi - lo, 1.0)
    out[ok] = np.exp(lx[j[ok] - 1] + frac * (lx[j[ok]] - lx[j[ok] - 1]))
    return out, status.astype(str), np.exp(t)


def _slope(x: np.ndarray, y: np.ndarray, bootstrap: int, seed: int) -> dict[str, Any]:
    """OLS slope of ln y on ln x with a percentile bootstrap CI over points (clusters)."""
    lx, ly = np.log(x), np.log(y)
    row: dict[str, Any] = {"n_points": len(lx), "slope": np.nan, "intercept": np.nan}
    row |= {"r2": np.nan, "ci_low": np.nan, "ci_high": np.nan}
    if len(lx) < 3 or np.ptp(lx) == 0:
        row["message"] = f"{len(lx)} learned clusters with distinct x; a fit needs 3"
        return row
    slope, intercept = np.polyfit(lx, ly, 1)
    resid = ly - (slope * lx + intercept)
    r2 = 1 - (resid**2).sum() / max(((ly - ly.mean()) ** 2).sum(), 1e-300)
    row |= {"slope": slope, "intercept": intercept, "r2": r2, "message": "ok"}
    if bootstrap:
        idx = np.random.default_rng(seed).integers(0, len(lx), (bootstrap, len(lx)))
        bx, by = lx[idx], ly[idx]
        bxc = bx - bx.mean(axis=1, keepdims=True)
        var = (bxc**2).sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            b = np.where(
                var > 0, (bxc * (by - by.mean(axis=1, keepdims=True))).sum(1) / var, np.nan
            )
        if np.isfinite(b).sum() >= 2:
            row["ci_low"], row["ci_high"] = np.nanpercentile(b, [2.5, 97.5])
    return row


# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class _QDGRun:
    """What the analysis reads from a ``quanta qdg run`` directory (and its losses input)."""

    k: int  # the clustering analyzed
    source: Path  # the losses directory the run selected from
    spec: dict[str, Any]  # its model: name, source, revision
    corpus: dict[str, Any]  # that directory's config: corpus spec, bos, text field, …
    samples: pd.DataFrame  # doc_id, pos, token_id
    labels: np.ndarray  # [n_samples] cluster of each sample at K = k
    clusters: pd.DataFrame  # the rows of clusters.parquet at K = k (may be empty)
    alpha_n: float | None  # the run's mean-loss exponent, when it had one


def _qdg_inputs(qdg_dir: Path, k: int | None) -> _QDGRun:
    """The QDG run's samples, labels of K, its model spec and corpus spec."""
    from quanta.qdg.run import pick_model
    from quanta.store import read_result

    manifest = read_result(qdg_dir, ("qdg.run",), "'quanta qdg run'")
    cfg = manifest["config"]
    ks = [int(v) for v in cfg["ks"]]
    k = max(ks) if k is None else check_int(k, "k", _OWNER, low=2)
    if k not in ks:
        raise QuantaInputError(
            f"K = {k} was not clustered in '{qdg_dir}'; it has K = {', '.join(map(str, ks))}."
        )
    source = Path(cfg["losses"])
    src = read_result(source, ("lm.losses",), "'quanta lm losses' (the QDG run's input)")
    models = pd.read_parquet(source / "models.parquet")
    # The run records its model as a label (an index in runs made before labels were recorded):
    # pick_model resolves both exactly as the run did.
    column = int(pick_model(models, cfg["model"])["model"])
    samples = pd.read_parquet(qdg_dir / "samples.parquet", columns=["doc_id", "pos", "token_id"])
    labels = pd.read_parquet(qdg_dir / "labels.parquet")[f"K{k}"].to_numpy()
    clusters_file = qdg_dir / "clusters.parquet"
    clusters = pd.read_parquet(clusters_file) if clusters_file.is_file() else pd.DataFrame()
    zipf = json.loads((qdg_dir / "zipf.json").read_text())
    return _QDGRun(
        k=k,
        source=source,
        spec=src["config"]["models"][column],
        corpus=src["config"],
        samples=samples,
        labels=labels,
        clusters=clusters[clusters["K"] == k] if len(clusters) else clusters,
        alpha_n=zipf.get("alpha_n"),
    )


def _same_corpus_spec(a: dict[str, Any], b: dict[str, Any]) -> bool:
    def norm(spec: str) -> str:
        p = Path(spec).expanduser()
        return str(p.resolve()) if p.exists() else spec

    keys = ("bos", "text_field")
    return norm(str(a["corpus"])) == norm(str(b["corpus"])) and all(
        a.get(x) == b.get(x) for x in keys
    )


def _match_rows(q: _QDGRun, losses_dir: Path, cfg: dict[str, Any]) -> np.ndarray:
    """Rows of ``losses_dir`` holding the QDG samples, by (doc_id, pos, token_id); refuses a
    losses directory of another corpus."""
    other = (
        f"'{losses_dir}' was computed on another corpus than the QDG run "
        f"({cfg['corpus']!r} vs {q.corpus['corpus']!r})"
    )
    if not _same_corpus_spec(cfg, q.corpus):
        raise QuantaInputError(f"{other}; cluster-scale analysis needs the same corpus.")
    samples = q.samples
    index = pd.read_parquet(losses_dir / "corpus" / "index.parquet")
    merged = samples.merge(index, on=["doc_id", "pos"], how="left", suffixes=("", "_here"))
    missing = int(merged["row"].isna().sum())
    if missing:
        raise QuantaInputError(
            f"{missing} of the {len(samples)} QDG samples (doc_id, pos) are not in the corpus of "
            f"'{losses_dir}' (fewer documents or a shorter --max-len?); compute its losses on "
            "at least the QDG run's documents."
        )
    docs_here = pd.read_parquet(losses_dir / "corpus" / "docs.parquet")["name"].to_numpy()
    docs_there = pd.read_parquet(q.source / "corpus" / "docs.parquet")["name"].to_numpy()
    ids = samples["doc_id"].to_numpy()
    if (merged["token_id"].to_numpy() != merged["token_id_here"].to_numpy()).any() or (
        docs_here[ids] != docs_there[ids]
    ).any():
        raise QuantaInputError(f"{other}: its tokens differ at the QDG samples' positions.")
    return merged["row"].to_numpy(dtype=np.int64)


def _groups(models: pd.DataFrame) -> list[tuple[str, str, str, pd.DataFrame]]:
    """``(group, axis, model name, rows ordered by scale with a 'scale' column)``: sizes (each
    model's last revision) when N varies, and steps for every model with ≥ 2 checkpoints."""
    from quanta.lm.suite import revision_step

    m = models.copy()
    if "step" not in m:
        m["step"] = [revision_step(str(r)) for r in m["revision"]]
    out = []
    last = m.sort_values("step", kind="stable").groupby("name", sort=False).tail(1)
    if last["n_params"].nunique() >= 2:
        sizes = last.sort_values("n_params", kind="stable").assign(scale=lambda d: d["n_params"])
        out.append(("N", "N", "", sizes.reset_index(drop=True)))
    for name, rows in m[m["step"] > 0].groupby("name", sort=False):  # step 0: no log scale
        if rows["step"].nunique() >= 2:
            ordered = rows.sort_values("step", kind="stable").assign(scale=lambda d: d["step"])
            out.append((f"step:{name}", "step", str(name), ordered.reset_index(drop=True)))
    return out


def _toy_slope(toy: Path | None) -> list[dict[str, Any]] | None:
    """The toy world's convergence-step-vs-p_i slopes from a ``parity analyze`` output."""
    if toy is None:
        return None
    path = toy / "analysis.json"
    if not path.is_file():  # the run or sweep directory that holds analysis/
        path = toy / "analysis" / "analysis.json"
    if path.is_file():  # a damaged analysis is refused, not read
        read_outputs(path.parent, f"'quanta parity analyze' (into '{path.parent}')")
    try:
        slopes = json.loads(path.read_text()).get("slopes", [])
    except (OSError, ValueError):
        return None
    keep = ("group", "alpha", "slope", "ci_low", "ci_high", "predicted", "n_points")
    rows = [
        {k: s.get(k) for k in keep} for s in slopes if s.get("quantity") == "convergence_step_vs_p"
    ]
    return rows or None


# --------------------------------------------------------------------------- the analysis


def cluster_scaling(
    qdg_dir: str | Path,
    losses_dir: str | Path,
    *,
    k: int | None = None,
    threshold: float | None = None,
    min_drop: float = 0.1,
    bootstrap: int = 1000,
    seed: int = 0,
    toy: str | Path | None = None,
) -> ClusterScaling:
    """Per-cluster loss curves across scale, learned scales and their slopes vs frequency.

    Parameters
    ----------
    qdg_dir : path-like
        A complete ``quanta qdg run`` directory.
    losses_dir : path-like
        A ``quanta lm losses`` directory on the same corpus that includes the QDG run's model
        (its sizes suite, or the checkpoints of that model, or both).
    k : int, optional
        Which clustering; default the largest K of the run.
    threshold : float, optional
        Absolute "learned" threshold in nats; default halfway in log-loss (module docstring).
    min_drop : float, default 0.1
        Nats; a cluster whose mean loss falls less across the range is "no_drop".
    bootstrap : int, default 1000
        Resamples of clusters for the slope CIs (0: none).
    seed : int, default 0
    toy : path-like, optional
        A ``parity analyze`` output (or the run directory holding ``analysis/``): its
        convergence-step-vs-p_i slope is reported beside. Missing: left out (a note).

    Raises
    ------
    QuantaInputError
        The losses directory lacks the QDG run's model, was computed on another corpus, or
        varies neither N nor steps.
    """
    settings = {
        "k": k,
        "threshold": (
            None
            if threshold is None
            else check_real(threshold, "threshold", _OWNER, low=0.0, low_open=True)
        ),
        "min_drop": check_real(min_drop, "min_drop", _OWNER, low=0.0),
        "bootstrap": check_int(bootstrap, "bootstrap", _OWNER, low=0),
        "seed": check_int(seed, "seed", _OWNER, low=0),
        "toy": None if toy is None else str(toy),
    }
    from quanta.lm.curves import load_losses

    qdg_dir, losses_dir = Path(qdg_dir), Path(losses_dir)
    q = _qdg_inputs(qdg_dir, k)
    manifest, models, losses = load_losses(losses_dir)
    cfg = manifest["config"]
    qdg_n = _qdg_model_size(q, cfg, models, losses_dir)
    rows = _match_rows(q, losses_dir, cfg)
    groups = _groups(models)
    if not groups:
        raise QuantaInputError(
            f"'{losses_dir}' varies neither model size nor training step (one model, no "
            "checkpoints): nothing to compare across scale."
        )
    clusters, means = _cluster_means(q, losses, rows)
    alpha = q.alpha_n if q.alpha_n is not None else _fitted_alpha(losses_dir)
    parts = [_across(clusters, means, group, alpha, settings) for group in groups]
    slopes = pd.DataFrame([row for part in parts for row in part.slopes])
    summary = {
        "qdg": str(qdg_dir.resolve()),
        "losses": str(losses_dir.resolve()),
        "qdg_model": f"{q.spec['name']}@{q.spec.get('revision')}",
        "qdg_model_n_params": qdg_n,
        "largest_n_params": int(models["n_params"].max()),
        "K": q.k,
        "n_samples": len(q.labels),
        "n_clusters": len(clusters),
        "alpha_n": alpha,
        "definition": DEFINITION,
        "settings": {**settings, "k": q.k},
        "predictions": PREDICTIONS,
        "groups": [part.info for part in parts],
        "slopes": json.loads(slopes.to_json(orient="records", double_precision=10)),
        "toy": _toy_slope(Path(toy)) if toy is not None else None,
    }
    return ClusterScaling(
        curves=pd.concat([c for part in parts for c in part.curves], ignore_index=True),
        learned=pd.concat([part.learned for part in parts], ignore_index=True),
        slopes=slopes,
        summary=summary,
    )


def _qdg_model_size(q: _QDGRun, cfg: dict[str, Any], models: pd.DataFrame, losses_dir: Path) -> int:
    """Non-embedding parameters of the QDG run's model, which ``losses_dir`` must hold."""
    spec = q.spec
    ident = (spec["name"], spec["source"], spec.get("revision"))
    specs = [(m["name"], m["source"], m.get("revision")) for m in cfg["models"]]
    if ident not in set(specs):
        have = ", ".join(
            m["name"] + (f"@{m['revision']}" if m.get("revision") else "") for m in cfg["models"]
        )
        raise QuantaInputError(
            f"The QDG run clustered {spec['name']}@{spec.get('revision')} ({spec['source']}), "
            f"which is not among the models of '{losses_dir}' ({have})."
        )
    return int(models.loc[models["model"] == specs.index(ident), "n_params"].iloc[0])


def _cluster_means(q: _QDGRun, losses: np.ndarray, rows: np.ndarray) -> tuple[pd.DataFrame, Any]:
    """The clusters (K, cluster, rank by size, size, frequency, top tokens) and each one's mean
    loss (nats) under every model: ``[n_clusters, n_models]``."""
    order = np.argsort(rows, kind="stable")  # memmap reads in row order
    per_token = np.empty((len(rows), losses.shape[1]))
    per_token[order] = np.asarray(losses[rows[order]], dtype=np.float64)  # (n_samples, n_models)
    ids, lab = np.unique(q.labels, return_inverse=True)
    sizes = np.bincount(lab)
    sums = np.stack([np.bincount(lab, weights=per_token[:, c]) for c in range(losses.shape[1])], 1)
    means = sums / sizes[:, None]  # (n_clusters, n_models)
    rank = np.empty(len(ids), dtype=np.int64)
    rank[np.argsort(-sizes, kind="stable")] = np.arange(1, len(ids) + 1)
    clusters = pd.DataFrame(
        {"K": q.k, "cluster": ids, "rank": rank, "size": sizes, "frequency": sizes / len(lab)}
    )
    if "top_tokens" in q.clusters:
        tops = q.clusters.set_index("cluster")["top_tokens"]
        clusters["top_tokens"] = [", ".join(list(tops.get(c, []))[:3]) for c in ids]
    return clusters, means


def _fitted_alpha(losses_dir: Path) -> float | None:
    """The mean-loss exponent of ``quanta lm analyze`` on ``losses_dir``, when it was run."""
    info = losses_dir / "analysis" / "analysis.json"
    alpha: float | None = (
        (json.loads(info.read_text()).get("fit") or {}).get("alpha") if info.is_file() else None
    )
    return alpha


@dataclass(frozen=True)
class _Across:
    """One scale group (sizes, or one model's steps): its curves, learned scales, slopes."""

    curves: list[pd.DataFrame]  # one per model of the group
    learned: pd.DataFrame
    slopes: list[dict[str, Any]]  # vs rank, vs frequency
    info: dict[str, Any]  # the summary's entry of this group


def _across(
    clusters: pd.DataFrame,
    means: np.ndarray,
    scale_group: tuple[str, str, str, pd.DataFrame],
    alpha: float | None,
    settings: dict[str, Any],
) -> _Across:
    """Curves, learned scales and their slopes vs rank and frequency of one scale group."""
    group, axis, name, g = scale_group
    cols = g["model"].to_numpy(dtype=np.int64)
    scale = g["scale"].to_numpy(dtype=np.float64)
    curves = [
        clusters.assign(
            group=group,
            axis=axis,
            model=int(cols[j]),
            name=g["name"].iloc[j],
            revision=str(g["revision"].iloc[j]),
            n_params=int(g["n_params"].iloc[j]),
            step=int(g["step"].iloc[j]),
            scale=scale[j],
            mean_loss=means[:, cols[j]],
        )
        for j in range(len(g))
    ]
    at, status, thr = learned_scale(
        scale, means[:, cols], threshold=settings["threshold"], min_drop=settings["min_drop"]
    )
    learned = clusters.assign(
        group=group,
        axis=axis,
        loss_first=means[:, cols[0]],
        loss_last=means[:, cols[-1]],
        threshold_nats=thr,
        learned_scale=at,
        status=status,
    )
    ok = learned[learned["status"] == "learned"]
    counts = {s: int((learned["status"] == s).sum()) for s in STATUSES}
    slopes = [
        {
            "group": group,
            "axis": axis,
            "model": name,
            "versus": versus,
            **_slope(
                x.to_numpy(float),
                ok["learned_scale"].to_numpy(),
                settings["bootstrap"],
                settings["seed"],
            ),
            "predicted": _predicted(axis, versus, alpha),
            **{f"n_{s}": n for s, n in counts.items()},
        }
        for versus, x in (("rank", ok["rank"]), ("frequency", ok["frequency"]))
    ]
    info = {"group": group, "axis": axis, "model": name, "scales": scale.tolist()}
    return _Across(curves, learned, slopes, {**info, **counts})


def _predicted(axis: str, versus: str, alpha: float | None) -> float:
    """The quantization model's slope (module docstring); NaN where it needs an unknown α."""
    if axis == "N":
        if versus == "rank":
            return 1.0
        return -1.0 / (1.0 + alpha) if alpha is not None else np.nan
    if versus == "frequency":
        return -1.0
    return 1.0 + alpha if alpha is not None else np.nan


@writes_outputs("out")
def write_cluster_scaling(result: ClusterScaling, out: str | Path) -> list[Path]:
    """``scale.json``, ``curves.parquet``, ``learned.parquet``, ``slopes.parquet`` and one
    pair of figures per group (``curves_<group>.png``, ``learned_<group>.png``) into ``out``;
    each file replaced atomically, nothing else touched."""
    from quanta.plots import save_figure
    from quanta.qdg.scale_plots import cluster_scale_figures
    from quanta.store import write_json, write_parquet

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise QuantaInputError(f"Output path '{out}' exists and is not a directory.")
    written = [out / "scale.json", out / "curves.parquet", out / "learned.parquet"]
    write_json(written[0], result.summary)
    write_parquet(written[1], result.curves)
    write_parquet(written[2], result.learned)
    write_parquet(out / "slopes.parquet", result.slopes)
    written.append(out / "slopes.parquet")
    for name, fig in cluster_scale_figures(result).items():
        written.append(save_figure(fig, out / f"{name}.png"))
    return written
