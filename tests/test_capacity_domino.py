"""Quanta of unequal capacity and the domino measure (issue 20, parts 3 and 4): per-subtask
parity sizes, the order analysis on planted orders, bad input, and the commands end to end."""

import json
import math

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from quanta.cli import app
from quanta.config import config_hash, config_to_dict
from quanta.parity import SparseParityTask
from quanta.parity.config import ParityConfig
from quanta.parity.domino import step_slopes
from quanta.parity.orders import explain_order, out_of_order, set_agreement

# --------------------------------------------------------------------------- task and config


def test_mixed_k_labels_are_the_parity_of_each_subset():
    ks = [2, 3, 4, 2, 3, 4, 1]
    task = SparseParityTask(7, 9, 3, alpha=0.4, seed=2, ks=ks)
    assert task.ks.tolist() == ks
    batch = task.sample_compact(2000, generator=torch.Generator().manual_seed(0))
    bits, tid, y = batch.bits.numpy(), batch.task.numpy(), batch.y.numpy()
    for b, t, label in zip(bits, tid, y, strict=True):  # a plain loop over the subsets' bits
        subset = [j for j in task.subsets[t].tolist() if j >= 0]
        assert len(subset) == ks[t] and label == sum(int(b[j]) for j in subset) % 2
    assert torch.equal(batch.y, task.labels(batch.bits, batch.task))
    rows = {tuple(j for j in r if j >= 0) for r in task.subsets.tolist()}
    assert len(rows) == 7


def test_new_keys_keep_old_hashes_and_enter_the_hash_when_set():
    base = ParityConfig()
    assert "k_per_task" not in config_to_dict(base) and "k_order" not in config_to_dict(base)
    assert config_hash(base) == "37550f33e86299e4"  # the hash before the keys existed
    costly = ParityConfig(k_per_task=(2, 3, 4))
    assert config_to_dict(costly)["k_per_task"] == [2, 3, 4]
    assert config_hash(costly) != config_hash(base)
    shuffled = ParityConfig(k_per_task=(2, 3, 4), k_order="shuffle")
    assert sorted(shuffled.subtask_ks()) == sorted(costly.subtask_ks())
    assert shuffled.subtask_ks().tolist() != costly.subtask_ks().tolist()
    again = ParityConfig(k_per_task=(2, 3, 4), k_order="shuffle").subtask_ks()
    assert again.tolist() == shuffled.subtask_ks().tolist()  # seeded


def test_impossible_costs_refused():
    with pytest.raises(ValueError, match=r"'k_per_task' parameter of ParityConfig must be a non-"):
        ParityConfig(n_bits=16, k_per_task=(2, 17))
    with pytest.raises(ValueError, match="leaves no subtask learnable"):
        ParityConfig(widths=(2, 3), k_per_task=(4, 5))
    with pytest.raises(ValueError, match="C\\(n_bits, k\\) = C\\(4, 4\\) = 1"):
        ParityConfig(n_tasks=4, n_bits=4, widths=(8,), k_per_task=(4,))


@pytest.mark.parametrize(
    "extra",
    [["--k-per-task", "2,30"], ["--k-per-task", "9,10", "--widths", "4,8"], ["--k", "20"]],
)
def test_cli_bad_costs_one_line_exit_2_nothing_written(tmp_path, extra):
    out = tmp_path / "run"
    args = ["parity", "train", "--out", str(out), "--n-bits", "16", "--quiet", *extra]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2, res.output
    assert len(res.output.strip().splitlines()) == 1 and "Traceback" not in res.output
    assert not out.exists()


# --------------------------------------------------------------------------- planted orders


def _planted(kind, seed=0):
    rng = np.random.default_rng(seed)
    n = 30
    p = (np.arange(1, n + 1) ** -1.4) / (np.arange(1, n + 1) ** -1.4).sum()
    cost = rng.choice([2.0, 3.0, 4.0], n)
    noise = np.exp(rng.normal(0, 0.1, n))
    steps = (20.0 / p if kind == "frequency" else 50.0 * cost**3) * noise
    return steps, p, cost


@pytest.mark.parametrize("kind", ["frequency", "cost"])
def test_order_analysis_recovers_a_planted_order(kind):
    steps, p, cost = _planted(kind)
    r = explain_order(steps, p, cost)
    assert r["verdict"] == kind
    if kind == "frequency":
        assert r["a"] == pytest.approx(-1.0, abs=0.05) and r["spearman_p"] > 0.95
        assert abs(r["spearman_cost"]) < 0.5
    else:
        assert r["b"] == pytest.approx(3.0, abs=0.2) and r["spearman_cost"] > 0.9
    # Censoring the slowest third keeps the verdict.
    slow = steps > np.quantile(steps, 0.67)
    assert explain_order(np.where(slow, np.nan, steps), p, cost)["verdict"] == kind


def test_order_analysis_says_both_when_both_matter():
    _, p, cost = _planted("frequency")
    steps = (20.0 / p) * cost**3
    assert explain_order(steps, p, cost)["verdict"] == "both"


def test_set_agreement_and_out_of_order_on_planted_sets():
    _, p, cost = _planted("frequency")
    by_ratio = np.zeros(30, dtype=bool)
    by_ratio[np.argsort(-p / cost)[:10]] = True
    agree = set_agreement(by_ratio, {"p": p, "ratio": p / cost})
    assert agree["ratio"] == 1.0 and agree["p"] < 1.0
    order = np.argsort(np.random.default_rng(1).random(30))  # an order unrelated to p
    assert 0.3 < out_of_order(order.astype(float), p) < 0.7
    assert out_of_order(1.0 / p, p) == 0.0


