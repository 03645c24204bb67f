"""Analyses on planted (synthetic) curves, where every exponent and slope is known exactly, and
on real tiny runs and sweeps through the CLI."""

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from quanta.cli import app
from quanta.config import config_hash, config_to_dict
from quanta.parity import ParityConfig
from quanta.parity.analyze import analyze, write_analysis
from quanta.parity.task import zipf_probs
from quanta.sweep import SweepSpec, run_sweep

N_TASKS = 64
STEPS = np.unique(np.append(np.geomspace(1, 100_000, 400).astype(int), 1000))
N_PARAMS = 100 * 2 ** np.arange(6)  # learned count planted as N / 100: slope exactly 1


def cfg(**kw) -> ParityConfig:
    base = {"n_tasks": N_TASKS, "n_bits": 12, "widths": (4,), "steps": int(STEPS[-1])}
    return ParityConfig(**{**base, **kw})


def planted_curves(config: ParityConfig, *, mode: str) -> pd.DataFrame:
    """Curves of a fake run whose laws are known.

    ``mode="N"``: members of N_PARAMS parameters; final mixture loss 3·N^-0.4; the first N/100
    subtasks learned. ``mode="S"``: one member; mixture loss 5·S^-0.3; subtask i learned from
    step 20/p_i on (convergence slope −1). ``mode="D"``: one member, a validation split whose
    minimum sits at step 1000, where the test loss is 2·D^-0.25 and 2·(D/1000)^0.5 subtasks are
    learned; at every other step (the first, the last, and the minimum of the *test* loss) a
    different law holds: test loss 0.5·D^-0.6 and D/1000 subtasks learned.
    """
    p = zipf_probs(config.n_tasks, config.alpha)
    rows = []
    members = list(enumerate(N_PARAMS)) if mode == "N" else [(0, 1000)]
    for member, n_params in members:
        for step in STEPS:
            if mode == "N":
                mix = 3.0 * n_params**-0.4
                learned = np.arange(config.n_tasks) < n_params // 100
            elif mode == "S":
                mix = 5.0 * step**-0.3
                learned = step >= 20 / p
            else:
                d = config.n_train
                if step == 1000:  # the early-stopping step
                    mix, n_learned = 2.0 * d**-0.25, 2 * round((d / 1000) ** 0.5)
                else:  # lower test loss than at step 1000: a trap for the wrong step or split
                    mix, n_learned = 0.5 * d**-0.6, d // 1000
                learned = np.arange(config.n_tasks) < n_learned
                rows.append((member, n_params, step, "val", -1, 0.1 + abs(np.log(step / 1000))))
            rows.append((member, n_params, step, "test", -1, mix))
            rows += [
                (member, n_params, step, "test", i, 0.01 if learned[i] else 0.69)
                for i in range(config.n_tasks)
            ]
    df = pd.DataFrame(rows, columns=["member", "n_params", "step", "split", "task", "loss_nats"])
    return df.assign(width=4 * (df["member"] + 1), seed=0, accuracy=1.0 - df["loss_nats"]).astype(
        {"step": "int64", "task": "int64", "member": "int64", "n_params": "int64"}
    )


def write_run(path, config: ParityConfig, curves: pd.DataFrame) -> None:
    path.mkdir(parents=True)
    manifest = {"kind": "parity.train", "status": "complete", "config": config_to_dict(config)}
    (path / "manifest.json").write_text(json.dumps(manifest))
    curves.to_parquet(path / "curves.parquet")


def write_sweep(path, configs: list[ParityConfig], experiment: str, mode: str) -> None:
    frames = []
    for config in configs:
        key = config_hash(config)
        curves = planted_curves(config, mode=mode)
        write_run(path / "runs" / key, config, curves)
        frames.append(
            curves.rename(columns={"seed": "init_seed"}).assign(
                run=key, alpha=config.alpha, n_train=config.n_train
            )
        )
    manifest = {"kind": "parity.sweep", "status": "complete", "config": {"experiment": experiment}}
    (path / "manifest.json").write_text(json.dumps(manifest))
    pd.concat(frames).to_parquet(path / "results.parquet")


def row(df: pd.DataFrame, **match) -> pd.Series:
    for k, v in match.items():
        df = df[df[k] == v]
    assert len(df) == 1, df
    return df.iloc[0]


def test_planted_parameter_scaling_is_recovered(tmp_path):
    write_run(tmp_path / "run", cfg(), planted_curves(cfg(), mode="N"))
    a = analyze(tmp_path / "run", bootstrap=200)
    fit = row(a.exponents, axis="N", fit="power")
    assert fit["exponent"] == pytest.approx(0.4, abs=1e-6) and fit["predicted"] == 0.4
    assert fit["ci_low"] == pytest.approx(0.4, abs=1e-6)
    assert row(a.exponents, axis="N", fit="offset")["exponent"] == pytest.approx(0.4, abs=1e-4)
    assert row(a.slopes, quantity="learned_vs_N")["slope"] == pytest.approx(1.0, abs=1e-9)
    heat = a.subtasks[a.subtasks["panel"] == "heat_N"]
    assert heat["scale"].nunique() == len(N_PARAMS) and heat["task"].nunique() == N_TASKS


