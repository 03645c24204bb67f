import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
import torch

from quanta._tensorfile import load_tree
from quanta._validation import QuantaInputError
from quanta.parity import ParityConfig, SparseParityTask, summarize, train_parity
from quanta.parity.model import FusedParityMLP
from quanta.parity.run import CHECKPOINT, CURVES, MODEL, load_checkpoint, run_parity
from quanta.parity.train import CURVE_COLUMNS, eval_schedule


def test_curves_are_tidy_and_complete(tiny_cfg):
    curves = train_parity(tiny_cfg).curves
    assert list(curves.columns) == CURVE_COLUMNS
    steps = eval_schedule(tiny_cfg.steps, tiny_cfg.eval_points)
    test = curves[curves["split"] == "test"]
    # every member × evaluated step × (mixture + each subtask), exactly once
    assert len(test) == 2 * len(steps) * (tiny_cfg.n_tasks + 1)
    assert not test.duplicated(["member", "step", "task"]).any()
    assert set(test["task"]) == set(range(-1, tiny_cfg.n_tasks))
    assert curves.groupby("member")["n_params"].first().tolist() == [
        (16 + 1) * w + 2 * w + 2 for w in (4, 16)
    ]
    # the mixture row is the frequency-weighted mean of the subtask rows
    probs = tiny_cfg.make_task().probs.numpy()
    one = test[(test["member"] == 1) & (test["step"] == tiny_cfg.steps)].set_index("task")
    assert one.loc[-1, "loss_nats"] == pytest.approx(
        float(probs @ one.loc[range(tiny_cfg.n_tasks), "loss_nats"].to_numpy())
    )
    train = curves[curves["split"] == "train"]
    assert set(train["step"]) == set(steps[1:]) and (train["task"] == -1).all()


def test_same_seed_identical_parquet(tiny_cfg, tmp_path):
    a = run_parity(tiny_cfg, tmp_path / "a")
    b = run_parity(tiny_cfg, tmp_path / "b")
    pd.testing.assert_frame_equal(
        pd.read_parquet(a.path / CURVES), pd.read_parquet(b.path / CURVES), check_exact=True
    )
    c = train_parity(dataclasses.replace(tiny_cfg, seed=1)).curves
    assert not np.allclose(a.curves["loss_nats"], c["loss_nats"])


def test_interrupted_run_resumes_to_identical_result(tiny_cfg, tmp_path):
    cfg = dataclasses.replace(tiny_cfg, checkpoint_seconds=0.0)
    calls = {"n": 0}

    def stop_at_17() -> bool:
        calls["n"] += 1
        return calls["n"] > 17

    with pytest.raises(KeyboardInterrupt, match="stopped at step 17"):
        run_parity(cfg, tmp_path / "run", stop=stop_at_17)
    assert (tmp_path / "run" / CHECKPOINT).exists()
    assert not (tmp_path / "run" / CURVES).exists()
    resumed = run_parity(cfg, tmp_path / "run")
    assert resumed.status == "resumed" and resumed.resumed_from == 17
    assert not (tmp_path / "run" / CHECKPOINT).exists()
    fresh = train_parity(cfg).curves
    # Bit-exact, as the docs claim (resume restores weights, optimizer state and the RNG).
    pd.testing.assert_frame_equal(resumed.curves, fresh, check_exact=True)
    again = run_parity(cfg, tmp_path / "run")
    assert again.status == "complete"
    pd.testing.assert_frame_equal(again.curves, fresh, check_exact=True)


def test_fixed_dataset_mode_with_validation(tmp_path):
    cfg = ParityConfig(
        n_tasks=4,
        n_bits=8,
        k=2,
        widths=(8, 32),
        steps=300,
        batch_size=50,
        n_train=120,
        test_per_task=20,
        eval_points=10,
        lr=1e-2,
        threads=1,
    )
    assert cfg.val_per_task == cfg.test_per_task  # early stopping gets its own held-out set
    res = train_parity(cfg)
    val = res.curves[res.curves["split"] == "val"]
    assert len(val) == 2 * len(eval_schedule(300, 10)) and (val["task"] == -1).all()
    summary = summarize(res.curves)
    assert {"early_stop_step", "early_stop_test_loss_nats"} <= set(summary.columns)
    # With D = 120 the training loss falls well below the test loss: the nets memorize.
    last = res.curves[res.curves["step"] == 300]
    by_split = last[last["task"] == -1].pivot(index="member", columns="split", values="loss_nats")
    assert (by_split["train"] < by_split["test"]).all()


def _row_keys(bits, task, y) -> list[bytes]:
    """One hashable key per sample: its subtask, task bits and label."""
    rows = torch.cat([task[:, None], bits.to(torch.int64), y[:, None]], dim=1)
    return [r.tobytes() for r in rows.numpy()]


def _fixed_d_cfg(**kw) -> ParityConfig:
    # 40 task bits: a freshly drawn sample coincides with one of the D by chance with
    # probability ~D / 2^40, so a batch that is not from the D set shows.
    base = {
        "n_tasks": 4,
        "n_bits": 40,
        "k": 2,
        "widths": (4,),
        "steps": 12,
        "batch_size": 50,
        "n_train": 120,
        "test_per_task": 4,
        "eval_points": 2,
        "threads": 1,
    }
    return ParityConfig(**{**base, **kw})


