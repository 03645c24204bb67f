"""Plot functions: data in, ``ax=None``, the axes out. matplotlib is imported lazily.

Computing lives elsewhere; these only draw tidy tables produced by the pipelines.

Nothing here touches matplotlib's global state: the backend is never set. ``plot_*`` functions
given no axes draw on a new pyplot figure (so a notebook shows it inline); the ``*_figure(s)``
builders, whose figures go to files, draw on bare :class:`matplotlib.figure.Figure` objects,
outside pyplot's registry, which :meth:`~matplotlib.figure.Figure.savefig` renders with Agg
whatever the backend, and which need no closing.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "analysis_figures",
    "dynamics_figures",
    "lm_figures",
    "plot_alpha_sweep",
    "plot_convergence",
    "plot_dynamics_mean_loss",
    "plot_heatmap",
    "plot_learned",
    "plot_lm_mean_loss",
    "plot_loss_distribution",
    "plot_mean_loss",
    "plot_prior_exponents",
    "plot_scaling",
    "plot_subtask_curves",
    "plot_token_curves",
    "prior_exponents_figure",
    "rank_frequency_figure",
    "save_figure",
    "subtask_figure",
    "theory_figure",
]


def _axes(ax: Axes | None) -> Axes:
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(5, 3.5))[1]


def _figure(**kwargs: Any) -> Figure:
    from matplotlib.figure import Figure

    return Figure(**kwargs)


def _legend(ax: Axes) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)


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
    members = sorted(curves["member"].unique())
    picks = sorted(
        {members[round(i)] for i in np.linspace(0, len(members) - 1, min(max_panels, len(members)))}
    )
    fig = _figure(figsize=(4.2 * (len(picks) + 1), 3.6))
    axes = fig.subplots(1, len(picks) + 1, squeeze=False)
    for ax, m in zip(axes[0], picks, strict=False):
        plot_subtask_curves(curves, int(m), ax=ax)
    plot_mean_loss(curves, ax=axes[0][-1])
    fig.tight_layout()
    return fig


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Save ``fig`` as PNG atomically (Agg, whatever the backend); a pyplot figure is closed."""
    from quanta.store import atomic_write

    path = Path(path)
    with atomic_write(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=110)
    if getattr(fig.canvas, "manager", None) is not None:  # only pyplot figures have a manager
        import matplotlib.pyplot as plt

        plt.close(fig)
    return path


# --------------------------------------------------------------------------- scaling analyses

_AXIS_LABEL = {"N": "parameters N", "D": "training samples D", "S": "steps S"}


def plot_scaling(
    points: pd.DataFrame, exponents: pd.DataFrame, axis: str, *, ax: Axes | None = None
) -> Axes:
    """Loss vs N, D or S for every group: points, the fitted pure power law (α with CI) and
    the theory's slope through the fit's middle (dashed)."""
    from matplotlib import colormaps

    ax = _axes(ax)
    d = points[points["axis"] == axis]
    fits = exponents[(exponents["axis"] == axis) & (exponents["fit"] == "power")]
    groups = list(dict.fromkeys(d["group"]))
    cmap = colormaps["viridis"]
    for i, group in enumerate(groups):
        color = cmap(i / max(len(groups) - 1, 1)) if len(groups) > 1 else "C0"
        g = d[d["group"] == group]
        ax.plot(g["x"], g["loss"], "o", ms=3.5, color=color, alpha=0.35)
        fit_pts = g[g["in_fit"]]
        ax.plot(fit_pts["x"], fit_pts["loss"], "o", ms=3.5, color=color)
        row = fits[fits["group"] == group]
        if row.empty or not bool(row["success"].iloc[0]):
            continue
        r = row.iloc[0]
        x = np.geomspace(r["x_min"], r["x_max"], 100)
        label = f"{group}: α={r['exponent']:.3f}"
        if np.isfinite(r["ci_low"]):
            label += f" [{r['ci_low']:.3f}, {r['ci_high']:.3f}]"
        ax.plot(x, r["c1"] * x ** -r["exponent"], "-", color=color, label=label)
        if np.isfinite(r["predicted"]):
            mid = np.sqrt(r["x_min"] * r["x_max"])
            y_mid = r["c1"] * mid ** -r["exponent"]
            ax.plot(x, y_mid * (x / mid) ** -r["predicted"], "--", color=color, lw=1, alpha=0.8)
    theory = fits["predicted"].dropna()
    title = f"loss vs {axis}"
    if len(theory) and theory.nunique() == 1:
        title += f" (dashed: theory α={theory.iloc[0]:.3f})"
    ax.set(
        xscale="log",
        yscale="log",
        xlabel=_AXIS_LABEL[axis],
        ylabel="mean test loss (nats)",
        title=title,
    )
    _legend(ax)
    return ax


