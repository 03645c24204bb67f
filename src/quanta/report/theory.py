"""Section 1, theory: the quantization model's exponents, fitted on its own simulation."""

from __future__ import annotations

from quanta.report import toolkit as tk
from quanta.report.context import RunContext

__all__ = ["theory"]


def theory(ctx: RunContext) -> tk.Section:
    return tk.Section("1. Theory: the quantization model", _blocks(ctx), "theory", nav="Theory")


def _blocks(ctx: RunContext) -> list[str]:
    miss = ctx.missing("theory")
    data = ctx.json("theory/theory.json")
    if miss or data is None:
        return [miss or tk.unreadable("theory/theory.json")]
    rows = [
        [
            tk.num(r["alpha"], 2),
            r["kind"],
            tk.num(r["fitted"], 4),
            tk.num(r["predicted"], 4),
            tk.num(r["n_learned_slope"], 3),
            tk.num(r["predicted_slope"], 3),
        ]
        for r in data["exponents"]
    ]
    header = ["α", "axis", "fitted", "predicted", "learned slope", "predicted slope"]
    return [
        tk.para(
            "Quanta with Zipf frequencies p_k ∝ k^-(α+1), learned in order: parameters give "
            "α_N = α, data and steps α/(α+1). Monte-Carlo simulation of the model, exponents "
            "fitted like the experiments':"
        ),
        ctx.figure("theory/theory.png", "L(N), L(D), L(S) of the simulated model"),
        tk.table(header, rows, {0, 2, 3, 4, 5}),
        ctx.provenance(["theory"], []),
    ]