@pytest.mark.parametrize(
    ("n_train", "batch_size", "steps", "sizes"),
    [
        # Batches never straddle epochs: an epoch of 120 at batch 50 is 50, 50, then 20.
        (120, 50, 12, [50, 50, 20]),
        (100, 25, 12, [25, 25, 25, 25]),
        (30, 50, 4, [30]),  # batch larger than D: every step is one whole epoch
    ],
)
def test_fixed_dataset_epochs_visit_each_sample_once_reshuffled(
    monkeypatch, n_train, batch_size, steps, sizes
):
    drawn, batches = [], []
    real_dataset, real_step = SparseParityTask.dataset, FusedParityMLP.loss_and_grad

    def dataset(self, n_samples, **kw):
        drawn.append(real_dataset(self, n_samples, **kw))
        return drawn[-1]

    def loss_and_grad(self, bits, task, y, **kw):
        batches.append(_row_keys(bits, task, y))
        return real_step(self, bits, task, y, **kw)

    monkeypatch.setattr(SparseParityTask, "dataset", dataset)
    monkeypatch.setattr(FusedParityMLP, "loss_and_grad", loss_and_grad)
    train_parity(_fixed_d_cfg(n_train=n_train, batch_size=batch_size, steps=steps))
    assert len(drawn) == 1  # the D samples are drawn once, not per epoch
    index = {key: i for i, key in enumerate(_row_keys(*drawn[0]))}
    assert len(index) == n_train  # D distinct samples (40 bits: no accidental repeats)
    assert len(batches) == steps and [len(b) for b in batches] == sizes * (steps // len(sizes))
    orders = []
    for e in range(steps // len(sizes)):
        epoch = [key for b in batches[e * len(sizes) : (e + 1) * len(sizes)] for key in b]
        assert all(key in index for key in epoch)  # only rows of the D-sample set
        orders.append([index[key] for key in epoch])
        assert sorted(orders[-1]) == list(range(n_train))  # each sample exactly once
    assert len({tuple(o) for o in orders}) == len(orders)  # reshuffled every epoch


def test_interrupted_fixed_dataset_run_resumes_to_identical_result(tmp_path):
    # Stopped at step 17 = 5 epochs of 3 batches + 2: mid-epoch, so the resumed run must carry
    # on with the same permutation from the same position, then reshuffle identically.
    cfg = _fixed_d_cfg(widths=(4, 16), steps=30, eval_points=8, checkpoint_seconds=0.0)
    calls = {"n": 0}

    def stop_at_17() -> bool:
        calls["n"] += 1
        return calls["n"] > 17

    with pytest.raises(KeyboardInterrupt, match="stopped at step 17"):
        run_parity(cfg, tmp_path / "run", stop=stop_at_17)
    state = load_checkpoint(tmp_path / "run" / CHECKPOINT)
    assert state.step == 17 and state.cursor == 100 and state.order is not None
    resumed = run_parity(cfg, tmp_path / "run")
    assert resumed.status == "resumed" and resumed.resumed_from == 17
    fresh = train_parity(cfg)
    pd.testing.assert_frame_equal(resumed.curves, fresh.curves, check_exact=True)
    assert set(fresh.curves["split"]) == {"test", "val", "train"}
    weights = load_tree(tmp_path / "run" / MODEL)["state_dict"]
    expected = fresh.model.state_dict()
    assert weights.keys() == expected.keys()
    assert all(torch.equal(weights[k], expected[k]) for k in expected)


def test_eval_schedule_dense_early_sparse_late():
    s = eval_schedule(10_000, 30, every=2500)
    assert s[0] == 0 and s[-1] == 10_000 and {2500, 5000, 7500} <= set(s.tolist())
    gaps = np.diff(s)
    assert gaps[:5].max() <= 2 and gaps[-1] >= 500


def test_directory_with_other_config_is_refused_untouched(tiny_cfg, tmp_path):
    run_parity(tiny_cfg, tmp_path / "run")
    before = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir() if p.is_file()}
    other = dataclasses.replace(tiny_cfg, lr=0.01)
    with pytest.raises(
        QuantaInputError,
        match=r"holds a run with a different config "
        r"\(lr: 0\.001 there vs 0\.01 now\)",
    ):
        run_parity(other, tmp_path / "run")
    after = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir() if p.is_file()}
    assert before == after
    # runtime knobs are not part of the identity of a run
    assert run_parity(dataclasses.replace(tiny_cfg, threads=2), tmp_path / "run").status == (
        "complete"
    )


def test_non_empty_foreign_directory_is_refused(tiny_cfg, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(QuantaInputError, match="not empty and holds no quanta run"):
        run_parity(tiny_cfg, tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_manifest_records_provenance(tiny_cfg, tmp_path):
    run_parity(tiny_cfg, tmp_path / "run")
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["kind"] == "parity.train"
    assert manifest["config"]["widths"] == [4, 16] and manifest["seed"] == 0
    assert manifest["environment"]["packages"]["torch"].startswith("2.13.0")
    assert manifest["wall_seconds"] > 0 and len(manifest["config_hash"]) == 16


def test_small_net_learns_frequent_subtasks_first():
    # A slice of the cpu preset: the most frequent subtasks are learned first.
    cfg = ParityConfig(
        n_tasks=6,
        n_bits=10,
        k=2,
        alpha=1.0,
        widths=(64,),
        steps=400,
        batch_size=256,
        test_per_task=100,
        eval_points=10,
        threads=1,
        lr=3e-3,
    )
    curves = train_parity(cfg).curves
    last = curves[(curves["split"] == "test") & (curves["step"] == 400) & (curves["task"] >= 0)]
    losses = last.sort_values("task")["loss_nats"].to_numpy()
    assert losses[0] < 0.1  # the most frequent subtask is learned
    assert losses[0] < losses[-1]
