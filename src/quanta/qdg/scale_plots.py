"""Figures of the quanta-across-scale analysis (:mod:`quanta.qdg.scale`): data in, ``ax=None``,
the axes out; the ``*_figures`` builder draws on bare figures for files (see :mod:`quanta.plots`,
whose helpers it shares; kept apart so that module stays one screenful per topic)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from quanta.plots import _axes, _figure, _legend

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["cluster_scale_figures", "plot_cluster_curves", "plot_learned_scale"]


def plot_cluster_curves(curves: pd.DataFrame, *, top: int = 20, ax: Axes | None = None) -> Axes:
    """Mean loss of each QDG cluster's tokens vs N or step (one group of
    ``ClusterScaling.curves``), the ``top`` largest clusters, coloured by frequency rank."""
    from matplotlib import colormaps

    ax = _axes(ax)
    d = curves[curves["rank"] <= top].sort_values(["rank", "scale"])
    cmap, n = colormaps["viridis"], max(int(d["rank"].max()), 2) if len(d) else 2
    for rank in sorted(int(r) for r in d["rank"].unique()):
        g = d[d["rank"] == rank]
        label = f"#{rank} ({g['size'].iloc[0]})" if rank <= 5 else None
        ax.plot(
            g["scale"],
            g["mean_loss"],
            "-o",
            ms=2.5,
            lw=1,
            color=cmap((rank - 1) / (n - 1)),
            label=label,
        )
    axis = d["axis"].iloc[0] if len(d) else "N"
    ax.set(
        xscale="log",
        xlabel="non-embedding parameters N" if axis == "N" else "step",
        ylabel="mean loss of the cluster's tokens (nats)",
        title=f"QDG clusters across {axis} (top {top} by size; dark = frequent)",
    )
    _legend(ax)
    return ax


def plot_learned_scale(
    learned: pd.DataFrame, slopes: pd.DataFrame, scales: Any, *, ax: Axes | None = None
) -> Axes:
    """Learned scale of each cluster (one group of ``ClusterScaling.learned``) vs its frequency
    rank, log-log, with the fitted slope; the models' ``scales`` as faint lines; censored
    clusters at the edge of the range: ▼ learned at or before the first scale, ▲ never (or
    no drop)."""
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    ax = _axes(ax)
    ok = learned[learned["status"] == "learned"]
    scales = np.sort(np.asarray(scales, dtype=np.float64))
    lo, hi = scales[0], scales[-1]
    for s in scales:
        ax.axhline(s, color="0.85", lw=0.6, zorder=0)
    ax.plot(ok["rank"], ok["learned_scale"], "o", ms=4, color="C0", label="learned")
    first = learned[learned["status"] == "at_first"]
    late = learned[learned["status"].isin(["never", "no_drop"])]
    if len(first):
        ax.plot(
            first["rank"],
            np.full(len(first), lo),
            "v",
            color="C2",
            ms=5,
            label=f"at or before the first ({len(first)})",
        )
    if len(late):
        ax.plot(
            late["rank"],
            np.full(len(late), hi),
            "^",
            color="C3",
            ms=5,
            label=f"never / no drop ({len(late)})",
        )
    row = slopes[slopes["versus"] == "rank"]
    if len(row) and np.isfinite(row["slope"].iloc[0]):
        r = row.iloc[0]
        x = np.geomspace(ok["rank"].min(), ok["rank"].max(), 50)
        ax.plot(
            x,
            np.exp(r["intercept"]) * x ** r["slope"],
            "k-",
            lw=1,
            label=f"slope {r['slope']:.2f} [{r['ci_low']:.2f}, {r['ci_high']:.2f}]"
            f" (theory {r['predicted']:.2f})",
        )
    axis = learned["axis"].iloc[0]
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="cluster frequency rank (1 = largest)",
        ylabel="learned at N" if axis == "N" else "learned at step",
        title=f"QDG clusters: learned {axis} vs rank",
        ylim=(lo / 1.5, hi * 1.5),
    )
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())
    _legend(ax)
    return ax


def cluster_scale_figures(result: Any) -> dict[str, Figure]:
    """``curves_<group>`` and ``learned_<group>`` of a
    :class:`quanta.qdg.scale.ClusterScaling`, by file stem (``step:m1`` → ``step_m1``)."""
    figs: dict[str, Figure] = {}
    for group in dict.fromkeys(result.learned["group"]):
        stem = group.replace(":", "_")
        fig = _figure(figsize=(5.5, 4.2))
        plot_cluster_curves(result.curves[result.curves["group"] == group], ax=fig.subplots())
        fig.tight_layout()
        figs[f"curves_{stem}"] = fig
        fig = _figure(figsize=(5.5, 4.2))
        plot_learned_scale(
            result.learned[result.learned["group"] == group],
            result.slopes[result.slopes["group"] == group],
            result.curves.loc[result.curves["group"] == group, "scale"].unique(),
            ax=fig.subplots(),
        )
        fig.tight_layout()
        figs[f"learned_{stem}"] = fig
    return figs
