"""Issue 12's toy experiments: α replicates with their own task, the α × D grid, appendix D.1
(QDG on a parity net) and D.2 (the envelope method's bias)."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from quanta._validation import QuantaInputError
from quanta.cli import app
from quanta.parity.analyze import analyze
from quanta.parity.run import run_parity
from quanta.parity.train import MIXTURE
from quanta.sweep import SWEEP_PRESETS, SweepSpec, run_sweep

BASE = {
    "n_tasks": 5,
    "n_bits": 8,
    "widths": (4, 8),
    "steps": 40,
    "batch_size": 32,
    "test_per_task": 8,
    "eval_points": 4,
    "threads": 1,
}


# --------------------------------------------------------------------------- α replicates


def test_alpha_replicates_draw_their_own_task_data_and_init(tmp_path):
    spec = SweepSpec(BASE, {"alpha": [0.4], "seed": [0, 1]}, "alpha", init_per_seed=True)
    first, second = spec.configs()
    # the subsets, straight from the task each config builds
    assert not torch.equal(first.make_task().subsets, second.make_task().subsets)
    assert first.init_seeds == (0,) and second.init_seeds == (1,)
    results = run_sweep(spec, tmp_path / "a")
    runs = pd.read_parquet(tmp_path / "a" / "runs.parquet")
    assert sorted(runs["seed"]) == [0, 1]  # recorded per run
    assert results.groupby("seed")["init_seed"].unique().map(list).to_dict() == {0: [0], 1: [1]}
    # different init and data: the step-0 test losses differ between the replicates
    start = results[(results["step"] == 0) & (results["split"] == "test")]
    by_seed = start.sort_values(["member", "task"]).groupby("seed")["loss_nats"].apply(list)
    assert by_seed[0] != by_seed[1]
    again = run_sweep(spec, tmp_path / "b")  # same seeds, another directory: same numbers
    key = ["run", "member", "step", "split", "task"]
    pd.testing.assert_frame_equal(
        again.sort_values(key).reset_index(drop=True),
        results.sort_values(key).reset_index(drop=True),
    )


def test_alpha_presets_replicate_tasks_and_alpha_data_is_the_papers_grid():
    paper = SWEEP_PRESETS[("alpha", "paper")].configs()
    assert len(paper) == 8 * 3
    at_04 = [c for c in paper if c.alpha == 0.4]
    assert sorted(c.seed for c in at_04) == [0, 1, 2]
    assert len({c.init_seeds for c in at_04}) == 3
    grid = SWEEP_PRESETS[("alpha-data", "paper")].configs()
    assert len(grid) == 8 * 25 and {c.widths for c in grid} == {(500,)}
    d = sorted({c.n_train for c in grid})
    assert d[0] == 10_000 and d[-1] == 5_000_000 and all(c.steps == 100_000 for c in grid)
    cpu = SWEEP_PRESETS[("alpha-data", "cpu")]
    assert cpu.experiment == "alpha-data" and len(cpu.configs()) == 12


# --------------------------------------------------------------------------- α × D


def test_alpha_data_sweep_fits_early_stopped_loss_vs_d_per_alpha(tmp_path):
    base = {**BASE, "widths": (32,), "k": 2, "lr": 1e-2, "batch_size": 128, "steps": 300}
    spec = SweepSpec(base, {"alpha": [0.3, 0.8], "n_train": [64, 256, 1024]}, "alpha-data")
    results = run_sweep(spec, tmp_path / "s")
    found = analyze(tmp_path / "s", bootstrap=0, threshold=10.0)  # every D "learned"
    d_fits = found.exponents[(found.exponents["axis"] == "D") & (found.exponents["fit"] == "power")]
    assert sorted(d_fits["alpha"]) == [0.3, 0.8]
    for r in d_fits.to_dict("records"):
        assert r["predicted"] == pytest.approx(r["alpha"] / (r["alpha"] + 1))
        # a plain loop: test mixture loss at each run's best validation step, OLS in log-log
        xs, ys = [], []
        for d in (64, 256, 1024):
            run = results[(results["alpha"] == r["alpha"]) & (results["n_train"] == d)]
            mix = run[run["task"] == MIXTURE]
            val = mix[mix["split"] == "val"].set_index("step")["loss_nats"]
            test = mix[mix["split"] == "test"].set_index("step")["loss_nats"]
            xs.append(d)
            ys.append(test[val.idxmin()])
        slope = np.polyfit(np.log(xs), np.log(ys), 1)[0]
        assert slope < -0.05  # more data helps: the fit is not of a flat line
        assert r["exponent"] == pytest.approx(-slope, rel=1e-6)
    learned = found.slopes[found.slopes["quantity"] == "learned_vs_D"]
    assert sorted(learned["alpha"]) == [0.3, 0.8]


# --------------------------------------------------------------------------- appendix D.1


@pytest.fixture(scope="module")
def parity_run(tmp_path_factory):
    from quanta.parity import ParityConfig

    cfg = ParityConfig(
        n_tasks=6,
        n_bits=10,
        k=2,
        lr=3e-3,
        widths=(16, 48),
        batch_size=400,
        steps=600,
        test_per_task=50,
        eval_points=5,
        threads=1,
    )
    out = tmp_path_factory.mktemp("parity") / "run"
    run_parity(cfg, out)
    return out


def test_member_is_the_nearest_width_and_its_gradients_match_a_plain_loop(parity_run):
    from quanta.qdg.toyqdg import load_member, member_gradients

    net, cfg, info = load_member(parity_run, width=40)
    assert info["width"] == 48 and info["member"] == 1
    task = cfg.make_task()
    batch = task.sample_compact(5, generator=torch.Generator().manual_seed(1))
    x, y = batch.dense(task.n_tasks), batch.y
    grads, losses = member_gradients(net, x, y, chunk=2)
    for i in range(5):  # one backward per sample through the module itself
        net.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(x[i : i + 1]), y[i : i + 1].long())
        loss.backward()
        want = torch.cat([p.grad.reshape(-1) for p in net.parameters()]).numpy()
        np.testing.assert_allclose(grads[i], want, rtol=1e-5, atol=1e-7)
        assert losses[i] == pytest.approx(loss.item(), rel=1e-6)


def test_parity_qdg_writes_clusters_beside_the_true_counts(parity_run, tmp_path):
    runner = CliRunner()
    out = tmp_path / "d1"
    res = runner.invoke(
        app,
        ["qdg", "parity", str(parity_run), "--out", str(out), "--n", "300", "--ks", "3,6"],
    )
    assert res.exit_code == 0, res.output
    data = json.loads((out / "parity_qdg.json").read_text())
    st = data["settings"]
    assert st["width"] == 48 and [r["K"] for r in data["scores"]] == [3, 6]
    rf = pd.read_parquet(out / "rank_frequency.parquet")
    for kind in ("truth", "clusters"):  # every selected sample counted once per table
        sums = rf[rf["kind"] == kind].groupby("K")["size"].sum()
        assert (sums == st["n_selected"]).all()
    clusters = rf[rf["kind"] == "clusters"].pivot(index="rank", columns="K", values="size")
    env = rf[rf["kind"] == "envelope"].set_index("rank")["size"]
    pd.testing.assert_series_equal(clusters.max(axis=1), env, check_names=False, check_dtype=False)
    # too few confident samples for K: one line, exit 2, nothing written
    bad = tmp_path / "bad"
    res = runner.invoke(app, ["qdg", "parity", str(parity_run), "--out", str(bad), "--n", "5"])
    assert res.exit_code == 2 and "samples have loss <" in res.output and not bad.exists()


# --------------------------------------------------------------------------- appendix D.2


def test_envelope_bias_on_separable_clusters_is_the_truth_at_the_true_k():
    from quanta.qdg.envelope import envelope_bias, window_slope

    # σ = 0: every sample is its quantum's vector, so clustering at K = #quanta is exact
    result = envelope_bias(
        n_samples=400, n_subtasks=8, d=30, sigma=0.0, alpha=0.6, ks=(4, 8), ranks=(1, 8)
    )
    s = result.slopes.set_index(["affinity", "K_max"])
    for name in ("angular", "relu_norm"):
        row = s.loc[(name, 8)]
        assert row["single_slope"] == pytest.approx(row["truth_window_slope"], rel=1e-9)
        assert row["true_slope"] == pytest.approx(-1.6)
    rf = result.rank_frequency
    truth = rf[rf["affinity"] == "truth"]["size"].to_numpy()
    assert s.loc[("angular", 8), "truth_window_slope"] == pytest.approx(
        np.polyfit(np.log(np.arange(1, len(truth) + 1)), np.log(truth), 1)[0]
    )
    assert np.isnan(window_slope(np.array([5.0, 3.0]), (1, 10)))
    with pytest.raises(QuantaInputError, match="K = 500 exceeds the number of samples"):
        envelope_bias(n_samples=100, n_subtasks=5, d=10, ks=(500,))
