"""Plot functions: data in, ``ax=None``, the axes out. matplotlib is imported lazily.

Computing lives elsewhere; these only draw tidy tables produced by the pipelines.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["plot_mean_loss", "plot_subtask_curves", "save_figure", "subtask_figure"]


def _axes(ax: Axes | None) -> Axes:
    if ax is not None:
        return ax
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(5, 3.5))[1]


def plot_subtask_curves(
    curves: pd.DataFrame, member: int, *, ax: Axes | None = None, bits: bool = False
) -> Axes:
    """Test loss of every subtask of one member vs step (log x), coloured by frequency rank;
    the mixture loss in black. The paper's emergence picture (its Fig 7)."""
    from matplotlib import colormaps

    ax = _axes(ax)
    scale = 1 / np.log(2) if bits else 1.0
    d = curves[(curves["split"] == "test") & (curves["member"] == member)]
    d = d[d["step"] > 0]
    wide = d.pivot(index="step", columns="task", values="loss_nats") * scale
    tasks = [int(t) for t in wide.columns if int(t) >= 0]
    cmap = colormaps["viridis"]
    for t in tasks:
        ax.plot(wide.index, wide[t], color=cmap(t / max(len(tasks) - 1, 1)), lw=0.8, alpha=0.8)
    if -1 in wide.columns:
        ax.plot(wide.index, wide[-1], color="black", lw=2, label="mean (Zipf mixture)")
    width = int(d["width"].iloc[0]) if len(d) else 0
    ax.set(
        xscale="log",
        xlabel="step",
        ylabel="test loss (" + ("bits" if bits else "nats") + ")",
        title=f"width {width}: per-subtask curves (yellow = rarer)",
    )
    ax.legend(loc="upper right", fontsize=8)
    return ax


def plot_mean_loss(curves: pd.DataFrame, *, ax: Axes | None = None) -> Axes:
    """Mixture test loss vs step for every member (log-log)."""
    from matplotlib import colormaps

    ax = _axes(ax)
    d = curves[(curves["split"] == "test") & (curves["task"] == -1) & (curves["step"] > 0)]
    members = sorted(d["member"].unique())
    cmap = colormaps["plasma"]
    for i, m in enumerate(members):
        dm = d[d["member"] == m]
        label = f"w={int(dm['width'].iloc[0])} s={int(dm['seed'].iloc[0])}"
        ax.plot(dm["step"], dm["loss_nats"], color=cmap(i / max(len(members), 1)), label=label)
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="step",
        ylabel="mean test loss (nats)",
        title="mean loss by member",
    )
    ax.legend(fontsize=7, ncol=2)
    return ax


def subtask_figure(curves: pd.DataFrame, *, max_panels: int = 4) -> Figure:
    """Per-subtask curves of up to ``max_panels`` members (spread over widths) and the mean
    loss of all members, side by side."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    members = sorted(curves["member"].unique())
    picks = sorted(
        {members[round(i)] for i in np.linspace(0, len(members) - 1, min(max_panels, len(members)))}
    )
    fig, axes = plt.subplots(
        1, len(picks) + 1, figsize=(4.2 * (len(picks) + 1), 3.6), squeeze=False
    )
    for ax, m in zip(axes[0], picks, strict=False):
        plot_subtask_curves(curves, int(m), ax=ax)
    plot_mean_loss(curves, ax=axes[0][-1])
    fig.tight_layout()
    return fig


def save_figure(fig: Any, path: str | Path) -> Path:
    """Save ``fig`` as PNG atomically and close it."""
    import matplotlib.pyplot as plt

    from quanta.store import atomic_write

    path = Path(path)
    with atomic_write(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=110)
    plt.close(fig)
    return path
