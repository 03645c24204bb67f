"""Section 8, published scaling exponents (the paper's appendix E): the shipped table of
(α_N, α_D) pairs, plotted with this run's against the quantization model's relation."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from quanta.report import toolkit as tk
from quanta.report.context import RunContext
from quanta.report.fits import exponent

__all__ = ["PRIOR_EXPONENTS", "load_prior_exponents", "ours", "prior"]

PRIOR_EXPONENTS = Path(__file__).parent.parent / "data" / "prior_exponents.csv"


def load_prior_exponents() -> pd.DataFrame:
    """The published (α_N, α_D) pairs shipped with quanta, with their citations."""
    return pd.read_csv(PRIOR_EXPONENTS)


def ours(ctx: RunContext) -> pd.DataFrame:
    """This run's measured (α_N, α_D) pairs: the toy world (params + data sweeps)."""
    rows = []
    n = exponent(ctx, "toy/params", "N")
    d = exponent(ctx, "toy/data", "D")
    if n is not None and d is not None:
        rows.append({"label": "this run: toy (sparse parity)", "alpha_N": n, "alpha_D": d})
    return pd.DataFrame(rows, columns=["label", "alpha_N", "alpha_D"])


def prior(ctx: RunContext) -> tk.Section:
    """The section; writes ``figures/prior_exponents.png`` into the directory first."""
    from quanta import plots
    from quanta.store import record_outputs

    table = load_prior_exponents()
    fig_path = ctx.out / "figures" / "prior_exponents.png"
    plots.save_figure(plots.prior_exponents_figure(table, ours(ctx)), fig_path)
    record_outputs(ctx.out, [fig_path])  # a finished file of the directory, like report.html
    rows = [
        [
            f"{r.study} ({r.year})",
            tk.text(tk.italic(r.title), ", ", tk.esc(r.venue)),
            str(r.task),
            tk.num(r.alpha_N, 3),
            tk.num(r.alpha_D, 3),
            r.note if isinstance(r.note, str) else "",
        ]
        for r in table.itertuples()
    ]
    blocks = [
        tk.para(
            "α_N and α_D reported by scaling-law studies, against the quantization model's "
            "α_D = α_N/(α_N+1) and the line α_D = α_N. Log axes, so that every pair is visible. ",
            tk.bold("Correction:"),
            " the paper's scatter plots Ardalani et al.'s pair swapped, as (α_N, α_D) = "
            "(0.1, 4.0); their data exponent is 0.1 and their parameter exponent 4, so it is "
            "shown here as (4.0, 0.1). Values transcribed from the papers as tabulated in the "
            "quantization-model authors' data file (",
            tk.code("scaling-laws.csv"),
            "); shipped as ",
            tk.code("quanta/data/prior_exponents.csv"),
            ".",
        ),
        ctx.figure("figures/prior_exponents.png", "published (α_N, α_D) pairs"),
        tk.table(["study", "paper", "task", "α_N", "α_D", "note"], rows, {3, 4}),
    ]
    return tk.Section(
        "8. Published scaling exponents (appendix E)", blocks, "prior", nav="Published exponents"
    )
