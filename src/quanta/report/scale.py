"""Section 7, quanta across scale (beyond the paper): each QDG cluster's loss across the
suite's sizes (and steps), and the scale at which it is learned against its frequency rank
(qdg-scale), beside the toy world's convergence law."""

from __future__ import annotations

from typing import Any

from quanta.report import toolkit as tk
from quanta.report.context import RunContext

__all__ = ["quanta_scale", "scale_reading"]

_DIR = "qdg/clusters/scale"


def quanta_scale(ctx: RunContext) -> tk.Section:
    title = "7. Quanta across scale (beyond the paper)"
    return tk.Section(title, _blocks(ctx), "scale", nav="Quanta across scale")


def scale_reading(slopes: list[dict[str, Any]]) -> str:
    """One honest sentence on the first learned-scale slope (sizes before steps; vs rank)."""
    rows = [r for r in slopes if r["versus"] == ("rank" if r["axis"] == "N" else "frequency")]
    if not rows:
        return "no slope was fitted."
    r = rows[0]
    what = f"learned {r['axis']} vs {r['versus']}"
    censored = r["n_at_first"] + r["n_never"] + r["n_no_drop"]
    if r["slope"] is None:
        return f"{what}: too few learned clusters to fit ({r['n_points']}; {censored} censored)."
    slope, pred = float(r["slope"]), r["predicted"]
    lo = r["ci_low"] if r["ci_low"] is not None else slope
    hi = r["ci_high"] if r["ci_high"] is not None else slope
    head = f"{what}: slope {slope:.2f} [{lo:.2f}, {hi:.2f}] vs predicted {tk.num(pred, 2)}"
    if lo <= 0 <= hi:
        return (
            f"{head} — the interval includes 0: no detectable ordering of the clusters by "
            f"frequency at these scales ({r['n_points']} clusters fitted, {censored} censored)."
        )
    if slope * (1 if r["versus"] == "rank" else -1) < 0:
        return f"{head} — opposite to the prediction: rarer clusters are learned earlier."
    if pred is not None and lo <= pred <= hi:
        return f"{head} — consistent with the quantization model ({r['n_points']} clusters)."
    return (
        f"{head} — frequent clusters are learned first, as predicted, but the slope differs "
        "from the prediction."
    )


def _rows(ctx: RunContext, data: dict[str, Any]) -> list[list[str]]:
    """The clusters' learned-scale slopes, then the toy world's convergence slope."""
    rows = []
    for r in data["slopes"]:
        rows.append(
            [
                f"{r['group']}: learned {r['axis']} vs {r['versus']}",
                tk.num(r["slope"]) if r["slope"] is not None else str(r["message"]),
                tk.ci(r["ci_low"], r["ci_high"]),
                tk.num(r["predicted"]),
                str(r["n_points"]),
                f"{r['n_at_first']} / {r['n_never']} / {r['n_no_drop']}",
            ]
        )
    toy = data.get("toy") or []
    if not toy:  # the toy stage may have run after this one
        slopes = ctx.table("toy/params/analysis/slopes.parquet")
        if slopes is not None:
            toy = slopes[slopes["quantity"] == "convergence_step_vs_p"].to_dict("records")
    for t in toy:
        rows.append(
            [
                f"toy world ({t['group']}): convergence step vs p_i",
                tk.num(t["slope"]),
                tk.ci(t["ci_low"], t["ci_high"]),
                tk.num(t["predicted"]),
                str(t["n_points"]),
                "—",
            ]
        )
    return rows


def _intro(data: dict[str, Any]) -> tk.Html:
    return tk.para(
        "The quantization model says each quantum is learned abruptly at some scale, "
        "in order of its frequency; the paper never tests that on the clusters QDG finds. "
        f"Here: the {data['n_clusters']} clusters (K = {data['K']}) of the "
        f"{data['n_samples']:,} tokens QDG clustered on ",
        tk.esc(data["qdg_model"]),
        ", each cluster's mean loss under every model, and the scale at which it is ",
        tk.italic("learned"),
        " (",
        tk.esc(data["definition"]),
        "). Predicted: learned N ∝ rank (slope 1; −1/(1+α_N) against frequency); learned step "
        "∝ 1/frequency (slope −1, the toy world's convergence law). Censored clusters (learned "
        "at or before the first model / never / no drop) are counted and left out of the fit; "
        "CIs bootstrap the clusters.",
    )


def _reading(data: dict[str, Any]) -> tk.Html:
    caveat = (
        " Caveat: QDG ran on a smaller model than the largest, and its tokens were "
        "selected for a low loss there, so their loss is already low at that size by "
        "construction; the test is sharpest with QDG on the largest model."
        if data.get("qdg_model_n_params", 0) < data.get("largest_n_params", 0)
        else ""
    )
    return tk.para(tk.bold("Reading:"), " ", tk.esc(scale_reading(data["slopes"])), caveat)


def _blocks(ctx: RunContext) -> list[str]:
    miss = ctx.missing("qdg-scale")
    data = ctx.json(f"{_DIR}/scale.json")
    if miss or data is None:
        return [miss or tk.unreadable(f"{_DIR}/scale.json")]
    figures = []
    for g in data["groups"]:
        stem, what = g["group"].replace(":", "_"), g["axis"]
        figures += [
            ctx.figure(f"{_DIR}/curves_{stem}.png", f"mean loss of each cluster vs {what}"),
            ctx.figure(f"{_DIR}/learned_{stem}.png", f"learned {what} vs frequency rank"),
        ]
    header = ["slope", "measured", "95% CI", "predicted", "clusters fitted", "censored"]
    return [
        _intro(data),
        *figures,
        tk.table(header, _rows(ctx, data), {1, 2, 3, 4}),
        _reading(data),
        ctx.provenance(["qdg-scale"], []),
    ]
