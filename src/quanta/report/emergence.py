"""Section 2, the toy world's emergence of single quanta: per-subtask curves and when each
subtask is learned (the toy-params stage)."""

from __future__ import annotations

from quanta.report import toolkit as tk
from quanta.report.context import RunContext
from quanta.report.fits import SLOPES, slope_rows

__all__ = ["emergence"]


def emergence(ctx: RunContext) -> tk.Section:
    title = "2. Toy world: emergence of single quanta"
    return tk.Section(title, _blocks(ctx), "emergence", nav="Emergence")


def _blocks(ctx: RunContext) -> list[str]:
    miss = ctx.missing("toy-params")
    if miss:
        return [miss]
    a = "toy/params/analysis"
    # Each definition with its unit (the paper: converged < 0.1 bits, learned < 0.1 nats).
    th = (ctx.json(f"{a}/analysis.json") or {}).get("thresholds") or {}
    conv, learned = (
        f" ({th[k]['label']})" if "label" in th.get(k, {}) else ""
        for k in ("convergence", "learned")
    )
    return [
        tk.para(
            "Multitask sparse parity: each subtask's loss drops abruptly (a reverse S), "
            "roughly in order of frequency; the mean loss is smooth."
        ),
        ctx.figure("toy/params/figures/subtask_curves.png", "per-subtask test loss vs step"),
        ctx.figure(f"{a}/heatmaps.png", "per-subtask loss vs scale (heat maps)"),
        ctx.figure(f"{a}/convergence.png", f"convergence step{conv} vs subtask frequency p_i"),
        ctx.figure(f"{a}/learned.png", f"number of subtasks learned{learned} vs scale"),
        tk.fit_table(SLOPES, slope_rows(ctx, "toy/params")),
        ctx.provenance(["toy-params"], ["toy/params"]),
    ]
