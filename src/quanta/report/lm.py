"""Section 5, language models: the scaling decomposition of the mini-suite's per-token losses
(lm-suite, lm-losses, lm-analyze): the mean-loss fit, each model, monogenic and polygenic
tokens in context."""

from __future__ import annotations

from typing import Any

import pandas as pd

from quanta.report import toolkit as tk
from quanta.report.context import RunContext

__all__ = ["checkpoint_integrity", "example_rows", "language_models"]

_A = "lm/losses/analysis"


def example_rows(examples: pd.DataFrame) -> list[list[str]]:
    """Rows of an example-token table: kind, the context with the predicted token highlighted,
    and its losses (by model or by step) joined by arrows."""
    return [
        [
            r["kind"],
            tk.token_in_context(str(r["context"]), str(r["token"])),
            " → ".join(tk.num(float(v), 2) for v in r["losses"]),
        ]
        for r in examples.to_dict("records")
    ]


def checkpoint_integrity(ctx: RunContext, models_parquet: str) -> list[str]:
    """The line on duplicate checkpoints of a losses directory (:func:`quanta.lm.fingerprint.
    integrity_line`); nothing for a run made before fingerprints were recorded."""
    from quanta.lm.fingerprint import integrity_line

    line = integrity_line(ctx.table(models_parquet))
    return [tk.para(tk.esc(line))] if line else []


def language_models(ctx: RunContext) -> tk.Section:
    title = "5. Language models: the scaling decomposition"
    return tk.Section(title, _blocks(ctx), "lm", nav="Language models")


def _fit_text(summary: dict[str, Any]) -> tk.Html:
    fit = summary.get("fit") or {}
    if not fit.get("success"):
        return tk.text("mean-loss fit: ", tk.esc(fit.get("message", "not fitted")))
    return tk.text(
        f"mean loss ∝ {summary['axis']}^-α with α = {tk.num(fit.get('alpha'), 4)}, 95% CI "
        f"{tk.ci(*(fit.get('alpha_ci') or (None, None)))} over models {fit.get('models')}"
        + (f", R² {tk.num(fit['r2_loglog'], 4)} in log-log" if fit.get("r2_loglog") else "")
    )


def _blocks(ctx: RunContext) -> list[str]:
    miss = ctx.missing("lm-losses", "lm-analyze")
    summary = ctx.json(f"{_A}/analysis.json")
    if miss or summary is None:
        return [miss or tk.unreadable(f"{_A}/analysis.json")]
    models = summary.get("models", [])
    rows = [
        [
            str(m["label"]),
            f"{m['n_params']:,}",
            tk.num(m["mean_loss"], 4),
            tk.num(m.get("frac_below_0.1"), 4),
        ]
        for m in models
    ]
    blocks: list[str] = [
        tk.para(
            f"{summary['n_tokens']:,} tokens; ",
            _fit_text(summary),
            f". Monogenic tokens: {summary['n_monogenic']:,}; polygenic: "
            f"{summary['n_polygenic']:,}.",
        ),
        tk.table(
            ["model", "non-embedding params", "mean loss (nats)", "share < 0.1"], rows, {1, 2, 3}
        ),
        *checkpoint_integrity(ctx, "lm/losses/models.parquet"),
        ctx.figure(f"{_A}/mean_loss.png", "mean loss vs non-embedding parameters"),
        ctx.figure(f"{_A}/loss_distribution.png", "p(L) and L·p(L) of per-token losses"),
        ctx.figure(f"{_A}/token_curves.png", "per-token loss vs scale"),
    ]
    ex = ctx.table(f"{_A}/examples.parquet")
    if ex is not None and len(ex):
        labels = ", ".join(str(m["label"]) for m in models)
        header = ["kind", "context", f"loss by model ({labels})"]
        blocks.append(tk.heading(3, "Tokens in context (predicted token highlighted)"))
        blocks.append(tk.table(header, example_rows(ex)))
    else:
        blocks.append(tk.para("No monogenic or polygenic token was found at these settings."))
    blocks.append(ctx.provenance(["lm-suite", "lm-losses", "lm-analyze"], ["lm/losses"]))
    return blocks