def plot_learned(
    points: pd.DataFrame,
    slopes: pd.DataFrame,
    axis: str,
    *,
    ax: Axes | None = None,
    threshold: str = "",
) -> Axes:
    """Number of learned subtasks vs N, D or S with the fitted log-log slope and the theory's;
    ``threshold`` (e.g. ``"loss < 0.1 nats"``) labels the y axis with the definition used."""
    ax = _axes(ax)
    d = points[(points["axis"] == axis) & (points["n_learned"] > 0)]
    s = slopes[slopes["quantity"] == f"learned_vs_{axis}"]
    for i, group in enumerate(dict.fromkeys(d["group"])):
        g = d[d["group"] == group]
        row = s[s["group"] == group]
        label = group
        if not row.empty and np.isfinite(row["slope"].iloc[0]):
            r = row.iloc[0]
            label += f": slope {r['slope']:.2f} (theory {r['predicted']:.2f})"
        ax.plot(g["x"], g["n_learned"], "o-", ms=3, color=f"C{i % 10}", label=label)
    ax.set(
        xscale="log",
        yscale="log",
        xlabel=_AXIS_LABEL[axis],
        ylabel=f"subtasks learned ({threshold})" if threshold else "subtasks learned",
        title=f"quanta learned vs {axis}",
    )
    _legend(ax)
    return ax


def plot_convergence(
    subtasks: pd.DataFrame, slopes: pd.DataFrame, *, ax: Axes | None = None, threshold: str = ""
) -> Axes:
    """Step at which each subtask is first learned vs its frequency p_i (theory: slope −1);
    ``threshold`` (e.g. ``"loss < 0.1 bits"``) labels the y axis with the definition used."""
    ax = _axes(ax)
    d = subtasks[(subtasks["panel"] == "convergence") & subtasks["converged_step"].notna()]
    s = slopes[slopes["quantity"] == "convergence_step_vs_p"]
    for i, group in enumerate(dict.fromkeys(d["group"])):
        g = d[d["group"] == group]
        row = s[s["group"] == group]
        label = group
        if not row.empty and np.isfinite(row["slope"].iloc[0]):
            r = row.iloc[0]
            label += f": slope {r['slope']:.2f} [{r['ci_low']:.2f}, {r['ci_high']:.2f}]"
            x = np.geomspace(g["p"].min(), g["p"].max(), 50)
            icept = np.exp(np.mean(np.log(g["converged_step"]) - r["slope"] * np.log(g["p"])))
            ax.plot(x, icept * x ** r["slope"], "-", color=f"C{i % 10}", lw=1)
        ax.plot(g["p"], g["converged_step"], "o", ms=3.5, color=f"C{i % 10}", label=label)
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="subtask frequency p_i",
        ylabel=f"convergence step (first {threshold})" if threshold else "convergence step",
        title="convergence time vs frequency (theory slope −1)",
    )
    _legend(ax)
    return ax


