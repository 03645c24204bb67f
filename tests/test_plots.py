"""Plotting leaves matplotlib's global state alone: the backend a user chose stays chosen, and
figures built for files never enter pyplot's registry (no leak, nothing to close)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

import quanta
from quanta import plots

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
STEPS = np.geomspace(1, 1000, 12).round().astype(int)


def parity_curves() -> pd.DataFrame:
    """Three members; subtask ``t`` drops from ln 2 to 0.01 at step ``10 · 3^t``."""
    rows = []
    for member, width in enumerate((4, 8, 16)):
        for step in STEPS:
            task_loss = [0.01 if step >= 10 * 3**t else np.log(2) for t in range(4)]
            rows += [(member, width, step, "test", t, v) for t, v in enumerate(task_loss)]
            rows.append((member, width, step, "test", -1, float(np.mean(task_loss)) / width))
    cols = ["member", "width", "step", "split", "task", "loss_nats"]
    return pd.DataFrame(rows, columns=cols).assign(seed=0)


def parity_analysis() -> SimpleNamespace:
    """An analysis with every panel of :func:`quanta.plots.analysis_figures`: N and S axes, two
    Zipf α (so the α sweep is drawn), a heatmap and convergence times."""
    x = {"N": np.geomspace(100, 10_000, 6), "S": np.geomspace(10, 10_000, 6)}
    points, exps, slopes = [], [], []
    for alpha in (0.2, 0.6):
        group = f"alpha={alpha}"
        for axis, xs in x.items():
            e = alpha if axis == "N" else alpha / (alpha + 1)
            points.append(
                pd.DataFrame(
                    {"axis": axis, "group": group, "x": xs, "loss": 3 * xs**-e, "in_fit": True}
                ).assign(n_learned=(xs / xs[0]) ** (1 / (alpha + 1)))
            )
            exps.append(
                {
                    "axis": axis,
                    "group": group,
                    "alpha": alpha,
                    "fit": "power",
                    "exponent": e,
                    "ci_low": e - 0.01,
                    "ci_high": e + 0.01,
                    "c0": 0.0,
                    "c1": 3.0,
                    "predicted": e,
                    "success": True,
                    "message": "ok",
                    "n_points": len(xs),
                    "x_min": xs[0],
                    "x_max": xs[-1],
                }
            )
            slopes.append(
                {"quantity": f"learned_vs_{axis}", "group": group, "slope": 0.8, "predicted": 0.8}
            )
        slopes.append(
            {
                "quantity": "convergence_step_vs_p",
                "group": group,
                "slope": -1.0,
                "ci_low": -1.1,
                "ci_high": -0.9,
                "predicted": -1.0,
            }
        )
    p = 1.0 / np.arange(1, 9)
    heat = pd.DataFrame(
        [(task, n, 0.69 if task > i else 0.01) for i, n in enumerate(x["N"]) for task in range(6)],
        columns=["task", "scale", "loss"],
    ).assign(panel="heat_N", group="alpha=0.2")
    conv = pd.DataFrame({"p": p, "converged_step": 20 / p}).assign(
        panel="convergence", group="alpha=0.2"
    )
    return SimpleNamespace(
        points=pd.concat(points, ignore_index=True),
        exponents=pd.DataFrame(exps),
        slopes=pd.DataFrame(slopes),
        subtasks=pd.concat([heat, conv], ignore_index=True),
    )


def lm_analysis() -> Any:
    from quanta.lm.curves import LMAnalysis
    from quanta.scaling import fit_power_law

    scale = np.array([1e4, 4e4, 1.6e5, 6.4e5])
    mean = 5 * scale**-0.1
    rng = np.random.default_rng(0)
    losses = rng.exponential(mean, size=(40, len(scale)))
    edges = np.linspace(0, 10, 21)
    hist = pd.concat(
        [
            pd.DataFrame(
                {
                    "model": j,
                    "bin_low": edges[:-1],
                    "bin_high": edges[1:],
                    "density": np.histogram(losses[:, j], bins=edges, density=True)[0],
                }
            )
            for j in range(len(scale))
        ],
        ignore_index=True,
    )
    mono = np.arange(40) % 2 == 0
    return LMAnalysis(
        source=Path("."),
        axis="N",
        models=pd.DataFrame(
            {"model": range(4), "label": [f"m{j}" for j in range(4)], "scale": scale}
        ).assign(mean_loss=mean),
        fit=fit_power_law(scale, mean, offset=False, bootstrap=20),
        fit_models=[0, 1, 2, 3],
        histograms=hist,
        tokens=pd.DataFrame({"monogenic": mono, "polygenic": ~mono}),
        curves={r: losses[r] for r in range(10)},
    )


def dynamics_analysis() -> Any:
    """Two models over four steps; the second's steps as an LMAnalysis along steps."""
    import dataclasses

    from quanta.lm.dynamics import DynamicsAnalysis

    steps = np.array([10, 100, 1000, 10000])
    models = pd.DataFrame(
        {
            "name": np.repeat(["small", "big"], 4),
            "n_params": np.repeat([1000, 50_000], 4),
            "step": np.tile(steps, 2),
            "mean_loss": np.r_[5 * steps**-0.05, 4 * steps**-0.1],
        }
    )
    along = lm_analysis()
    along = dataclasses.replace(along, axis="step", models=along.models.assign(scale=steps))
    return DynamicsAnalysis(Path("."), "big", models, along, {})


