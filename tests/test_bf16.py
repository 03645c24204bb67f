"""The toy engine in bf16 (``precision = "bf16"``): gradients against autograd, the training
outcome against f32, the config hash, and the refusal on a device without bf16."""

import dataclasses
import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from quanta import _validation
from quanta.cli import app
from quanta.config import config_hash
from quanta.parity import ParityConfig, SparseParityTask, summarize, train_parity
from quanta.parity.model import FusedParityMLP, member_losses
from quanta.parity.run import run_parity
from quanta.scaling import fit_power_law

needs_bf16 = pytest.mark.skipif(
    not _validation.bf16_supported("cpu"), reason="this CPU has no native bf16 matmuls"
)

# 23 members: three layer-2 blocks (10, 10, 3), so block boundaries are exercised.
WIDTHS = [3 + (i * 7) % 19 for i in range(23)]


def _net_and_batch() -> tuple[FusedParityMLP, object]:
    net = FusedParityMLP(9, 13, WIDTHS, init_seeds=list(range(23)))
    task = SparseParityTask(9, 13, 3, alpha=0.4)
    return net, task.sample_compact(300, generator=torch.Generator().manual_seed(2))


def _grads(net: FusedParityMLP, fn) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    net.zero_grad(set_to_none=True)
    loss = fn()
    return loss, {n: p.grad.clone() for n, p in net.named_parameters()}


def _autograd(net, b, bf16: bool):
    """Autograd through forward_compact, under bf16 autocast or in f32 (the references)."""

    def run():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = net.forward_compact(b.bits, b.task)
        loss = member_losses(logits.float(), b.y).mean(0)
        loss.sum().backward()
        return loss.detach()

    return run


def _rel(a: torch.Tensor, ref: torch.Tensor) -> float:
    return float((a - ref).norm() / ref.norm())


def _within_bf16_rounding(grads, ref, autocast) -> dict[str, float]:
    """Parameters whose gradient is further from the f32 reference than 1.5x what bf16
    autocast's own rounding moves it (and 3e-2): the tolerance of these tests."""
    return {
        n: _rel(g, ref[n])
        for n, g in grads.items()
        if _rel(g, ref[n]) > min(1.5 * _rel(autocast[n], ref[n]), 3e-2)
    }


@needs_bf16
@pytest.mark.parametrize("chunk_rows", [7, 10_000])
def test_bf16_backward_matches_autograd_within_bf16_rounding(chunk_rows):
    net, b = _net_and_batch()
    ref_loss, ref = _grads(net, _autograd(net, b, bf16=False))
    _, autocast = _grads(net, _autograd(net, b, bf16=True))
    loss, grads = _grads(
        net,
        lambda: net.loss_and_grad(
            b.bits, b.task, b.y, chunk_rows=chunk_rows, compute_dtype=torch.bfloat16
        )[0],
    )
    torch.testing.assert_close(loss, ref_loss, rtol=2e-3, atol=1e-4)
    assert _within_bf16_rounding(grads, ref, autocast) == {}
    # ... and it did run in bf16: f32 would agree with the reference to ~1e-7.
    assert min(_rel(g, ref[n]) for n, g in grads.items()) > 1e-4
    assert all(p.grad.dtype == torch.float32 for p in net.parameters())


@needs_bf16
def test_bf16_tolerance_rejects_a_wrong_f32_backward():
    # A plausible bug of a blocked backward, computed in exact f32: the last row block of the
    # batch dropped from the gradient. The tolerance above must not let it through.
    net, b = _net_and_batch()
    _, ref = _grads(net, _autograd(net, b, bf16=False))
    _, autocast = _grads(net, _autograd(net, b, bf16=True))
    cut = 285  # 15 of 300 rows lost; the mean is still over 300
    _, wrong = _grads(
        net, lambda: net.loss_and_grad(b.bits[:cut], b.task[:cut], b.y[:cut], chunk_rows=64)[0]
    )
    wrong = {n: g * cut / 300 for n, g in wrong.items()}
    assert set(_within_bf16_rounding(wrong, ref, autocast)) >= {"w_ctrl", "w_bits", "b1"}


@needs_bf16
def test_bf16_eval_logits_are_float32_and_close():
    net, b = _net_and_batch()
    ref = torch.cat([lg for _, lg in net.iter_logits(b.bits, b.task, chunk_rows=64)])
    got = torch.cat(
        [
            lg
            for _, lg in net.iter_logits(
                b.bits, b.task, chunk_rows=64, compute_dtype=torch.bfloat16
            )
        ]
    )
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, ref, rtol=2e-2, atol=2e-2)


