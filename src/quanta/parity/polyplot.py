"""Figures of ``quanta parity polygenic``: measured vs predicted L(N) and L_ab per rule."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from quanta.parity.combine import RULES, predict

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["plot_rule_scatter", "plot_scaling_by_rule", "polygenic_figure"]

_STYLE = {"additive": "--", "one-at-a-time": "-.", "independent": ":", "bottleneck": (0, (5, 1))}


def plot_scaling_by_rule(scaling: pd.DataFrame, kind: str, *, ax: Axes | None = None) -> Axes:
    """Mean polygenic loss vs parameters N at the last step: measured (points) and what every
    rule predicts from the monogenic curves (lines)."""
    if ax is None:
        import matplotlib.pyplot as plt

        ax = plt.gca()
    sub = scaling[scaling["kind"] == kind]
    for series, group in sub.groupby("series", sort=False):
        group = group.sort_values("n_params")
        if series == "measured":
            ax.plot(group["n_params"], group["loss_nats"], "ko-", label="measured", zorder=3)
        else:
            ax.plot(group["n_params"], group["loss_nats"], ls=_STYLE[str(series)], label=series)
    ax.set_xscale("log")
    from matplotlib.ticker import NullFormatter

    ax.xaxis.set_minor_formatter(NullFormatter())  # the minor labels overlap at 6 widths
    ax.set_xlabel("parameters N")
    ax.set_ylabel("mean loss (nats)")
    ax.set_title(f"L(N) of {kind} samples")
    ax.legend(fontsize=7)
    return ax


def plot_rule_scatter(
    points: pd.DataFrame, kind: str, rule: str, *, ax: Axes | None = None
) -> Axes:
    """Predicted vs measured ``L_ab`` of every point of ``kind`` under ``rule``."""
    if ax is None:
        import matplotlib.pyplot as plt

        ax = plt.gca()
    sub = points[points["kind"] == kind]
    pred = predict(rule, kind, sub["loss_a"].to_numpy(), sub["loss_b"].to_numpy())
    ax.scatter(sub["loss_ab"], pred, s=4, alpha=0.4, c=np.log(sub["step"] + 1), cmap="viridis")
    top = float(max(sub["loss_ab"].max(), pred.max(), 0.1))
    ax.plot([0, top], [0, top], "k-", lw=0.8)
    ax.set_xlabel("measured L_ab (nats)")
    ax.set_ylabel(f"{rule} prediction (nats)")
    ax.set_title(f"{kind}: best rule {rule} (colour: log step)")
    return ax


def polygenic_figure(analysis: Any) -> Figure:
    """One row per kind: L(N) measured vs the rules, and the best rule's scatter."""
    from matplotlib.figure import Figure

    verdicts = analysis.fit.verdicts.set_index("kind")
    kinds = list(verdicts.index)
    fig = Figure(figsize=(9, 3.6 * len(kinds)))
    axes = fig.subplots(len(kinds), 2, squeeze=False)
    for row, kind in zip(axes, kinds, strict=True):
        plot_scaling_by_rule(analysis.scaling, kind, ax=row[0])
        best = str(verdicts.loc[kind, "best"])
        plot_rule_scatter(analysis.points, kind, best if best in RULES else RULES[0], ax=row[1])
    fig.tight_layout()
    return fig
