"""Section 4, exponents across α: the toy-alpha sweep (α_N, α_S for every Zipf exponent) and,
as its subsection, α × D (toy-alpha-data: α_D and subtasks learned vs D for every α)."""

from __future__ import annotations

from typing import Any

from quanta.report import toolkit as tk
from quanta.report.context import RunContext
from quanta.report.fits import EXPONENTS, exponent_rows

__all__ = ["alpha_data", "alpha_sweep"]

_DATA = "toy/alpha_data/analysis"


def alpha_sweep(ctx: RunContext) -> tk.Section:
    return tk.Section("4. Exponents across α", _sweep_blocks(ctx), "alpha", nav="Across α")


def _sweep_blocks(ctx: RunContext) -> list[str]:
    miss = ctx.missing("toy-alpha")
    if miss:
        return [miss]
    return [
        tk.para(
            "The same fits for every Zipf exponent α of the task (the paper's Fig. 10): "
            "theory α_N = α and α_S = α/(α+1)."
        ),
        ctx.figure("toy/alpha/analysis/alpha_sweep.png", "fitted exponents vs α"),
        tk.fit_table(EXPONENTS, exponent_rows(ctx, "toy/alpha", ("N", "S", "D"))),
        ctx.provenance(["toy-alpha"], ["toy/alpha"]),
    ]


def alpha_data(ctx: RunContext) -> tk.Section:
    title = "α × D: data scaling for every α (Fig. 10)"
    return tk.Section(title, _data_blocks(ctx), "alpha-data", level=3, nav="α × D")


def _data_blocks(ctx: RunContext) -> list[str]:
    miss = ctx.missing("toy-alpha-data")
    exps = ctx.table(f"{_DATA}/exponents.parquet")
    if miss or exps is None:
        return [miss or tk.unreadable(f"{_DATA}/exponents.parquet")]
    slopes = ctx.table(f"{_DATA}/slopes.parquet")
    learned: dict[Any, Any] = {}
    if slopes is not None:
        is_d = slopes["quantity"] == "learned_vs_D"
        learned = {r["group"]: r for r in slopes[is_d].to_dict("records")}
    rows = []
    power = exps[(exps["axis"] == "D") & (exps["fit"] == "power")].sort_values("alpha")
    for r in power.to_dict("records"):
        n = learned.get(r["group"], {})
        rows.append(
            [
                tk.num(r["alpha"], 2),
                tk.num(r["exponent"]) if r["success"] else f"failed: {r['message']}",
                tk.ci(r["ci_low"], r["ci_high"]),
                tk.num(r["predicted"]),
                str(r["n_points"]),
                tk.num(n.get("slope")),
                tk.ci(n.get("ci_low"), n.get("ci_high")),
                tk.num(n.get("predicted")),
            ]
        )
    header = ["α", "α_D", "95% CI", "α/(α+1)", "points", "learned vs D", "95% CI", "1/(α+1)"]
    return [
        tk.para(
            "One fixed-D sweep per α, loss at the best validation step (early stopping). "
            "Theory: α_D = α/(α+1) and quanta learned ∝ D^(1/(α+1))."
        ),
        ctx.figure(f"{_DATA}/alpha_sweep.png", "α_D vs α"),
        ctx.figure(f"{_DATA}/scaling.png", "early-stopped loss vs D, every α"),
        ctx.figure(f"{_DATA}/learned.png", "subtasks learned vs D, every α"),
        tk.table(header, rows, range(8)),
        ctx.provenance(["toy-alpha-data"], ["toy/alpha_data"]),
    ]
