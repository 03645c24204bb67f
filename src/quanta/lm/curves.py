"""Analyses of per-token losses (PAPER.md §3): mean loss vs N with a power-law fit, the
distribution p(L) and L·p(L) of per-token losses, per-token scaling curves, and monogenic vs
polygenic tokens — vectorized over all tokens.

* **Monogenic** at model index j (1 ≤ j < M, models ordered by size): loss > ``hi`` for every
  model before j and < ``lo`` for every model from j on (defaults 5.0 / 0.3 nats).
* **Polygenic**: least-squares slope of loss vs ln N below ``poly_slope`` (−0.3) with
  R² above ``poly_r2`` (0.98).

For a checkpoint suite (one model over training steps) the scale is the step instead of N;
several models × their checkpoints are analyzed by :mod:`quanta.lm.dynamics`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from quanta._validation import QuantaInputError, check_int, check_real
from quanta.scaling import PowerLawFit, fit_power_law
from quanta.store import writes_outputs

__all__ = [
    "HIST_EDGES",
    "LMAnalysis",
    "analyze_losses",
    "classify_tokens",
    "examples_in_context",
    "load_losses",
    "loss_density",
    "token_context",
    "write_lm_analysis",
]

_OWNER = "quanta lm analyze"
#: p(L) bins: 0 … 18 bits (the paper's range), in nats.
HIST_EDGES = np.linspace(0.0, 18 * np.log(2.0), 361)


def load_losses(directory: str | Path) -> tuple[dict[str, Any], pd.DataFrame, np.ndarray]:
    """``(manifest, models table, losses memmap [n_tokens, n_models])`` of a losses directory."""
    from quanta.store import read_result

    directory = Path(directory)
    manifest = read_result(directory, ("lm.losses",), "'quanta lm losses'")
    models = pd.read_parquet(directory / "models.parquet")
    losses = np.load(directory / "losses.npy", mmap_mode="r")
    return manifest, models, losses


def classify_tokens(
    losses: np.ndarray,
    scale: np.ndarray,
    *,
    hi: float = 5.0,
    lo: float = 0.3,
    poly_slope: float = -0.3,
    poly_r2: float = 0.98,
    block: int = 1 << 18,
) -> pd.DataFrame:
    """Per token: ``mono_index`` (first j where it is monogenic, −1 if none), ``slope`` and
    ``r2`` of loss vs ln(scale), and the flags ``monogenic`` / ``polygenic``.

    ``losses`` is ``[n_tokens, M]`` (nats) with its columns in increasing ``scale`` (``[M]``,
    > 0): non-embedding parameters N over a suite of sizes, or the training step over the
    checkpoints of one model, where monogenic reads "learned abruptly at step j" and polygenic
    "learned gradually" (:mod:`quanta.lm.dynamics`).

    >>> L = np.array([[9.0, 8.0, 0.1, 0.05], [4.0, 3.0, 2.0, 1.0]])
    >>> df = classify_tokens(L, np.array([1e6, 1e7, 1e8, 1e9]))
    >>> df["mono_index"].tolist(), df["monogenic"].tolist(), df["polygenic"].tolist()
    ([2, -1], [True, False], [False, True])
    """
    m = losses.shape[1]
    x = np.log(np.asarray(scale, dtype=np.float64))
    xc = x - x.mean()
    sxx = float((xc**2).sum())
    parts = []
    for i in range(0, len(losses), block):
        y = np.asarray(losses[i : i + block], dtype=np.float64)
        # Monogenic at j: min over models < j is > hi, max over models >= j is < lo.
        prefix_min = np.minimum.accumulate(y, axis=1)[:, :-1]  # [:, j-1] = min(y[:, :j])
        suffix_max = np.maximum.accumulate(y[:, ::-1], axis=1)[:, ::-1][:, 1:]  # max(y[:, j:])
        mono = (prefix_min > hi) & (suffix_max < lo)  # [:, j-1] ↔ index j
        mono_index = np.where(mono.any(axis=1), mono.argmax(axis=1) + 1, -1)
        yc = y - y.mean(axis=1, keepdims=True)
        slope = (yc @ xc) / sxx if sxx > 0 else np.full(len(y), np.nan)
        ss_tot = (yc**2).sum(axis=1)
        ss_res = ((yc - slope[:, None] * xc[None]) ** 2).sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            r2 = np.where(ss_tot > 0, 1.0 - ss_res / ss_tot, 0.0)
        parts.append(
            pd.DataFrame(
                {
                    "mono_index": mono_index.astype(np.int16),
                    "slope": slope.astype(np.float32),
                    "r2": r2.astype(np.float32),
                }
            )
        )
    out = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    out["monogenic"] = out["mono_index"] >= 0
    out["polygenic"] = (out["slope"] < poly_slope) & (out["r2"] > poly_r2) & (m >= 3)
    return out


@dataclass
class LMAnalysis:
    """Results of :func:`analyze_losses`; :meth:`write` stores them."""

    source: Path
    axis: str  # "N" (sizes) or "step" (checkpoints)
    models: pd.DataFrame  # per model: scale, mean loss, class fractions
    fit: PowerLawFit | None
    fit_models: list[int]
    histograms: pd.DataFrame  # model, bin_low, bin_high, density
    tokens: pd.DataFrame  # per token: doc_id, pos, token_id, classes
    curves: dict[int, np.ndarray]  # a few tokens' losses across the sorted models, by row
    settings: dict[str, Any] = field(default_factory=dict)

    def _r2_loglog(self) -> float | None:
        """R² of the fitted line in (ln scale, ln mean loss), over the fitted models."""
        if self.fit is None or not self.fit.success:
            return None
        rows = self.models.iloc[self.fit_models]
        log_y = np.log(rows["mean_loss"].to_numpy(dtype=float))
        residual = log_y - np.log(self.fit.predict(rows["scale"].to_numpy(dtype=float)))
        total = float(((log_y - log_y.mean()) ** 2).sum())
        return 1.0 - float((residual**2).sum()) / total if total > 0 else None

    def summary(self) -> dict[str, Any]:
        fit = None
        if self.fit is not None:
            fit = {
                "alpha": self.fit.alpha if self.fit.success else None,
                "alpha_ci": self.fit.alpha_ci,
                "c1": self.fit.c1,
                "r2_loglog": self._r2_loglog(),
                "success": self.fit.success,
                "message": self.fit.message,
                "models": self.fit_models,
            }
        return {
            "source": str(self.source),
            "axis": self.axis,
            "settings": self.settings,
            "fit": fit,
            "models": json.loads(self.models.to_json(orient="records")),
            "n_tokens": len(self.tokens),
            "n_monogenic": int(self.tokens["monogenic"].sum()),
            "n_polygenic": int(self.tokens["polygenic"].sum()),
        }


def _scale(models: pd.DataFrame) -> tuple[str, np.ndarray]:
    steps = [re.fullmatch(r"step(\d+)", str(r)) for r in models["revision"]]
    if models["n_params"].nunique() == 1 and len(models) > 1 and all(steps):
        return "step", np.array([int(s.group(1)) for s in steps if s], dtype=np.float64)
    return "N", models["n_params"].to_numpy(dtype=np.float64)


def _refuse_models_by_revisions(models: pd.DataFrame, directory: str | Path) -> None:
    """A directory of several models, some at several revisions, has no one scale axis."""
    names = models["name"]
    if names.nunique() > 1 and names.duplicated().any():
        raise QuantaInputError(
            f"'{directory}' holds {names.nunique()} models × their checkpoints ('lm losses "
            f"--checkpoints'); analyze it with 'quanta lm dynamics {directory}'."
        )


def loss_density(losses: np.ndarray) -> np.ndarray:
    """p(L) of per-token losses (nats) on :data:`HIST_EDGES` (per nat; integrates to 1);
    losses beyond 18 bits count in the last bin."""
    col = np.asarray(losses, dtype=np.float64)
    counts, _ = np.histogram(np.clip(col, 0, HIST_EDGES[-1] - 1e-9), bins=HIST_EDGES)
    return counts / max(len(col), 1) / np.diff(HIST_EDGES)


def analyze_losses(
    directory: str | Path,
    *,
    fit_models: list[int] | None = None,
    hi: float = 5.0,
    lo: float = 0.3,
    poly_slope: float = -0.3,
    poly_r2: float = 0.98,
    bootstrap: int = 1000,
    seed: int = 0,
    columns: list[int] | None = None,
) -> LMAnalysis:
    """Analyze a ``quanta lm losses`` directory (see the module docstring).

    ``columns`` restricts the analysis to those columns of ``losses.npy`` (e.g. the checkpoints
    of one model: :func:`quanta.lm.dynamics.analyze_dynamics`); by default every column, which
    is refused for a directory of several models × their checkpoints (use ``lm dynamics``)."""
    hi = check_real(hi, "hi", _OWNER, low=0.0)
    lo = check_real(lo, "lo", _OWNER, low=0.0)
    if lo >= hi:
        raise QuantaInputError(f"--lo ({lo}) must be below --hi ({hi}).")
    bootstrap = check_int(bootstrap, "bootstrap", _OWNER, low=0)
    manifest, models, losses = load_losses(directory)
    models, losses = _select_columns(models, losses, columns, directory)
    axis, scale = _scale(models)
    order = np.argsort(scale, kind="stable")
    models = models.iloc[order].reset_index(drop=True).assign(scale=scale[order])
    losses_sorted = losses[:, order] if not np.array_equal(order, np.arange(len(order))) else losses
    chosen, fit = _mean_loss_fit(models, fit_models, bootstrap, seed)
    classes = classify_tokens(
        losses_sorted, scale, hi=hi, lo=lo, poly_slope=poly_slope, poly_r2=poly_r2
    )
    curves = _example_curves(classes, losses_sorted, seed)
    index = pd.read_parquet(Path(directory) / "corpus" / "index.parquet")
    tokens = pd.concat([index.reset_index(drop=True), classes], axis=1)
    if len(models) >= 2:
        models["frac_monogenic_here"] = [
            float((classes["mono_index"] == j).mean()) for j in range(len(models))
        ]
    models["frac_below_0.1"] = [
        float((np.asarray(losses_sorted[:, j]) < 0.1).mean()) for j in range(len(models))
    ]
    return LMAnalysis(
        source=Path(directory),
        axis=axis,
        models=models,
        fit=fit,
        fit_models=chosen,
        histograms=_histograms(models, losses_sorted),
        tokens=tokens,
        curves=curves,
        settings={
            "hi": hi,
            "lo": lo,
            "poly_slope": poly_slope,
            "poly_r2": poly_r2,
            "bootstrap": bootstrap,
            "seed": seed,
            "suite": manifest["config"]["suite"],
            "corpus": manifest["config"]["corpus"],
        },
    )


def _select_columns(
    models: pd.DataFrame, losses: Any, columns: list[int] | None, directory: str | Path
) -> tuple[pd.DataFrame, Any]:
    """The models and losses of ``columns`` (default all: refused for models × revisions)."""
    if columns is None:
        _refuse_models_by_revisions(models, directory)
        return models, losses
    bad_columns = [c for c in columns if not 0 <= c < len(models)]
    if bad_columns or not columns:
        raise QuantaInputError(
            f"columns {bad_columns or columns} out of range: '{directory}' has columns "
            f"0…{len(models) - 1}."
        )
    return models.iloc[columns].reset_index(drop=True), np.asarray(losses[:, columns])


def _mean_loss_fit(
    models: pd.DataFrame, fit_models: list[int] | None, bootstrap: int, seed: int
) -> tuple[list[int], Any]:
    """The models in the mean-loss fit (positions by scale) and the fit (None below 2 scales)."""
    chosen = list(range(len(models))) if fit_models is None else fit_models
    bad = [i for i in chosen if not 0 <= i < len(models)]
    if bad:
        raise QuantaInputError(
            f"--fit-models {bad} out of range: the suite has models 0…{len(models) - 1}."
        )
    if len(set(models["scale"].iloc[chosen])) < 2:
        return chosen, None
    fit = fit_power_law(
        models["scale"].iloc[chosen].to_numpy(),
        models["mean_loss"].iloc[chosen].to_numpy(),
        offset=False,
        bootstrap=bootstrap,
        seed=seed,
    )
    return chosen, fit


def _histograms(models: pd.DataFrame, losses: Any) -> pd.DataFrame:
    """p(L) of every model (column of ``losses``) over :data:`HIST_EDGES`."""
    hist = [
        pd.DataFrame(
            {
                "model": int(models["model"].iloc[j]),
                "bin_low": HIST_EDGES[:-1],
                "bin_high": HIST_EDGES[1:],
                "density": loss_density(losses[:, j]),
            }
        )
        for j in range(len(models))
    ]
    return pd.concat(hist, ignore_index=True)


def _example_curves(classes: pd.DataFrame, losses: Any, seed: int) -> dict[int, np.ndarray]:
    """Up to 30 seeded monogenic and 30 polygenic tokens: row → its loss at every scale."""
    rng = np.random.default_rng(seed)
    curves = {}
    for kind in ("monogenic", "polygenic"):
        rows = np.flatnonzero(classes[kind].to_numpy())
        for r in np.sort(rng.choice(rows, size=min(30, len(rows)), replace=False)):
            curves[int(r)] = np.asarray(losses[r], dtype=np.float64)
    return curves


def token_context(
    directory: str | Path, rows: list[int], *, context_tokens: int = 30, tokenizer: Any = None
) -> pd.DataFrame:
    """Text of each index row: up to ``context_tokens`` tokens before it and the predicted
    token itself (decoded with the suite's tokenizer)."""
    from quanta.lm.corpus import load_corpus

    directory = Path(directory)
    corpus = load_corpus(directory / "corpus")
    if tokenizer is None:
        from quanta.lm.suite import ModelRef, load_tokenizer
        from quanta.store import resolve_paths

        config = json.loads((directory / "manifest.json").read_text())["config"]
        first = resolve_paths(config, directory)["models"][0]
        tokenizer = load_tokenizer(ModelRef(first["name"], first["source"], first["revision"]))
    index = pd.read_parquet(directory / "corpus" / "index.parquet")
    out = []
    for r in rows:
        doc, pos = int(index["doc_id"].iloc[r]), int(index["pos"].iloc[r])
        ids = corpus.doc(doc)
        out.append(
            {
                "row": r,
                "doc": corpus.names[doc],
                "pos": pos,
                "context": tokenizer.decode(ids[max(0, pos - context_tokens) : pos].tolist()),
                "token": tokenizer.decode([int(ids[pos])]),
            }
        )
    return pd.DataFrame(out)


@writes_outputs(lambda a: a["out"] if a["out"] is not None else a["analysis"].source / "analysis")
def write_lm_analysis(analysis: LMAnalysis, out: str | Path | None = None) -> list[Path]:
    """Tables (JSON + Parquet), example tokens and PNG figures into ``out``
    (default ``SOURCE/analysis``)."""
    from quanta import plots
    from quanta.store import write_json, write_parquet

    out = Path(out) if out is not None else analysis.source / "analysis"
    written = [out / "analysis.json", out / "models.parquet", out / "histograms.parquet"]
    write_json(written[0], analysis.summary())
    write_parquet(written[1], analysis.models)
    write_parquet(written[2], analysis.histograms)
    write_parquet(out / "tokens.parquet", analysis.tokens)
    written.append(out / "tokens.parquet")
    examples = _examples(analysis)
    if len(examples):
        write_parquet(out / "examples.parquet", examples)
        written.append(out / "examples.parquet")
    for name, fig in plots.lm_figures(analysis).items():
        written.append(plots.save_figure(fig, out / f"{name}.png"))
    return written


def _examples(analysis: LMAnalysis, n: int = 8, seed: int = 0) -> pd.DataFrame:
    """A few monogenic and polygenic tokens in context, with their losses."""
    flags = {k: analysis.tokens[k].to_numpy() for k in ("monogenic", "polygenic")}
    return examples_in_context(
        analysis.source, flags, analysis.models["model"].to_numpy(), n=n, seed=seed
    )


def examples_in_context(
    directory: str | Path,
    flags: dict[str, np.ndarray],
    columns: np.ndarray,
    *,
    n: int = 8,
    seed: int = 0,
) -> pd.DataFrame:
    """Up to ``n`` tokens of each class of ``flags`` (name → bool per index row), picked at
    random with ``seed``, in context (:func:`token_context`) with a ``kind`` and their
    ``losses`` (nats) over ``columns`` of ``losses.npy``, in that order."""
    rng = np.random.default_rng(seed)
    picks = []
    for kind, flag in flags.items():
        rows = np.flatnonzero(flag)
        if len(rows):
            chosen = np.sort(rng.choice(rows, size=min(n, len(rows)), replace=False))
            picks.append(pd.DataFrame({"row": chosen, "kind": kind}))
    if not picks:
        return pd.DataFrame()
    picked = pd.concat(picks, ignore_index=True)
    context = token_context(directory, picked["row"].tolist())
    losses = load_losses(directory)[2]
    loss_rows = np.asarray(losses[picked["row"].to_numpy()])[:, np.asarray(columns)]
    context["kind"] = picked["kind"].to_numpy()
    context["losses"] = [list(map(float, r)) for r in loss_rows]
    return context