def test_planted_step_scaling_and_convergence_are_recovered(tmp_path):
    write_run(tmp_path / "run", cfg(), planted_curves(cfg(), mode="S"))
    a = analyze(tmp_path / "run", bootstrap=0)
    fit = row(a.exponents, axis="S", fit="power")
    assert fit["exponent"] == pytest.approx(0.3, abs=1e-6)
    assert fit["predicted"] == pytest.approx(0.4 / 1.4)
    # The fit starts where the first subtask is learned: step 20 / p_1.
    first = 20 / zipf_probs(N_TASKS, 0.4)[0]
    assert fit["x_min"] == min(s for s in STEPS if s >= first)
    conv = row(a.slopes, quantity="convergence_step_vs_p")
    assert conv["slope"] == pytest.approx(-1.0, abs=0.02)
    assert conv["n_excluded"] == 0  # every subtask converges before the last step here


def two_threshold_curves(config: ParityConfig) -> pd.DataFrame:
    """One online member whose subtask i sits at 0.69 nats before step 5/p_i, at 0.08 nats
    (below 0.1 nats, above 0.1 bits = 0.0693 nats) until step 40/p_i, and at 0.01 after."""
    p = zipf_probs(config.n_tasks, config.alpha)
    rows = []
    for step in STEPS:
        rows.append((step, -1, 5.0 * step**-0.3))
        loss = np.where(step < 5 / p, 0.69, np.where(step < 40 / p, 0.08, 0.01))
        rows += [(step, i, loss[i]) for i in range(config.n_tasks)]
    df = pd.DataFrame(rows, columns=["step", "task", "loss_nats"])
    return df.assign(
        member=0, n_params=1000, split="test", width=4, seed=0, accuracy=1.0 - df["loss_nats"]
    ).astype({"step": "int64", "task": "int64", "member": "int64", "n_params": "int64"})


def first_step_at_or_after(t: np.ndarray) -> np.ndarray:
    return STEPS[np.searchsorted(STEPS, t, side="left")]


@pytest.mark.parametrize(
    ("kwargs", "crossing", "unit"),
    [({}, 40, "bits"), ({"convergence_units": "nats"}, 5, "nats")],
)
def test_convergence_uses_the_papers_bits_and_learned_count_nats(tmp_path, kwargs, crossing, unit):
    write_run(tmp_path / "run", cfg(), two_threshold_curves(cfg()))
    a = analyze(tmp_path / "run", bootstrap=0, **kwargs)
    p = zipf_probs(N_TASKS, 0.4)
    conv = a.subtasks[a.subtasks["panel"] == "convergence"].sort_values("task")
    # Default 0.1 bits: first step at or after 40/p_i (loss 0.08 nats is not below 0.0693).
    expected = first_step_at_or_after(crossing / p)
    np.testing.assert_array_equal(conv["converged_step"].to_numpy(), expected)
    # Learned count stays at the runs' 0.1 nats: every subtask at or after step 5/p_i.
    s_points = a.points[a.points["axis"] == "S"].set_index("x")["n_learned"]
    learned = (first_step_at_or_after(5 / p)[None, :] <= STEPS[:, None]).sum(axis=1)
    np.testing.assert_array_equal(s_points.reindex(STEPS).to_numpy(), learned)
    nats = 0.1 * np.log(2) if unit == "bits" else 0.1
    label = f"loss < 0.1 {unit}"
    assert a.thresholds["convergence"] == {
        "value": 0.1,
        "unit": unit,
        "nats": pytest.approx(nats),
        "label": label,
    }
    assert a.thresholds["learned"] == {
        "value": 0.1,
        "unit": "nats",
        "nats": 0.1,
        "label": "loss < 0.1 nats",
    }
    summary = json.loads(json.dumps(a.summary()))
    assert summary["thresholds"]["convergence"]["unit"] == unit
    from quanta.plots import analysis_figures

    fig = analysis_figures(a)["convergence"]
    assert fig.axes[0].get_ylabel() == f"convergence step (first loss < 0.1 {unit})"