# A slice of the cpu preset that learns a few subtasks in seconds.
SMALL = ParityConfig(
    n_tasks=12,
    n_bits=12,
    k=2,
    alpha=0.5,
    widths=(4, 8, 16, 32, 64),
    init_seeds=(0, 1, 2),
    steps=600,
    batch_size=256,
    test_per_task=100,
    eval_points=10,
    threads=1,
    lr=3e-3,
)


def _outcome(cfg: ParityConfig):
    curves = train_parity(cfg).curves
    members = summarize(curves, cfg.learned_threshold)
    by_width = members.groupby("width").agg(
        learned=("n_learned", "mean"), loss=("final_loss_nats", "mean"), n=("n_params", "first")
    )
    alpha_n = fit_power_law(by_width["n"], by_width["loss"], bootstrap=200, seed=0)
    big = curves[
        (curves["width"] == max(cfg.widths))
        & (curves["split"] == "test")
        & (curves["task"] == -1)
        & (curves["step"] > 0)
    ]
    by_step = big.groupby("step")["loss_nats"].mean()
    alpha_s = fit_power_law(by_step.index, by_step.to_numpy(), bootstrap=200, seed=0)
    return members, by_width, alpha_n, alpha_s


@needs_bf16
def test_bf16_training_outcome_matches_f32_over_three_seeds():
    f32_members, f32, f32_n, f32_s = _outcome(SMALL)
    _, bf16, bf16_n, bf16_s = _outcome(dataclasses.replace(SMALL, precision="bf16"))
    # Learned subtasks per width: the bf16 mean over 3 seeds inside f32's 95% t-interval,
    # which is never narrower than one subtask at one seed (1/3; the counts are integers).
    spread = f32_members.groupby("width")["n_learned"].std(ddof=1).fillna(0)
    half = np.maximum(4.303 * spread / np.sqrt(3), 1 / 3 + 1e-9)
    assert ((bf16["learned"] - f32["learned"]).abs() <= half).all(), (bf16, f32)
    assert f32["learned"].iloc[-1] >= 2  # something is learned, so the check can fail
    for fit_f32, fit_bf16 in ((f32_n, bf16_n), (f32_s, bf16_s)):
        assert fit_f32.success and fit_bf16.success
        assert fit_f32.alpha_ci[0] <= fit_bf16.alpha <= fit_f32.alpha_ci[1]
    # The final losses of the same members: a bf16 step changes them little.
    np.testing.assert_allclose(bf16["loss"], f32["loss"], rtol=0.05)


def test_f32_keeps_the_hashes_of_runs_made_before_precision_existed():
    # The hashes main gave these configs before the key was added.
    assert config_hash(ParityConfig()) == "37550f33e86299e4"
    bf16 = ParityConfig(precision="bf16")
    assert config_hash(bf16) != config_hash(ParityConfig())


@needs_bf16
def test_precision_is_written_only_when_bf16(tmp_path):
    cfg = dataclasses.replace(SMALL, widths=(4,), init_seeds=(0,), steps=3)
    for precision in ("f32", "bf16"):
        out = tmp_path / precision
        run_parity(dataclasses.replace(cfg, precision=precision), out)
        config = json.loads((out / "manifest.json").read_text())["config"]
        assert config.get("precision") == (None if precision == "f32" else "bf16")


def test_bad_precision_is_one_line():
    with pytest.raises(ValueError, match=r"'precision' parameter of ParityConfig must be one of"):
        ParityConfig(precision="fp16")


def test_bf16_refused_on_a_device_without_it(tmp_path, monkeypatch):
    monkeypatch.setattr(_validation, "bf16_supported", lambda device: False)
    out = tmp_path / "r"
    res = CliRunner().invoke(
        app,
        ["parity", "train", "--out", str(out), "--quiet", "--precision", "bf16", "--steps", "2"],
    )
    assert res.exit_code == 2
    err = " ".join(res.stderr.split())
    assert (
        "quanta parity train asks for precision 'bf16', but device 'cpu' has no native "
        "bfloat16 matmuls" in err
    )
    assert "Traceback" not in res.output + res.stderr
    assert not out.exists()


def test_bf16_sweep_refused_before_writing(tmp_path, monkeypatch):
    from quanta._validation import QuantaInputError
    from quanta.sweep import SweepSpec, run_sweep

    monkeypatch.setattr(_validation, "bf16_supported", lambda device: False)
    spec = SweepSpec({"widths": (4,), "steps": 2, "precision": "bf16"}, {"seed": [0, 1]})
    with pytest.raises(QuantaInputError, match=r"^quanta parity sweep asks for precision 'bf16'"):
        run_sweep(spec, tmp_path / "s")
    assert not (tmp_path / "s").exists()