def prior() -> pd.DataFrame:
    return pd.read_csv(Path(quanta.__file__).parent / "data" / "prior_exponents.csv")


OURS = pd.DataFrame({"label": ["this run"], "alpha_N": [0.4], "alpha_D": [0.3]})


def _rank_frequency_figure() -> Any:
    from quanta.qdg.cluster import rank_frequency

    labels = {k: np.random.default_rng(k).zipf(1.8, size=300) % k for k in (4, 8)}
    fits = {"4": {"exponent": 1.2}, "8": {"exponent": None}}
    return plots.rank_frequency_figure(rank_frequency(labels), fits)


def _theory_figure() -> Any:
    from quanta.theory import theory_table

    return plots.theory_figure(*theory_table([0.3], seeds=1))


# Every public function that builds figures for files → (build, the file stems it yields).
FILE_BUILDERS: dict[str, tuple[Callable[[], Any], set[str]]] = {
    "subtask_figure": (lambda: plots.subtask_figure(parity_curves()), {"subtask_figure"}),
    "analysis_figures": (
        lambda: plots.analysis_figures(parity_analysis()),
        {"scaling", "learned", "heatmaps", "convergence", "alpha_sweep"},
    ),
    "theory_figure": (_theory_figure, {"theory_figure"}),
    "lm_figures": (
        lambda: plots.lm_figures(lm_analysis()),
        {"mean_loss", "loss_distribution", "token_curves"},
    ),
    "dynamics_figures": (
        lambda: plots.dynamics_figures(dynamics_analysis()),
        {"mean_loss_steps", "loss_distribution_steps", "token_curves_steps"},
    ),
    "rank_frequency_figure": (_rank_frequency_figure, {"rank_frequency_figure"}),
    "prior_exponents_figure": (
        lambda: plots.prior_exponents_figure(prior(), OURS),
        {"prior_exponents_figure"},
    ),
}

# Every public ``plot_*`` function and ``PowerLawFit.plot``, called without axes.
DRAWERS: dict[str, Callable[[], Any]] = {
    "plot_subtask_curves": lambda: plots.plot_subtask_curves(parity_curves(), 1),
    "plot_mean_loss": lambda: plots.plot_mean_loss(parity_curves()),
    "plot_scaling": lambda: plots.plot_scaling(
        parity_analysis().points, parity_analysis().exponents, "N"
    ),
    "plot_learned": lambda: plots.plot_learned(
        parity_analysis().points, parity_analysis().slopes, "S"
    ),
    "plot_convergence": lambda: plots.plot_convergence(
        parity_analysis().subtasks, parity_analysis().slopes
    ),
    "plot_heatmap": lambda: plots.plot_heatmap(parity_analysis().subtasks, "N"),
    "plot_alpha_sweep": lambda: plots.plot_alpha_sweep(parity_analysis().exponents),
    "plot_lm_mean_loss": lambda: plots.plot_lm_mean_loss(lm_analysis()),
    "plot_loss_distribution": lambda: plots.plot_loss_distribution(lm_analysis(), weighted=True),
    "plot_token_curves": lambda: plots.plot_token_curves(lm_analysis(), "polygenic"),
    "plot_dynamics_mean_loss": lambda: plots.plot_dynamics_mean_loss(dynamics_analysis()),
    "plot_prior_exponents": lambda: plots.plot_prior_exponents(prior(), OURS),
    "PowerLawFit.plot": lambda: lm_analysis().fit.plot(),
}