def plot_heatmap(subtasks: pd.DataFrame, axis: str, *, ax: Axes | None = None) -> Axes:
    """Per-subtask test loss (colour, nats) across scale: subtasks by frequency rank (rows) ×
    N, D or S (columns) — the paper's Fig 2 lower row. First group only."""
    ax = _axes(ax)
    d = subtasks[subtasks["panel"] == f"heat_{axis}"]
    if d.empty:
        return ax
    d = d[d["group"] == d["group"].iloc[0]]
    wide = d.pivot_table(index="task", columns="scale", values="loss", aggfunc="mean")
    x = wide.columns.to_numpy(dtype=np.float64)
    edges = np.sqrt(x[:-1] * x[1:]) if len(x) > 1 else np.array([])
    lo = x[0] ** 2 / edges[0] if len(edges) else x[0] / 2
    hi = x[-1] ** 2 / edges[-1] if len(edges) else x[0] * 2
    xe = np.concatenate([[lo], edges, [hi]])
    ye = np.arange(len(wide.index) + 1) - 0.5
    # Colours span 0 … 1 nat (chance is ln 2); memorized small-D runs can go far above.
    mesh = ax.pcolormesh(xe, ye, wide.to_numpy(), cmap="magma_r", vmin=0, vmax=1, shading="flat")
    ax.figure.colorbar(mesh, ax=ax, label="test loss (nats)", extend="max")
    ax.set(
        xscale="log",
        xlabel=_AXIS_LABEL[axis],
        ylabel="subtask (frequency rank)",
        title=f"per-subtask loss vs {axis}",
    )
    ax.invert_yaxis()
    return ax


def plot_alpha_sweep(exponents: pd.DataFrame, *, ax: Axes | None = None) -> Axes:
    """Measured α_N, α_D, α_S (pure power-law fits, bootstrap CIs) vs the Zipf α, with the
    theory lines α and α/(α+1) — the paper's Fig 10."""
    ax = _axes(ax)
    d = exponents[(exponents["fit"] == "power") & exponents["success"].astype(bool)]
    grid = np.linspace(max(d["alpha"].min() * 0.8, 1e-3), d["alpha"].max() * 1.1, 100)
    ax.plot(grid, grid, "k-", lw=1, label="theory α_N = α")
    ax.plot(grid, grid / (grid + 1), "k--", lw=1, label="theory α_D = α_S = α/(α+1)")
    for i, axis in enumerate(("N", "D", "S")):
        g = (
            d[d["axis"] == axis]
            .groupby("alpha")
            .agg(e=("exponent", "mean"), lo=("ci_low", "mean"), hi=("ci_high", "mean"))
        )
        if g.empty:
            continue
        # The interval is drawn from its own bounds, not as ± errors around the estimate: a
        # mean of percentile-bootstrap bounds over seeds need not contain the mean estimate,
        # and errorbar refuses the negative error that would give.
        ax.plot(g.index, g["e"], "o-", ms=4, color=f"C{i}", label=f"α_{axis}")
        ok = np.isfinite(g["lo"]) & np.isfinite(g["hi"])
        ax.vlines(g.index[ok], g["lo"][ok], g["hi"][ok], color=f"C{i}", lw=1)
    ax.set(xlabel="Zipf α", ylabel="fitted exponent", title="exponents vs α")
    ax.legend(fontsize=7)
    return ax


