"""Fit tables shared by the toy-world sections and the comparison: power-law exponents and
log-log slopes, read from a run's ``analysis/{exponents,slopes}.parquet``."""

from __future__ import annotations

from quanta.report import toolkit as tk
from quanta.report.context import RunContext

__all__ = ["EXPONENTS", "SLOPES", "exponent", "exponent_rows", "slope_rows"]

EXPONENTS = ["axis", "group", "fitted α", "95% CI", "theory", "points"]
SLOPES = ["quantity", "group", "slope", "95% CI", "theory", "points"]


def exponent_rows(ctx: RunContext, rel: str, axes: tuple[str, ...]) -> list[list[str]]:
    """Rows of :data:`EXPONENTS`: the power-law fits on ``axes`` of the run at ``rel``."""
    exps = ctx.table(f"{rel}/analysis/exponents.parquet")
    if exps is None:
        return []
    rows = []
    for r in exps[(exps["fit"] == "power") & exps["axis"].isin(axes)].to_dict("records"):
        fitted = tk.num(r["exponent"]) if r["success"] else f"failed: {r['message']}"
        rows.append(
            [
                r["axis"],
                str(r["group"]),
                fitted,
                tk.ci(r["ci_low"], r["ci_high"]),
                tk.num(r["predicted"]),
                str(r["n_points"]),
            ]
        )
    return rows


def slope_rows(ctx: RunContext, rel: str) -> list[list[str]]:
    """Rows of :data:`SLOPES`: every log-log slope of the run at ``rel``."""
    slopes = ctx.table(f"{rel}/analysis/slopes.parquet")
    if slopes is None:
        return []
    return [
        [
            r["quantity"],
            str(r["group"]),
            tk.num(r["slope"]),
            tk.ci(r["ci_low"], r["ci_high"]),
            tk.num(r["predicted"]),
            str(r["n_points"]),
        ]
        for r in slopes.to_dict("records")
    ]


def exponent(ctx: RunContext, rel: str, axis: str) -> float | None:
    """The first successful power-law exponent on ``axis`` of the run at ``rel``, or None."""
    exps = ctx.table(f"{rel}/analysis/exponents.parquet")
    if exps is None:
        return None
    sel = exps[(exps["fit"] == "power") & (exps["axis"] == axis) & exps["success"]]
    return float(sel["exponent"].iloc[0]) if len(sel) else None
