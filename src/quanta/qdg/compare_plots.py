"""Figures of the universality comparisons (:mod:`quanta.qdg.compare`, ``universality.json``):
data in, ``ax=None``, the axes out; the ``*_figure`` builder draws on a bare figure for files
(see :mod:`quanta.plots`, whose helpers it shares)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from quanta.plots import _axes, _figure, _legend

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["plot_agreement", "universality_figure"]


def plot_agreement(
    per_k: Sequence[dict[str, Any]],
    *,
    metric: str = "ari",
    title: str = "",
    ax: Axes | None = None,
) -> Axes:
    """One pair's ``metric`` vs K (a ``per_k`` list of ``universality.json``): measured, the
    permutation null (mean and its central 95% range, shaded), the random-init null (where
    the comparison has one) and the ceiling."""
    ax = _axes(ax)
    ks = [r["K"] for r in per_k]
    ax.plot(ks, [r["observed"][metric] for r in per_k], "-o", ms=4, color="C0", label="measured")
    null = [r["null"][metric] for r in per_k]
    ax.plot(ks, [n["mean"] for n in null], "-", lw=1, color="0.4", label="permutation null")
    ax.fill_between(ks, [n["low"] for n in null], [n["high"] for n in null], color="0.8")
    for key, style, color, label in (
        ("random_init", "--s", "C3", "random-init null"),
        ("ceiling", ":^", "C2", "ceiling"),
    ):
        if all(r.get(key) is not None for r in per_k):
            ax.plot(ks, [r[key][metric] for r in per_k], style, ms=3, color=color, label=label)
    ax.set_xscale("log")
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.minorticks_off()
    ax.set_xlabel("K (clusters)")
    ax.set_ylabel(metric.upper())
    ax.set_title(title, fontsize=9)
    _legend(ax)
    return ax


def universality_figure(panels: Sequence[tuple[str, Sequence[dict[str, Any]]]]) -> Figure:
    """ARI vs K of each comparison (``(title, per_k)``), one panel each, on one y scale."""
    n = max(len(panels), 1)
    cols = min(n, 3)
    rows = -(-n // cols)
    fig = _figure(figsize=(4.2 * cols, 3.3 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False, sharey=True).ravel()
    for ax, (title, per_k) in zip(axes, panels, strict=False):
        plot_agreement(per_k, title=title, ax=ax)
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    return fig