def test_planted_data_scaling_uses_the_early_stopping_step(tmp_path):
    configs = [cfg(n_train=d) for d in (1000, 4000, 16000, 64000)]
    write_sweep(tmp_path / "sweep", configs, "data", mode="D")
    a = analyze(tmp_path / "sweep", bootstrap=100)
    assert a.experiment == "data"
    # Step 1000 (min validation loss) holds L = 2·D^-0.25 and 2·(D/1000)^0.5 learned; every
    # other step (first, last, min test loss) holds 0.5·D^-0.6 and D/1000 learned, so reading
    # any other step or split gives exponent 0.6 and slope 1 instead.
    fit = row(a.exponents, axis="D", fit="power")
    assert fit["exponent"] == pytest.approx(0.25, abs=1e-6)
    assert fit["c1"] == pytest.approx(2.0, rel=1e-6)
    assert fit["predicted"] == pytest.approx(0.4 / 1.4) and fit["group"] == "width=4"
    assert row(a.exponents, axis="D", fit="offset")["exponent"] == pytest.approx(0.25, abs=1e-4)
    learned = row(a.slopes, quantity="learned_vs_D")
    assert learned["n_points"] == 4 and learned["slope"] == pytest.approx(0.5, abs=1e-9)
    points = a.points[a.points["axis"] == "D"].sort_values("x")
    assert points["n_learned"].tolist() == [2, 4, 8, 16]
    heat = a.subtasks[a.subtasks["panel"] == "heat_D"]
    assert (heat["loss"] < 0.1).groupby(heat["scale"]).sum().tolist() == [2, 4, 8, 16]
    assert a.exponents["axis"].isin(["D"]).all()  # no online run: no S, one width: no N


def test_alpha_sweep_gives_one_fit_per_alpha_and_the_figure(tmp_path):
    write_sweep(tmp_path / "sweep", [cfg(alpha=a) for a in (0.2, 0.6)], "alpha", mode="N")
    a = analyze(tmp_path / "sweep", bootstrap=0)
    fits = a.exponents[(a.exponents["axis"] == "N") & (a.exponents["fit"] == "power")]
    assert fits["group"].tolist() == ["alpha=0.2", "alpha=0.6"]
    assert fits["predicted"].tolist() == [0.2, 0.6]
    written = write_analysis(a)
    names = {p.name for p in written}
    assert {"alpha_sweep.png", "scaling.png", "analysis.json", "exponents.parquet"} <= names
    assert all(p.parent == tmp_path / "sweep" / "analysis" for p in written)


def test_analyze_cli_on_a_real_sweep(tmp_path):
    spec = SweepSpec(
        {
            "n_tasks": 5,
            "n_bits": 8,
            "widths": (4, 8, 16),
            "steps": 300,
            "batch_size": 64,
            "test_per_task": 16,
            "eval_points": 12,
            "threads": 1,
        },
        {"seed": [0, 1]},
        "params",
    )
    run_sweep(spec, tmp_path / "s")
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "s").rglob("*") if p.is_file()}
    res = CliRunner().invoke(
        app,
        [
            "parity",
            "analyze",
            str(tmp_path / "s"),
            "--bootstrap",
            "50",
            "--threshold",
            "0.1",
            "--units",
            "bits",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "loss exponents (params" in res.stdout and "learned_vs_N" in res.stdout
    summary = json.loads((tmp_path / "s" / "analysis" / "analysis.json").read_text())
    assert summary["threshold_nats"] == pytest.approx(0.1 * np.log(2))
    conv = summary["thresholds"]["convergence"]
    assert conv["value"] == 0.1 and conv["unit"] == "bits"
    assert "learned = loss < 0.1 bits, converged = loss < 0.1 bits" in res.stdout
    assert summary["settings"]["n_runs"] == 2 and summary["settings"]["varied"] == []
    assert (tmp_path / "s" / "analysis" / "scaling.png").stat().st_size > 10_000
    after = {p: p.stat().st_mtime_ns for p in before}
    assert after == before  # the sweep's own files are untouched


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("missing", "is not a quanta result directory"),
        ("running", "is not complete (status 'running')"),
        ("other", "holds a 'lm.losses' result"),
    ],
)
def test_analyze_bad_sources(tmp_path, setup, message):
    src = tmp_path / "src"
    if setup != "missing":
        src.mkdir()
        kind = "parity.train" if setup == "running" else "lm.losses"
        (src / "manifest.json").write_text(json.dumps({"kind": kind, "status": "running"}))
    res = CliRunner().invoke(app, ["parity", "analyze", str(src)])
    assert res.exit_code == 2 and message in res.output
    assert len(res.output.strip().splitlines()) == 1
    assert not (src / "analysis").exists()


def test_analyze_bad_options(tmp_path):
    write_run(tmp_path / "run", cfg(), planted_curves(cfg(), mode="N"))
    res = CliRunner().invoke(app, ["parity", "analyze", str(tmp_path / "run"), "--units", "bytes"])
    assert res.exit_code == 2 and "'units'" in res.output and "nats" in res.output
    res = CliRunner().invoke(app, ["parity", "analyze", str(tmp_path / "run"), "--threshold", "-1"])
    assert res.exit_code == 2 and "threshold" in res.output
    res = CliRunner().invoke(
        app, ["parity", "analyze", str(tmp_path / "run"), "--convergence-units", "bytes"]
    )
    assert res.exit_code == 2 and "'convergence_units'" in res.output and "bits" in res.output
    bad = ["parity", "analyze", str(tmp_path / "run"), "--convergence-threshold", "0"]
    res = CliRunner().invoke(app, bad)
    assert res.exit_code == 2 and "'convergence_threshold'" in res.output
    assert not (tmp_path / "run" / "analysis").exists()