def analysis_figures(analysis: Any) -> dict[str, Figure]:
    """The figures of a :class:`quanta.parity.analyze.Analysis`, by file stem."""
    figs: dict[str, Figure] = {}
    pts, exps = analysis.points, analysis.exponents
    axes_present = [a for a in ("N", "D", "S") if len(pts) and (pts["axis"] == a).any()]
    if not axes_present:
        return figs
    thresholds = getattr(analysis, "thresholds", {})  # duck-typed analyses may lack them
    labels = {k: thresholds.get(k, {}).get("label", "") for k in ("learned", "convergence")}
    for name in ("scaling", "learned"):
        fig = _figure(figsize=(5.2 * len(axes_present), 4))
        axs = fig.subplots(1, len(axes_present))
        for ax, axis in zip(np.atleast_1d(axs), axes_present, strict=True):
            if name == "scaling":
                plot_scaling(pts, exps, axis, ax=ax)
            else:
                plot_learned(pts, analysis.slopes, axis, ax=ax, threshold=labels["learned"])
        fig.tight_layout()
        figs[name] = fig
    sub = analysis.subtasks
    heat = [a for a in axes_present if len(sub) and (sub["panel"] == f"heat_{a}").any()]
    if heat:
        fig = _figure(figsize=(5.2 * len(heat), 4))
        axs = fig.subplots(1, len(heat))
        for ax, axis in zip(np.atleast_1d(axs), heat, strict=True):
            plot_heatmap(sub, axis, ax=ax)
        fig.tight_layout()
        figs["heatmaps"] = fig
    if len(sub) and (sub["panel"] == "convergence").any():
        fig = _figure(figsize=(5.2, 4))
        ax = fig.subplots()
        plot_convergence(sub, analysis.slopes, ax=ax, threshold=labels["convergence"])
        fig.tight_layout()
        figs["convergence"] = fig
    ok = exps[(exps["fit"] == "power") & exps["success"].astype(bool)]
    if ok["alpha"].nunique() >= 2:
        fig = _figure(figsize=(5.2, 4))
        ax = fig.subplots()
        plot_alpha_sweep(exps, ax=ax)
        fig.tight_layout()
        figs["alpha_sweep"] = fig
    return figs


def theory_figure(curves: pd.DataFrame, exponents: pd.DataFrame) -> Figure:
    """The quantization model's simulated L(N), L(D), L(S) for every α (log-log), labelled
    with fitted vs predicted exponents (from :func:`quanta.theory.theory_table`)."""
    fig = _figure(figsize=(14, 4))
    axs = fig.subplots(1, 3)
    labels = {"N": "parameters N (quanta capacity)", "D": "samples D", "S": "steps S"}
    for ax, kind in zip(axs, ("N", "D", "S"), strict=True):
        for i, alpha in enumerate(dict.fromkeys(curves["alpha"])):
            c = curves[(curves["kind"] == kind) & (curves["alpha"] == alpha)]
            c = c[c["loss"] > 0]
            e = exponents[(exponents["kind"] == kind) & (exponents["alpha"] == alpha)].iloc[0]
            ax.plot(
                c["scale"],
                c["loss"],
                "o-",
                ms=3,
                color=f"C{i % 10}",
                label=f"α={alpha:g}: fit {e['fitted']:.3f}, theory {e['predicted']:.3f}",
            )
        ax.set(xscale="log", yscale="log", xlabel=labels[kind], ylabel="loss (units of δ)")
        ax.set_title(f"quantization model: L({kind})")
        _legend(ax)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- language models


def plot_lm_mean_loss(analysis: Any, *, ax: Axes | None = None) -> Axes:
    """Mean per-token loss vs non-embedding N (or step) with the power-law fit and its CI."""
    ax = _axes(ax)
    m = analysis.models
    ax.plot(m["scale"], m["mean_loss"], "o", color="C0", label="models")
    fit = analysis.fit
    if fit is not None and fit.success:
        x = np.geomspace(fit.x.min(), fit.x.max(), 100)
        label = f"L ∝ {analysis.axis}^-{fit.alpha:.3f}"
        if fit.alpha_ci is not None:
            label += f" [{fit.alpha_ci[0]:.3f}, {fit.alpha_ci[1]:.3f}]"
        ax.plot(x, fit.predict(x), "-", color="C1", label=label)
    xlabel = "non-embedding parameters N" if analysis.axis == "N" else "training step"
    ax.set(xscale="log", yscale="log", xlabel=xlabel, ylabel="mean loss (nats/token)")
    ax.set_title("mean loss vs " + ("size" if analysis.axis == "N" else "step"))
    _legend(ax)
    return ax


