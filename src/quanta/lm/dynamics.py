"""Training dynamics (the paper's Pythia-over-steps panels): per-token losses of every model of a
suite at its checkpoints, read along the training step instead of the model size.

Input: a ``quanta lm losses --checkpoints …`` directory whose columns are (model, revision)
pairs with revisions named ``step<N>`` — a mini-suite's saved checkpoints or Pythia's hub
revisions (``step1000`` … ``step143000``), the same code for both. Output
(:func:`analyze_dynamics`, written by :func:`write_dynamics` to ``DIR/dynamics/``):

* **mean loss vs step per model** (every column; ``mean_loss.parquet``, figure
  ``mean_loss_steps.png``, log-x);
* for one model (default: the largest), along its steps: the distribution of per-token losses
  p(L) and its contribution to the mean L·p(L) at every step (``histograms.parquet``,
  ``loss_distribution_steps.png``), and per-token curves over steps (``token_curves_steps.png``)
  with every token classified (``tokens.parquet``) by the rules of
  :func:`quanta.lm.curves.classify_tokens` with the step as the scale:

  - **abrupt** ("learned abruptly in time", the monogenic rule along steps): loss > ``hi`` at
    every checkpoint before j and < ``lo`` at every checkpoint from j on (defaults 5.0 / 0.3
    nats, the paper's); ``learned_step`` is the step of checkpoint j;
  - **gradual** (polygenic-like): least-squares slope of loss vs ln(step) < ``gradual_slope``
    (−0.3 nats per e-fold) with R² > ``gradual_r2`` (0.98), over ≥ 3 checkpoints.

  ``examples.parquet`` holds a few tokens of each kind in context with their losses by step.

A checkpoint at step 0 (Pythia's ``step0``, the initialization) has no place on a log axis and
is left out of the per-step analysis (recorded in ``settings.excluded``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from quanta._validation import QuantaInputError
from quanta.lm.curves import LMAnalysis, analyze_losses, examples_in_context, load_losses
from quanta.store import writes_outputs

__all__ = ["DynamicsAnalysis", "analyze_dynamics", "write_dynamics"]

#: The classes of :func:`quanta.lm.curves.classify_tokens` as read along steps.
KINDS = {"monogenic": "abrupt", "polygenic": "gradual"}


@dataclass
class DynamicsAnalysis:
    """Results of :func:`analyze_dynamics`; :func:`write_dynamics` stores them.

    Attributes
    ----------
    source : Path
        The losses directory.
    model : str
        The model analyzed along its steps.
    models : DataFrame
        One row per column of ``losses.npy``: ``model`` (column index), ``name``,
        ``revision``, ``step``, ``n_params`` (non-embedding), ``mean_loss`` (nats/token);
        sorted by size, then step.
    steps : LMAnalysis
        ``model`` over its checkpoints (axis ``"step"``): per-step table (``scale`` = step),
        p(L) histograms, per-token classes (``monogenic`` = abrupt, ``polygenic`` = gradual),
        a few tokens' curves, the mean loss vs step power-law fit.
    settings : dict
        Thresholds and what was left out.
    """

    source: Path
    model: str
    models: pd.DataFrame
    steps: LMAnalysis
    settings: dict[str, Any]

    @property
    def tokens(self) -> pd.DataFrame:
        """Per token: ``doc_id``, ``pos``, ``token_id``, ``learned_index`` (checkpoint j of an
        abrupt token, else −1), ``learned_step`` (its step, else −1), ``slope`` (nats per
        e-fold of step), ``r2``, ``abrupt``, ``gradual``."""
        t = self.steps.tokens
        step = self.steps.models["scale"].to_numpy(dtype=np.int64)
        index = t["mono_index"].to_numpy()
        return t.drop(columns=["mono_index", "monogenic", "polygenic"]).assign(
            learned_index=index,
            learned_step=np.where(index >= 0, step[np.maximum(index, 0)], -1),
            abrupt=t["monogenic"].to_numpy(),
            gradual=t["polygenic"].to_numpy(),
        )

    def summary(self) -> dict[str, Any]:
        tokens = self.steps.tokens
        steps = self.steps.models["scale"].astype(int).tolist()
        learned = tokens["mono_index"].to_numpy()
        fit = self.steps.fit
        return {
            "source": str(self.source),
            "model": self.model,
            "n_params": int(self.steps.models["n_params"].iloc[0]),
            "steps": steps,
            "settings": self.settings,
            "n_tokens": len(tokens),
            "n_abrupt": int(tokens["monogenic"].sum()),
            "n_gradual": int(tokens["polygenic"].sum()),
            # abrupt tokens by the step at which they were learned (checkpoint 0 cannot be)
            "abrupt_by_step": {str(s): int((learned == j).sum()) for j, s in enumerate(steps)},
            "fit_step": None
            if fit is None
            else {
                "alpha": fit.alpha if fit.success else None,
                "alpha_ci": fit.alpha_ci,
                "success": fit.success,
                "message": fit.message,
            },
            "mean_loss": json.loads(
                self.models[["name", "n_params", "revision", "step", "mean_loss"]].to_json(
                    orient="records"
                )
            ),
            "per_step": json.loads(
                self.steps.models[["revision", "scale", "mean_loss", "frac_below_0.1"]]
                .rename(columns={"scale": "step"})
                .assign(n_abrupt_here=[int((learned == j).sum()) for j in range(len(steps))])
                .to_json(orient="records")
            ),
        }


def _column_table(models: pd.DataFrame) -> pd.DataFrame:
    """The models table with a ``step`` per column (directories written before it was stored
    get it from the revision name)."""
    from quanta.lm.suite import revision_step

    if "step" not in models:
        models = models.assign(step=[revision_step(r or None) for r in models["revision"]])
    models = models.assign(step=models["step"].astype(int))
    return models.sort_values(["n_params", "step"], kind="stable").reset_index(drop=True)


def analyze_dynamics(
    directory: str | Path,
    *,
    model: str | None = None,
    hi: float = 5.0,
    lo: float = 0.3,
    gradual_slope: float = -0.3,
    gradual_r2: float = 0.98,
    bootstrap: int = 200,
    seed: int = 0,
) -> DynamicsAnalysis:
    """Training dynamics of a ``quanta lm losses --checkpoints`` directory.

    Parameters
    ----------
    directory : path-like
        A finished losses directory whose columns are (model, ``step<N>`` revision) pairs.
    model : str, optional
        The model to analyze along its steps (a ``name`` of ``models.parquet``); default the
        largest (most non-embedding parameters).
    hi, lo : float, default 5.0, 0.3
        Abrupt: loss (nats) above ``hi`` at every earlier checkpoint, below ``lo`` from
        checkpoint j on.
    gradual_slope, gradual_r2 : float, default -0.3, 0.98
        Gradual: slope of loss vs ln(step) (nats per e-fold) below ``gradual_slope``, with R²
        above ``gradual_r2``.
    bootstrap : int, default 200
        Bootstrap replicates of the mean loss vs step power-law fit's CI.
    seed : int, default 0
        Seed of the bootstrap and of the example curves.

    Returns
    -------
    DynamicsAnalysis

    Raises
    ------
    QuantaInputError
        Not a finished losses directory, an unknown ``model``, a revision not named
        ``step<N>``, fewer than 2 checkpoints (after step 0) of ``model``, bad thresholds.

    Examples
    --------
    >>> a = analyze_dynamics("runs/dynamics")  # doctest: +SKIP
    >>> a.summary()["n_abrupt"], a.tokens.loc[a.tokens["abrupt"], "learned_step"]  # doctest: +SKIP
    """
    _, models, _ = load_losses(directory)
    models = _column_table(models)
    names = list(dict.fromkeys(models["name"]))
    if model is None:
        model = str(models["name"].iloc[-1])  # sorted by size: the largest
    elif model not in names:
        raise QuantaInputError(
            f"'{directory}' has no model {model!r}; it has {', '.join(map(str, names))}."
        )
    mine = models[models["name"] == model]
    odd = mine.loc[mine["step"] < 0, "revision"].tolist()
    if odd:
        raise QuantaInputError(
            f"Revision {odd[0] or '(none)'!r} of model {model!r} is not named step<N> (or "
            "step<N>-tokens<M>B, step-<N>, checkpoint-<N>); training dynamics needs checkpoints "
            "like step1000 ('lm losses --checkpoints')."
        )
    excluded = mine.loc[mine["step"] == 0, "revision"].tolist()
    mine = mine[mine["step"] > 0]
    if mine["step"].nunique() < 2:
        raise QuantaInputError(
            f"Model {model!r} has {mine['step'].nunique()} checkpoint(s) after step 0 in "
            f"'{directory}'; training dynamics needs ≥ 2 (run 'quanta lm losses --checkpoints "
            f"{model}' or --checkpoints all)."
        )
    steps = analyze_losses(
        directory,
        columns=mine["model"].astype(int).tolist(),
        hi=hi,
        lo=lo,
        poly_slope=gradual_slope,
        poly_r2=gradual_r2,
        bootstrap=bootstrap,
        seed=seed,
    )
    settings = {
        "model": model,
        "hi": hi,
        "lo": lo,
        "gradual_slope": gradual_slope,
        "gradual_r2": gradual_r2,
        "bootstrap": bootstrap,
        "seed": seed,
        "excluded": excluded,
        "suite": steps.settings["suite"],
        "corpus": steps.settings["corpus"],
    }
    keep = ["model", "name", "revision", "step", "n_params", "mean_loss", "label"]
    return DynamicsAnalysis(Path(directory), model, models[keep], steps, settings)


@writes_outputs(lambda a: a["out"] if a["out"] is not None else a["analysis"].source / "dynamics")
def write_dynamics(analysis: DynamicsAnalysis, out: str | Path | None = None) -> list[Path]:
    """Tables (JSON + Parquet), example tokens and PNG figures into ``out`` (default
    ``SOURCE/dynamics``); returns the paths written."""
    from quanta import plots
    from quanta.store import write_json, write_parquet

    out = Path(out) if out is not None else analysis.source / "dynamics"
    steps = analysis.steps
    tables = {
        "mean_loss.parquet": analysis.models,
        "steps.parquet": steps.models,
        "histograms.parquet": steps.histograms,
        "tokens.parquet": analysis.tokens,
    }
    flags = {KINDS[k]: steps.tokens[k].to_numpy() for k in KINDS}
    examples = examples_in_context(
        analysis.source, flags, steps.models["model"].to_numpy(), seed=analysis.settings["seed"]
    )
    if len(examples):
        tables["examples.parquet"] = examples
    written = [out / "analysis.json"]
    write_json(written[0], analysis.summary())
    for name, frame in tables.items():
        write_parquet(out / name, frame)
        written.append(out / name)
    for name, fig in plots.dynamics_figures(analysis).items():
        written.append(plots.save_figure(fig, out / f"{name}.png"))
    return written
