"""Figures of the appendix-D experiments (:mod:`quanta.qdg.toyqdg`, :mod:`quanta.qdg.envelope`):
data in, ``ax=None``, the axes out; the ``*_figure`` builders draw on bare figures for files
(helpers shared with :mod:`quanta.plots`, kept apart so that module stays one topic per screen).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from quanta.plots import _axes, _figure, _legend

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "envelope_bias_figure",
    "parity_qdg_figure",
    "plot_envelope_slopes",
    "plot_parity_rank_frequency",
]


def plot_parity_rank_frequency(
    table: pd.DataFrame, settings: dict[str, Any], *, ax: Axes | None = None
) -> Axes:
    """Cluster size vs rank for every K (thin), their envelope (thick) and the true subtask
    counts of the same samples (black), log-log — appendix D.1's picture."""
    from matplotlib import colormaps

    ax = _axes(ax)
    clusters = table[table["kind"] == "clusters"]
    ks = sorted(int(k) for k in clusters["K"].unique())
    cmap = colormaps["viridis"]
    for i, k in enumerate(ks):
        g = clusters[clusters["K"] == k]
        color = cmap(i / max(len(ks) - 1, 1))
        ax.plot(g["rank"], g["size"], "-", lw=0.8, color=color, alpha=0.7, label=f"K={k}")
    env = table[table["kind"] == "envelope"]
    ax.plot(env["rank"], env["size"], "-", lw=2.2, color="C3", label="envelope over K")
    truth = table[table["kind"] == "truth"]
    ax.plot(truth["rank"], truth["size"], "k--o", ms=2.5, lw=1.2, label="true subtask counts")
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="rank",
        ylabel="samples",
        title=f"QDG on a width-{settings.get('width')} parity net ({settings.get('affinity')})",
    )
    _legend(ax)
    return ax


def parity_qdg_figure(result: Any) -> Figure:
    """Rank-frequency (left) and ARI per K (right) of a :class:`~quanta.qdg.toyqdg.ToyQDG`."""
    fig = _figure(figsize=(10.4, 4))
    left, right = fig.subplots(1, 2)
    plot_parity_rank_frequency(result.rank_frequency, result.settings, ax=left)
    s = result.scores
    for col, style in (("ari", "o-"), ("nmi", "s-"), ("purity", "^-")):
        right.plot(s["K"], s[col], style, ms=4, label=col)
    right.axvline(result.settings.get("n_subtasks_present", np.nan), color="k", lw=0.8, ls=":")
    right.set(xscale="log", xlabel="K", ylabel="score", title="agreement with the true subtasks")
    _legend(right)
    fig.tight_layout()
    return fig


def plot_envelope_slopes(
    slopes: pd.DataFrame, settings: dict[str, Any], *, ax: Axes | None = None
) -> Axes:
    """Envelope slope vs K_max for each affinity, beside the planted −(α+1) and the slope of
    the true cluster sizes over the same rank window."""
    ax = _axes(ax)
    for i, (name, g) in enumerate(slopes.groupby("affinity", sort=False)):
        ax.plot(g["K_max"], g["envelope_slope"], "o-", ms=4, color=f"C{i}", label=f"{name}")
        ax.plot(g["K_max"], g["single_slope"], ":", lw=1, color=f"C{i}")
    first = slopes[slopes["affinity"] == slopes["affinity"].iloc[0]]
    ax.plot(
        first["K_max"], first["truth_window_slope"], "k--", lw=1, label="true sizes, same ranks"
    )
    ax.axhline(
        settings["true_slope"],
        color="k",
        lw=1.2,
        label=f"planted −(α+1) = {settings['true_slope']:.2f}",
    )
    ax.set(
        xscale="log",
        xlabel="K_max (envelope over K ≤ K_max)",
        ylabel="log-log slope",
        title="envelope slope (solid) and single-K slope (dotted)",
    )
    _legend(ax)
    return ax


def envelope_bias_figure(result: Any) -> Figure:
    """Envelopes vs the truth (left) and slopes vs K_max (right) of an
    :class:`~quanta.qdg.envelope.EnvelopeBias`."""
    fig = _figure(figsize=(10.4, 4))
    left, right = fig.subplots(1, 2)
    rf = result.rank_frequency
    for i, name in enumerate(result.settings["affinities"]):
        env = rf[(rf["affinity"] == name) & (rf["K"] == 0)]
        left.plot(env["rank"], env["size"], "-", lw=1.8, color=f"C{i}", label=f"{name} envelope")
    truth = rf[rf["affinity"] == "truth"]
    left.plot(truth["rank"], truth["size"], "k--", lw=1.2, label="true cluster sizes")
    lo, hi = result.settings["ranks"]
    left.axvspan(lo, hi, color="0.9", zorder=0)
    left.set(
        xscale="log",
        yscale="log",
        xlabel="rank",
        ylabel="samples",
        title=f"planted Zipf (α = {result.settings['alpha']:g}); shaded: fit window",
    )
    _legend(left)
    plot_envelope_slopes(result.slopes, result.settings, ax=right)
    fig.tight_layout()
    return fig