def test_step_slope_separates_optimization_from_domino():
    ranks = np.arange(1, 41, dtype=np.float64)
    p = ranks**-1.4 / (ranks**-1.4).sum()  # Zipf, α = 0.4
    assert step_slopes(7.0 / p, p)["slope"] == pytest.approx(-1.0)
    # Domino: each subtask waits for the previous one, then needs its own 1/p time:
    # t_i = Σ_{j<=i} 7/p_j ∝ i^(2+α) = p_i^(-(2+α)/(1+α)), a slope of -1.71 asymptotically
    # (-1.60 on 40 ranks).
    domino = step_slopes(np.cumsum(7.0 / p), p)["slope"]
    assert domino == pytest.approx(-2.4 / 1.4, abs=0.15)


# --------------------------------------------------------------------------- end to end

_TRAIN = [
    "--n-tasks", "8", "--n-bits", "8", "--k", "2", "--k-per-task", "1,2", "--k-order",
    "shuffle", "--lr", "3e-3", "--batch-size", "300", "--test-per-task", "50",
    "--widths", "8,16,32", "--steps", "400", "--eval-points", "10", "--quiet", "--no-figures",
]  # fmt: skip


@pytest.fixture(scope="module")
def capacity_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("capacity") / "run"
    res = CliRunner().invoke(app, ["parity", "train", "--out", str(run), *_TRAIN])
    assert res.exit_code == 0, res.output
    return run


def test_capacity_command_writes_its_run_dir(capacity_run):
    res = CliRunner().invoke(app, ["parity", "capacity", str(capacity_run)])
    assert res.exit_code == 0, res.output
    out = capacity_run / "capacity"
    result = json.loads((out / "capacity.json").read_text())
    assert json.loads((out / "manifest.json").read_text())["kind"] == "parity.capacity"
    assert [r["width"] for r in result["per_width"]] == [8, 16, 32]
    costs = sorted({t["cost"] for t in result["subtasks"]})
    assert costs == [1.0, 2.0]
    for name in ("unequal", "equal"):
        assert len(result["prediction"][name]["predicted_mass"]) == 3
    mass = [r["unlearned_mass"] for r in result["per_width"]]
    assert all(0.0 <= m <= 1.0 for m in mass) and math.isclose(
        result["prediction"]["observed_mass"][0], mass[0]
    )
    assert (out / "capacity.png").stat().st_size > 0
    again = CliRunner().invoke(app, ["parity", "capacity", str(capacity_run)])
    assert again.exit_code == 0 and json.loads((out / "capacity.json").read_text()) == result


def test_domino_command_on_a_run(capacity_run, tmp_path):
    out = tmp_path / "domino"
    res = CliRunner().invoke(app, ["parity", "domino", str(capacity_run), "--out", str(out)])
    assert res.exit_code == 0, res.output
    result = json.loads((out / "domino.json").read_text())
    assert [r["width"] for r in result["per_width"]] == [8, 16, 32]
    assert result["alpha"] == []  # one run: no α-sweep to set it against
    row = result["per_width"][-1]
    assert row["learned_at_0.1"] <= row["learned_at_0.3"] <= row["learned_at_1"]


def test_analyses_refuse_bad_sources_and_write_nothing(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    for args in (["parity", "capacity", str(empty)], ["parity", "domino", str(empty)]):
        res = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "o")])
        assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1, res.output
        assert not (tmp_path / "o").exists()


# --------------------------------------------------------------------------- readings


def _domino_data(slope, width_slope):
    row = {"source": "s", "alpha": 0.4, "t_vs_p_slope": slope, "out_of_order": 0.0}
    row |= {"width_slope": width_slope, "width_slope_negative": 1.0}
    return {"summary": [row], "alpha": [{"alpha": 0.4, "alpha_N": 0.38, "deviation": -0.02}]}


@pytest.mark.parametrize(
    ("slope", "width_slope", "says"),
    [
        (-1.7, 0.0, "a domino"),
        (-1.0, 0.0, "no domino"),
        (-0.5, 0.0, "no sign that they wait"),
        (-1.0, -0.5, "size acts beyond capacity"),
        (-1.0, 0.02, "width barely moves"),
    ],
)
def test_domino_reading_follows_the_numbers(slope, width_slope, says):
    from quanta.report.domino import domino_reading

    text = domino_reading(_domino_data(slope, width_slope))
    assert says in text and "α_N = 0.38 (-0.02)" in text


def test_capacity_reading_follows_the_numbers():
    from quanta.report.capacity import capacity_reading

    steps, p, cost = _planted("cost")
    order = {"width": 64, **explain_order(steps, p, cost)}
    pred = {
        "unequal": {"rmse": 0.02, "missed": [0, 3]},
        "equal": {"rmse": 0.08, "missed": [0, 0]},
    }
    text = capacity_reading({"order": order, "prediction": pred})
    assert "follows cost" in text and "unequal costs fits the unlearned mass better" in text
    assert "misses 3 subtasks" in text
    pred["equal"]["rmse"] = 0.021
    assert "about equally" in capacity_reading({"order": order, "prediction": pred})


def test_costs_and_polygenic_samples_are_not_mixed():
    """A polygenic pair table is built for one parity size k: mixing it with per-subtask k_i is
    refused in one line (PolygenicMix would otherwise index the -1 padding of mixed k)."""
    from quanta._validation import QuantaInputError

    with pytest.raises(QuantaInputError, match="cannot mix 'k_per_task' with 'polygenic'"):
        ParityConfig(n_tasks=8, n_bits=10, k=2, k_per_task=(2, 3), polygenic=0.3, widths=(8,))
    ParityConfig(n_tasks=8, n_bits=10, k=2, k_per_task=(2, 3), widths=(8,))  # each alone is fine
    ParityConfig(n_tasks=8, n_bits=10, k=2, polygenic=0.3, widths=(8,))
