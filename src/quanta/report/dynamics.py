"""Section 5b, training dynamics: the suite's models at every saved checkpoint (lm-dynamics):
tokens learned abruptly or gradually along steps, the mean loss by step and model."""

from __future__ import annotations

from typing import Any

import pandas as pd

from quanta.report import toolkit as tk
from quanta.report.context import RunContext
from quanta.report.lm import checkpoint_integrity, example_rows

__all__ = ["dynamics"]

_A = "lm/dynamics/dynamics"


def dynamics(ctx: RunContext) -> tk.Section:
    title = "5b. Training dynamics: the same models over steps"
    return tk.Section(title, _blocks(ctx), "dynamics", nav="Training dynamics")


def _blocks(ctx: RunContext) -> list[str]:
    if not ctx.planned("lm-dynamics"):
        return [
            tk.para(
                f"Not a stage of preset {ctx.preset}. For Pythia: ",
                tk.code("quanta lm losses --suite pythia --checkpoints all --out DIR"),
                " (step1000 … step143000; ",
                tk.code("--revisions"),
                " to choose), then ",
                tk.code("quanta lm dynamics DIR"),
                ".",
            )
        ]
    miss = ctx.missing("lm-dynamics")
    summary = ctx.json(f"{_A}/analysis.json")
    if miss or summary is None:
        return [miss or tk.unreadable(f"{_A}/analysis.json")]
    model = summary["model"]
    return [
        _summary(summary),
        *_abrupt_by_step(summary),
        *_mean_loss_table(pd.DataFrame(summary.get("mean_loss", []))),
        ctx.figure(f"{_A}/mean_loss_steps.png", "mean loss vs training step, per model"),
        ctx.figure(
            f"{_A}/loss_distribution_steps.png",
            f"p(L) and L·p(L) of {model} across its checkpoints",
        ),
        ctx.figure(
            f"{_A}/token_curves_steps.png",
            f"per-token loss of {model} over steps: abrupt and gradual tokens",
        ),
        _examples(ctx, summary.get("steps", [])),
        *checkpoint_integrity(ctx, "lm/dynamics/models.parquet"),
        ctx.provenance(["lm-dynamics"], ["lm/dynamics"]),
    ]


def _summary(summary: dict[str, Any]) -> tk.Html:
    settings = summary.get("settings", {})
    steps = ", ".join(f"{s:,}" for s in summary.get("steps", []))
    return tk.para(
        "Every model of the suite at each of its saved checkpoints (log-spaced steps), "
        "on the same tokens: the paper's size analysis repeated across Pythia's training "
        "checkpoints (a smooth mean, single tokens that may drop abruptly at some step). "
        "For one model (",
        tk.bold(summary["model"]),
        f", {summary['n_params']:,} non-embedding parameters) over steps {steps}: of "
        f"{summary['n_tokens']:,} tokens, ",
        tk.bold(f"{summary['n_abrupt']:,}"),
        f" were learned abruptly (loss > {tk.num(settings.get('hi'), 1)} nats at every earlier "
        f"checkpoint, < {tk.num(settings.get('lo'), 1)} from one checkpoint on: the "
        "monogenic rule along steps) and ",
        tk.bold(f"{summary['n_gradual']:,}"),
        f" gradually (slope of loss vs ln step < {tk.num(settings.get('gradual_slope'), 2)} "
        f"with R² > {tk.num(settings.get('gradual_r2'), 2)}).",
    )


def _abrupt_by_step(summary: dict[str, Any]) -> list[str]:
    learned = {k: v for k, v in summary.get("abrupt_by_step", {}).items() if v}
    if not learned:
        return []
    by_step = ", ".join(f"step {k}: {v:,}" for k, v in learned.items())
    return [tk.para(f"Abrupt tokens by the step from which they stay learned: {by_step}.")]


def _mean_loss_table(mean: pd.DataFrame) -> list[str]:
    """Mean loss by step (rows) and model (columns); nothing when the summary has none."""
    if not len(mean) or not {"name", "step", "mean_loss"} <= set(mean.columns):
        return []
    names = list(dict.fromkeys(mean["name"]))
    wide = mean.pivot_table(index="step", columns="name", values="mean_loss")
    rows = [
        [f"{int(step):,}", *(tk.num(wide.at[step, n], 4) if n in wide else "—" for n in names)]
        for step in wide.index
    ]
    return [
        tk.heading(3, "Mean loss (nats/token) by step and model"),
        tk.table(["step", *map(str, names)], rows, range(len(names) + 1)),
    ]


def _examples(ctx: RunContext, steps: list[int]) -> tk.Html:
    ex = ctx.table(f"{_A}/examples.parquet")
    if ex is None or not len(ex):
        return tk.para("No abrupt or gradual token was found at these settings.")
    steps_text = ", ".join(f"{s:,}" for s in steps)
    return tk.join(
        tk.heading(3, "Tokens in context (predicted token highlighted)"),
        tk.table(["kind", "context", f"loss by step ({steps_text})"], example_rows(ex)),
    )