@pytest.fixture
def user_backend():
    """A user's session: a non-Agg backend chosen (pdf needs no display) and pyplot in use.
    The test process's own backend is put back afterwards, whatever the test did."""
    before = matplotlib.get_backend()
    plt.switch_backend("pdf")
    yield "pdf"
    plt.close("all")
    plt.switch_backend(before)


def test_every_public_plot_function_is_covered():
    covered = {*FILE_BUILDERS, *DRAWERS, "save_figure"} - {"PowerLawFit.plot"}
    assert covered == set(plots.__all__)


@pytest.mark.parametrize("name", sorted(FILE_BUILDERS))
def test_file_figures_keep_the_backend_and_stay_out_of_pyplot(name, user_backend, tmp_path):
    build, stems = FILE_BUILDERS[name]
    open_before = plt.get_fignums()
    figs = build()
    for stem, fig in figs.items() if isinstance(figs, dict) else [(name, figs)]:
        assert fig.canvas.manager is None, f"{stem} is a pyplot figure"
        plots.save_figure(fig, tmp_path / f"{stem}.png")
    assert matplotlib.get_backend() == user_backend
    assert plt.get_fignums() == open_before
    assert {p.stem for p in tmp_path.iterdir()} == stems
    for stem in stems:
        data = (tmp_path / f"{stem}.png").read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5_000, stem


@pytest.mark.parametrize("name", sorted(DRAWERS))
def test_plots_without_axes_draw_inline_and_keep_the_backend(name, user_backend):
    open_before = len(plt.get_fignums())
    ax = DRAWERS[name]()
    assert matplotlib.get_backend() == user_backend
    # One new pyplot figure, which a notebook shows inline.
    assert ax.figure.canvas.manager is not None and ax.has_data()
    assert len(plt.get_fignums()) == open_before + 1


def test_save_figure_writes_and_closes_a_pyplot_figure(user_backend, tmp_path):
    fig, ax = plt.subplots()
    ax.plot([1, 2, 3], [3, 1, 2])
    path = plots.save_figure(fig, tmp_path / "f.png")
    assert path.read_bytes().startswith(PNG_MAGIC)
    assert not plt.fignum_exists(fig.number)
    assert matplotlib.get_backend() == user_backend


# A fresh interpreter: the backend is chosen before pyplot is imported, and the package is
# imported after, so a backend set at import time is caught too.
_FRESH = """
import sys
import matplotlib
matplotlib.use("svg")
import numpy as np
import quanta, quanta.plots, quanta.scaling, quanta.lm.curves, quanta.qdg.cluster
from quanta.scaling import fit_power_law

x = np.geomspace(1, 100, 8)
fit_power_law(x, 2 * x**-0.5, offset=False).plot()
import matplotlib.pyplot as plt
fig = quanta.plots.prior_exponents_figure(
    __import__("pandas").DataFrame({"study": ["a"], "alpha_N": [0.3], "alpha_D": [0.2]})
)
quanta.plots.save_figure(fig, sys.argv[1])
print(matplotlib.get_backend(), len(plt.get_fignums()))
"""


def test_a_fresh_session_keeps_its_backend(tmp_path):
    out = tmp_path / "f.png"
    res = subprocess.run(
        [sys.executable, "-c", _FRESH, str(out)], capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["svg", "1"]  # fit.plot()'s figure only
    assert out.read_bytes().startswith(PNG_MAGIC)


def test_alpha_sweep_draws_an_interval_that_does_not_contain_the_mean_estimate():
    # Seeds' percentile-bootstrap bounds, averaged, need not contain the averaged estimate (the
    # tiny preset's α × D grid gave one): the interval is drawn from its bounds, as they are.
    exponents = pd.DataFrame(
        {
            "fit": "power",
            "success": True,
            "axis": "D",
            "alpha": [0.2, 0.2, 0.4, 0.4],
            "exponent": [0.30, 0.34, 0.40, 0.42],
            "ci_low": [0.33, 0.35, 0.30, 0.32],
            "ci_high": [0.50, 0.52, 0.50, 0.52],
        }
    )
    fig = matplotlib.figure.Figure()
    ax = plots.plot_alpha_sweep(exponents, ax=fig.subplots())
    (segments,) = [c.get_segments() for c in ax.collections]
    assert np.allclose([s[:, 1] for s in segments], [[0.34, 0.51], [0.31, 0.51]])
