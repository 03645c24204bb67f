"""Testing the hypothesis: size beyond capacity (issue 20, part 4; stage toy-domino). Per
width, when each subtask of toy-params and the α-sweep is learned against its frequency: is
learning delayed until the more frequent subtasks are done (the "domino"), and does width move
a subtask's learned step at fixed frequency — next to the α-sweep's α_N − α."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from quanta.report import toolkit as tk
from quanta.report.context import RunContext

__all__ = ["domino", "domino_reading"]

_DIR = "toy/domino"


def domino(ctx: RunContext) -> tk.Section:
    title = "Test 4: size beyond capacity"
    return tk.Section(title, _blocks(ctx), "domino", level=3, nav="size beyond capacity")


def _alpha_n(data: dict[str, Any]) -> dict[tuple[str, float], float]:
    return {(r["source"], float(r["alpha"])): float(r["alpha_N"]) for r in data["alpha"]}


def domino_reading(data: dict[str, Any]) -> str:
    """Honest sentences: the step-vs-frequency slope against -1, the width slope against 0,
    and the α_N deviations beside them."""
    rows = [r for r in data["summary"] if r["t_vs_p_slope"] is not None]
    if not rows:
        return "Too few subtasks were learned at any width to measure an order."
    slopes = [float(r["t_vs_p_slope"]) for r in rows]
    lo, hi, mid = min(slopes), max(slopes), float(np.median(slopes))
    if mid < -1.1:
        order = (
            f"The learned step falls faster than 1/p_i (median slope {mid:.2f}, {lo:.2f} to "
            f"{hi:.2f}, vs −1): rarer subtasks wait beyond their own frequency — a domino."
        )
    elif mid > -0.9:
        order = (
            f"The learned step falls more slowly than 1/p_i (median slope {mid:.2f}, {lo:.2f} "
            f"to {hi:.2f}, vs −1): rare subtasks are learned sooner than their frequency alone "
            "predicts, so there is no sign that they wait for the frequent ones (no domino)."
        )
    else:
        order = (
            f"The learned step follows t ∝ 1/p_i (median slope {mid:.2f} over sources and α, "
            f"{lo:.2f} to {hi:.2f}): no domino."
        )
    widths = [float(r["width_slope"]) for r in data["summary"] if r["width_slope"] is not None]
    if not widths:
        size = "No subtask was learned at two widths, so width at fixed frequency is not measured."
    elif max(widths) < -0.1:
        size = (
            f"At fixed frequency, wider nets learn the same subtask sooner (median slope of log "
            f"t_i vs log width {min(widths):.2f} to {max(widths):.2f}; capacity alone predicts "
            "0): size acts beyond capacity, through optimization."
        )
    elif min(widths) > 0.1:
        size = (
            f"At fixed frequency, wider nets learn later (width slopes {min(widths):.2f} to "
            f"{max(widths):.2f})."
        )
    else:
        size = (
            f"At fixed frequency, width barely moves the learned step (width slopes "
            f"{min(widths):.2f} to {max(widths):.2f}; capacity alone predicts 0)."
        )
    dev = [
        f"α = {r['alpha']:g}: α_N = {r['alpha_N']:.2f} ({r['deviation']:+.2f})"
        for r in data["alpha"]
    ]
    beside = f" The α-sweep beside it: {'; '.join(dev)}." if dev else ""
    return f"{order} {size}{beside}"


def _blocks(ctx: RunContext) -> list[str]:
    miss = ctx.missing("toy-domino")
    data = ctx.json(f"{_DIR}/domino.json")
    if miss or data is None:
        return [miss or tk.unreadable(f"{_DIR}/domino.json")]
    intro = tk.para(
        "If width only buys capacity, a subtask is learned once it has been seen often enough: "
        "t_i ∝ 1/p_i, the same at every width that can hold it (slope −1 against p_i, slope 0 "
        "against width). A subtask that waits for the more frequent ones (a domino) falls "
        "faster than 1/p_i; a width effect at fixed p_i means size acts beyond capacity. "
        "Learned step = first evaluation with test loss below "
        f"{data['settings']['threshold_nats']:g} nats; matched steps compare the widths at the "
        "same fraction of training.",
    )
    alpha_n = _alpha_n(data)
    rows = [
        [
            Path(str(r["source"])).name,
            f"{r['alpha']:g}",
            tk.num(r["t_vs_p_slope"], 2),
            tk.num(r["out_of_order"], 2),
            tk.num(r["width_slope"], 2),
            tk.num(r["width_slope_negative"], 2),
            tk.num(alpha_n.get((r["source"], float(r["alpha"]))), 3),
        ]
        for r in data["summary"]
    ]
    header = [
        "source",
        "α",
        "slope t_i vs p_i (−1)",
        "pairs out of order",
        "width slope (0)",
        "share < 0",
        "α_N",
    ]
    matched_header, matched = _matched(data)
    return [
        intro,
        ctx.figure(f"{_DIR}/domino.png", "slope of t_i vs p_i per width; learned at matched steps"),
        tk.table(header, rows, {2, 3, 4, 5, 6}),
        tk.para(tk.bold("Reading:"), " ", tk.esc(domino_reading(data))),
        tk.table(matched_header, matched, set(range(3, 5 + len(data["matched_fractions"])))),
        ctx.provenance(["toy-domino"], [_DIR]),
    ]


def _matched(data: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Learned counts per width at matched fractions of training, and at the end."""
    fr = data["matched_fractions"]
    matched = [
        [
            Path(str(r["source"])).name,
            str(r["run"])[:8],
            f"{r['alpha']:g}",
            str(r["width"]),
            *(str(r[f"learned_at_{f:g}"]) for f in fr),
            str(r["n_learned"]),
        ]
        for r in data["per_width"]
    ]
    matched_header = [
        "source",
        "run",
        "α",
        "width",
        *(f"learned by {f:.0%}" for f in fr),
        "at the end",
    ]
    return matched_header, matched