def plot_loss_distribution(analysis: Any, *, weighted: bool, ax: Axes | None = None) -> Axes:
    """p(L) (``weighted=False``, log y) or L·p(L) (its contribution to the mean) per model."""
    from matplotlib import colormaps

    ax = _axes(ax)
    h = analysis.histograms
    cmap = colormaps["viridis"]
    n = len(analysis.models)
    for j, row in analysis.models.reset_index(drop=True).iterrows():
        d = h[h["model"] == row["model"]]
        mid = (d["bin_low"] + d["bin_high"]) / 2
        y = d["density"] * (mid if weighted else 1.0)
        label = f"step {row['scale']:,.0f}" if analysis.axis == "step" else str(row["label"])
        ax.plot(mid, y, color=cmap(int(j) / max(n - 1, 1)), lw=1, label=label)
    ax.set(
        xlabel="per-token loss L (nats)",
        ylabel="L·p(L)" if weighted else "p(L)",
        title="contribution to the mean, L·p(L)" if weighted else "distribution of losses p(L)",
    )
    if not weighted:
        ax.set_yscale("log")
    _legend(ax)
    return ax


def plot_token_curves(
    analysis: Any, kind: str, *, n: int = 30, name: str | None = None, ax: Axes | None = None
) -> Axes:
    """Loss vs scale of up to ``n`` tokens of one class (``monogenic`` / ``polygenic``), called
    ``name`` in the title (default ``kind``; along steps: abrupt / gradual)."""
    ax = _axes(ax)
    flags = analysis.tokens[kind].to_numpy()
    rows = [r for r in analysis.curves if flags[r]][:n]
    scale = analysis.models["scale"].to_numpy()
    for r in rows:
        ax.plot(scale, analysis.curves[r], "-", color="C3" if kind == "monogenic" else "C2", lw=0.7)
    if not rows:
        ax.text(0.5, 0.5, "none at these thresholds", transform=ax.transAxes, ha="center")
    ax.set(
        xscale="log",
        xlabel="non-embedding parameters N" if analysis.axis == "N" else "training step",
        ylabel="per-token loss (nats)",
        title=f"{name or kind} tokens ({int(flags.sum()):,} in all; {len(rows)} shown)",
    )
    return ax


def lm_figures(analysis: Any) -> dict[str, Figure]:
    """The figures of a :class:`quanta.lm.curves.LMAnalysis`, by file stem."""
    figs: dict[str, Figure] = {}
    fig = _figure(figsize=(5.2, 4))
    ax = fig.subplots()
    plot_lm_mean_loss(analysis, ax=ax)
    fig.tight_layout()
    figs["mean_loss"] = fig
    fig = _figure(figsize=(11, 4))
    axs = fig.subplots(1, 2)
    plot_loss_distribution(analysis, weighted=False, ax=axs[0])
    plot_loss_distribution(analysis, weighted=True, ax=axs[1])
    fig.tight_layout()
    figs["loss_distribution"] = fig
    fig = _figure(figsize=(11, 4))
    axs = fig.subplots(1, 2)
    plot_token_curves(analysis, "monogenic", ax=axs[0])
    plot_token_curves(analysis, "polygenic", ax=axs[1])
    fig.tight_layout()
    figs["token_curves"] = fig
    return figs


def plot_dynamics_mean_loss(analysis: Any, *, ax: Axes | None = None) -> Axes:
    """Mean per-token loss vs training step (log x), one line per model coloured by size, of a
    :class:`quanta.lm.dynamics.DynamicsAnalysis`; step 0 is left out (no place on a log axis)."""
    from matplotlib import colormaps

    ax = _axes(ax)
    m = analysis.models[analysis.models["step"] > 0]
    names = list(dict.fromkeys(m["name"]))  # sorted by size
    cmap = colormaps["viridis"]
    for i, name in enumerate(names):
        d = m[m["name"] == name].sort_values("step")
        label = f"{name} (N={int(d['n_params'].iloc[0]):,})"
        color = cmap(i / max(len(names) - 1, 1))
        ax.plot(d["step"], d["mean_loss"], "o-", color=color, ms=3, lw=1.2, label=label)
    ax.set(
        xscale="log",
        xlabel="training step",
        ylabel="mean loss (nats/token)",
        title="mean loss vs step, per model",
    )
    _legend(ax)
    return ax


