"""Section 3, the toy world's scaling laws: mean loss against parameters N, steps S (the
toy-params stage) and samples D (toy-data), with the fitted exponents and slopes."""

from __future__ import annotations

from quanta.report import toolkit as tk
from quanta.report.context import RunContext
from quanta.report.fits import EXPONENTS, SLOPES, exponent_rows, slope_rows

__all__ = ["scaling"]


def scaling(ctx: RunContext) -> tk.Section:
    title = "3. Toy world: scaling laws in N, S and D"
    return tk.Section(title, _blocks(ctx), "scaling", nav="Scaling laws")


def _blocks(ctx: RunContext) -> list[str]:
    blocks = [
        tk.para(
            "Mean test loss against parameters N (final loss of each width), steps S (the "
            "widest network's curve) and training samples D (loss at the best validation step), "
            "fitted by a pure power law from the first scale where a subtask is learned; 95% "
            "bootstrap CIs next to the theory's α and α/(α+1)."
        ),
        ctx.missing("toy-params")
        or ctx.figure("toy/params/analysis/scaling.png", "L vs N and L vs S"),
        ctx.missing("toy-data") or ctx.figure("toy/data/analysis/scaling.png", "L vs D"),
    ]
    rows = exponent_rows(ctx, "toy/params", ("N", "S")) + exponent_rows(ctx, "toy/data", ("D",))
    return [
        *blocks,
        tk.fit_table(EXPONENTS, rows),
        tk.fit_table(SLOPES, slope_rows(ctx, "toy/data")),
        ctx.provenance(["toy-params", "toy-data"], ["toy/params", "toy/data"]),
    ]