def dynamics_figures(analysis: Any) -> dict[str, Figure]:
    """The figures of a :class:`quanta.lm.dynamics.DynamicsAnalysis`, by file stem: mean loss
    vs step per model; p(L) and L·p(L) of one model across its steps; its abrupt and gradual
    tokens' losses over steps."""
    figs: dict[str, Figure] = {}
    fig = _figure(figsize=(5.6, 4))
    plot_dynamics_mean_loss(analysis, ax=fig.subplots())
    fig.tight_layout()
    figs["mean_loss_steps"] = fig
    fig = _figure(figsize=(11, 4))
    axs = fig.subplots(1, 2)
    plot_loss_distribution(analysis.steps, weighted=False, ax=axs[0])
    plot_loss_distribution(analysis.steps, weighted=True, ax=axs[1])
    fig.suptitle(f"{analysis.model} across its checkpoints", fontsize=10)
    fig.tight_layout()
    figs["loss_distribution_steps"] = fig
    fig = _figure(figsize=(11, 4))
    axs = fig.subplots(1, 2)
    plot_token_curves(analysis.steps, "monogenic", name="abrupt", ax=axs[0])
    plot_token_curves(analysis.steps, "polygenic", name="gradual", ax=axs[1])
    fig.suptitle(f"{analysis.model}: per-token loss over training", fontsize=10)
    fig.tight_layout()
    figs["token_curves_steps"] = fig
    return figs


def rank_frequency_figure(table: pd.DataFrame, fits: dict[str, Any]) -> Figure:
    """Cluster size vs rank for every K (thin) and the envelope over K (thick), log-log, with
    each K's Zipf MLE exponent."""
    from matplotlib import colormaps

    fig = _figure(figsize=(5.5, 4.2))
    ax = fig.subplots()
    ks = sorted(k for k in table["K"].unique() if k > 0)
    cmap = colormaps["viridis"]
    for i, k in enumerate(ks):
        d = table[table["K"] == k]
        fit = fits.get(str(k), {})
        label = f"K={k}"
        if fit.get("exponent") is not None:
            label += f": s={fit['exponent']:.2f}"
        ax.plot(d["rank"], d["size"], color=cmap(i / max(len(ks) - 1, 1)), lw=1, label=label)
    env = table[table["K"] == 0]
    ax.plot(env["rank"], env["size"], "k-", lw=2, label="envelope")
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="rank",
        ylabel="cluster size",
        title="QDG: rank-frequency of cluster sizes",
    )
    _legend(ax)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- prior exponents


def plot_prior_exponents(
    prior: pd.DataFrame, ours: pd.DataFrame | None = None, *, ax: Axes | None = None
) -> Axes:
    """Published (α_N, α_D) pairs against α_D = α_N/(α_N+1) (the quantization model) and
    α_D = α_N (PAPER.md App. E), on log axes so every pair is visible; ``ours`` (columns
    label, alpha_N, alpha_D) adds this run's measured pairs as stars."""
    ax = _axes(ax)
    for study, group in prior.groupby("study", sort=False):
        ax.scatter(group["alpha_N"], group["alpha_D"], s=18, label=str(study))
    grid = np.geomspace(0.01, 6.0, 200)
    ax.plot(grid, grid / (grid + 1), color="black", lw=1.2, label="α_D = α_N/(α_N+1)")
    ax.plot(grid, grid, color="grey", ls="--", lw=1, label="α_D = α_N")
    if ours is not None:
        for r in ours.to_dict("records"):
            ax.scatter(
                [float(r["alpha_N"])],
                [float(r["alpha_D"])],
                marker="*",
                s=140,
                edgecolor="black",
                label=str(r["label"]),
            )
    ax.set(xscale="log", yscale="log", xlabel="α_N (parameters)", ylabel="α_D (data)")
    ax.set_title("published scaling exponents", fontsize=9)
    ax.legend(fontsize=6, loc="upper left")
    return ax


def prior_exponents_figure(prior: pd.DataFrame, ours: pd.DataFrame | None = None) -> Figure:
    """:func:`plot_prior_exponents` on a figure of its own."""
    fig = _figure(figsize=(6, 4.5))
    ax = fig.subplots()
    plot_prior_exponents(prior, ours, ax=ax)
    fig.tight_layout()
    return fig
