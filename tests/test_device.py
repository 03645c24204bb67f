"""Device correctness without a GPU, and ``--device`` refusals through the CLI.

The bug class behind issue 12's CUDA crash is a tensor created on the default device (the CPU)
while the run's tensors live elsewhere. On a CPU-only machine every real tensor is on the CPU,
so nothing mixes and the bug is invisible. :func:`default_device_trap` makes it visible: every
factory call (``torch.zeros``, ``arange``, ``randint``, …) made *from quanta code* without a
``device=`` creates its tensor on the ``meta`` device instead, so an op that mixes it with the
run's (CPU) tensors raises, as it would on CUDA, and the call site is recorded. Meta kernels
are lenient with some mixes (``meta.add_(cpu)`` passes), so each test also asserts that no
site was recorded and that the numbers equal a run without the trap.
Factory calls inside torch or transformers are left alone (their device handling is theirs, and
AdamW, for one, keeps its step counter on the CPU on purpose). docs/ARCHITECTURE.md says what
this can and cannot catch.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import os
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
import torch.utils._device
from torch.overrides import TorchFunctionMode
from typer.testing import CliRunner

from quanta._validation import QuantaInputError, available_devices, check_device
from quanta.cli import app
from quanta.parity import ParityConfig, SparseParityTask, train_parity
from quanta.pipeline import DEVICE_COMMANDS

# Every torch function that takes a device and otherwise uses the default one (the same list
# that ``with torch.device(...)`` redirects).
_FACTORIES = torch.utils._device._device_constructors()


class _DefaultDeviceTrap(TorchFunctionMode):
    """Factory calls from quanta code without ``device=`` go to ``meta``; sites are recorded."""

    def __init__(self) -> None:
        super().__init__()
        self.sites: list[str] = []

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if func in _FACTORIES and kwargs.get("device") is None:
            caller = sys._getframe(1)  # the Python frame that called the factory
            if str(caller.f_globals.get("__name__", "")).split(".")[0] == "quanta":
                where = f"{caller.f_code.co_filename}:{caller.f_lineno} torch.{func.__name__}"
                self.sites.append(where)
                kwargs = {**kwargs, "device": "meta"}
        return func(*args, **kwargs)


@contextlib.contextmanager
def default_device_trap() -> Iterator[_DefaultDeviceTrap]:
    """Run the block with the trap on; a failure inside names the sites that caused it."""
    trap = _DefaultDeviceTrap()
    try:
        with trap:
            yield trap
    except Exception as exc:
        if trap.sites:
            exc.add_note("created without device=: " + "; ".join(dict.fromkeys(trap.sites)))
        raise


def test_the_trap_catches_a_tensor_made_without_a_device_and_names_its_site():
    """The oracle itself: a quanta-style function that allocates on the default device and
    adds run tensors into it fails under the trap, naming the line."""
    values, task = torch.ones(6), torch.tensor([0, 1, 1, 2, 2, 2])

    def per_task_sum(x, t):  # issue 12's eval.py before the fix, as quanta code
        out = torch.zeros(3, dtype=x.dtype)
        return out.index_add_(0, t, x)

    globals_ = per_task_sum.__globals__
    name, globals_["__name__"] = globals_["__name__"], "quanta.fake"
    try:
        with pytest.raises(RuntimeError, match="same device") as err, default_device_trap() as trap:
            per_task_sum(values, task)
    finally:
        globals_["__name__"] = name
    assert len(trap.sites) == 1 and trap.sites[0].endswith("torch.zeros")
    assert "created without device=" in "".join(err.value.__notes__)


# ------------------------------------------------------------------------- the toy world


@pytest.mark.parametrize("fixed_d", [False, True], ids=["online", "fixed-D"])
def test_training_sampling_and_evaluation_create_every_tensor_on_a_named_device(tiny_cfg, fixed_d):
    """Train step, sampler (online stream and fixed-D epochs), per-task evaluation and the
    resume path, under the trap: the same curves, bit for bit, and no unplaced tensor."""
    cfg = tiny_cfg
    if fixed_d:
        cfg = dataclasses.replace(cfg, n_train=200, val_per_task=8, batch_size=48)
    want = train_parity(cfg).curves
    states = []
    stops = iter([False] * 17 + [True])
    with pytest.raises(KeyboardInterrupt):
        train_parity(cfg, on_checkpoint=states.append, stop=lambda: next(stops))
    with default_device_trap() as trap:
        got = train_parity(cfg).curves
        resumed = train_parity(cfg, state=states[-1]).curves
    assert trap.sites == []
    pd.testing.assert_frame_equal(got, want, check_exact=True)
    pd.testing.assert_frame_equal(resumed, want, check_exact=True)


def test_sampler_and_dense_inputs_under_the_trap():
    task = SparseParityTask(7, 70, 3, alpha=0.5)  # 70 bits: two 64-bit words per row

    def draw() -> list[torch.Tensor]:
        g = torch.Generator().manual_seed(5)
        b = task.sample_compact(50, generator=g)
        per_task = task.per_task_set(4, generator=g)
        x, y, t = task.sample(9, generator=g)
        return [*b, *per_task, per_task.dense(task.n_tasks), x, y, t]

    want = draw()
    with default_device_trap() as trap:
        got = draw()
    assert trap.sites == []
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


# ------------------------------------------------------------------------- language models


def _tiny_lm() -> Any:
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    config = GPTNeoXConfig(
        vocab_size=97,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        tie_word_embeddings=False,
    )
    return GPTNeoXForCausalLM(config).eval()


def _corpus() -> Any:
    from quanta.lm.corpus import TokenizedCorpus

    rng = np.random.default_rng(0)
    lengths = [40, 9, 23, 2, 31]  # unequal: batches are padded
    tokens = rng.integers(0, 97, sum(lengths)).astype(np.int32)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    return TokenizedCorpus(tokens, offsets, [f"d{i}" for i in range(5)], 64, False)


def test_lm_token_losses_create_every_tensor_on_the_models_device():
    from quanta.lm.losses import paper_token_losses, resolve_head, token_losses

    model, corpus = _tiny_lm(), _corpus()

    def run() -> list[Any]:
        return [
            resolve_head(model, corpus),
            token_losses(model, corpus, batch_tokens=70, chunk_rows=7, head="chunked"),
            token_losses(model, corpus, batch_tokens=70, head="full"),
            np.asarray(paper_token_losses(model, corpus), dtype=np.float32),
        ]

    want = run()
    with default_device_trap() as trap:
        got = run()
    assert trap.sites == []
    assert got[0] == want[0] == "chunked"
    for a, b in zip(got[1:], want[1:], strict=True):
        np.testing.assert_array_equal(a, b)


def test_minisuite_training_step_under_the_trap():
    from quanta.lm.minisuite import MiniSuiteConfig, training_step

    cfg = MiniSuiteConfig(steps=4, warmup=1)

    def one_step(model: Any) -> tuple[float, list[torch.Tensor]]:
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.9, 0.95))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, cfg.lr_factor)
        x = torch.from_numpy(_corpus().tokens[:64].astype(np.int64).reshape(4, 16))
        loss = training_step(model.train(), opt, sched, x, bf16=True)
        return loss, [p.detach() for p in model.parameters()]

    base = _tiny_lm()
    want = one_step(copy.deepcopy(base))
    with default_device_trap() as trap:
        got = one_step(copy.deepcopy(base))
    assert trap.sites == []
    assert got[0] == want[0]
    for a, b in zip(got[1], want[1], strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_fast_engine_training_step_under_the_trap():
    """lm.neox (the mini-suite's fast engine), two stacked replicas, fused head loss."""
    from quanta.lm.neox import NeoX, neox_training_step

    def one_step(model: Any) -> tuple[list[float], list[torch.Tensor]]:
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.9, 0.95))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
        x = torch.from_numpy(_corpus().tokens[:64].astype(np.int64).reshape(4, 16))
        loss = neox_training_step(model.train(), opt, sched, x, bf16=True)
        return loss, [p.detach() for p in model.parameters()]

    base = NeoX(_tiny_lm().config, replicas=2, generator=torch.Generator().manual_seed(0))
    want = one_step(copy.deepcopy(base))
    with default_device_trap() as trap:
        got = one_step(copy.deepcopy(base))
    assert trap.sites == []
    assert got[0] == want[0]
    for a, b in zip(got[1], want[1], strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


# ------------------------------------------------------------------------- --device refusals


def _gpus(monkeypatch: pytest.MonkeyPatch, n: int) -> None:
    """Pretend this torch build sees ``n`` CUDA GPUs (none: no CUDA at all) and no Metal."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: n > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: n)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


@pytest.mark.parametrize(
    ("n_gpus", "device", "ok"),
    [
        (0, "cpu", True),
        (0, "cuda", False),
        (0, "mps", False),
        (2, "cuda", True),
        (2, "cuda:1", True),
        (2, "cuda:2", False),
        (2, "mps:0", False),
        (2, "meta", False),
        (2, "cuda:x", False),
    ],
)
def test_check_device_against_what_is_visible(monkeypatch, n_gpus, device, ok):
    _gpus(monkeypatch, n_gpus)
    have = ", ".join(["cpu", *(f"cuda:{i}" for i in range(n_gpus))])
    assert available_devices() == have.split(", ")
    if ok:
        assert check_device(device, "quanta x") == device
        return
    with pytest.raises(QuantaInputError, match=f"quanta x asks for device '{device}'") as err:
        check_device(device, "quanta x")
    assert f"available{' here' if device == 'cuda:x' else ''}: {have}" in str(err.value)


def _commands() -> dict[str, list[str]]:
    tiny = ["--n-tasks", "4", "--n-bits", "8", "--k", "2", "--widths", "4", "--steps", "3"]
    return {
        "parity train": ["parity", "train", *tiny, "--quiet"],
        "parity sweep": ["parity", "sweep", *tiny, "--grid", "seed=0,1", "--quiet"],
        "lm suite train": ["lm", "suite", "train", "--preset", "tiny", "--quiet"],
        "lm losses": ["lm", "losses", "--suite", "pythia", "--max-docs", "2", "--quiet"],
        "reproduce": ["reproduce", "--preset", "tiny", "--only", "toy-params"],
    }


@pytest.mark.parametrize(
    ("n_gpus", "device", "reason"),
    [
        (0, "cuda", "but this torch build ({v}) sees no CUDA GPU (available: cpu); pass --device"),
        (2, "cuda:3", "but only 2 CUDA device(s) are visible (available: cpu, cuda:0, cuda:1)"),
    ],
)
@pytest.mark.parametrize(
    "command", ["parity train", "parity sweep", "lm suite train", "lm losses", "reproduce"]
)
def test_a_missing_device_is_one_line_exit_2_and_nothing_written(
    tmp_path, monkeypatch, command, n_gpus, device, reason
):
    _gpus(monkeypatch, n_gpus)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the refusal comes before any hub access
    out = tmp_path / "out"
    argv = [*_commands()[command], "--device", device, "--out", str(out)]
    res = CliRunner().invoke(app, argv)
    assert res.exit_code == 2, res.output
    line = " ".join(res.output.split())
    owner = {"lm suite train": "quanta lm suite train"}.get(command, f"quanta {command}")
    expected = f"error: {owner} asks for device '{device}', " + reason.format(v=torch.__version__)
    assert expected in line and "Traceback" not in res.output
    assert res.output.count("error:") == 1
    assert not out.exists()


# ------------------------------------------------------------------------- reproduce --device


def test_reproduce_passes_device_to_every_stage_that_runs_a_model(tmp_path, monkeypatch):
    import quanta.cli.job as job

    ran: list[list[str]] = []
    monkeypatch.setattr(job, "in_process_runner", lambda command: ran.append)
    out = tmp_path / "r"
    res = CliRunner().invoke(
        app, ["reproduce", "--preset", "tiny", "--device", "cpu:0", "--out", str(out)]
    )
    assert res.exit_code == 0, res.output
    models = {"parity train", "parity sweep", "lm suite", "lm losses", "qdg run"}
    seen = set()
    for argv in ran:
        key = " ".join(argv[:2])
        seen.add(key)
        assert (argv[-2:] == ["--device", "cpu:0"]) == (key in models), argv
    assert models <= seen  # every kind of model-running command is in the tiny preset
    # lm-losses, lm-dynamics and qdg-universality's init-seed and data-order replicas
    assert sum(a[:2] == ["lm", "losses"] for a in ran) == 4


def test_reproduce_checks_the_device_only_where_a_stage_runs_it_here(tmp_path, monkeypatch):
    """Sweeps sent to a cluster run on its workers' GPUs: a login node without one may send
    them; a stage that trains here is refused up front."""
    import quanta.cli.job as job

    _gpus(monkeypatch, 0)
    monkeypatch.setattr(job, "in_process_runner", lambda command: lambda argv: None)
    # A login node: SLURM's sbatch on PATH (never called: the runner is a no-op), no GPU.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "sbatch").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    base = ["reproduce", "--preset", "tiny", "--device", "cuda", "--executor", "slurm"]
    res = CliRunner().invoke(app, [*base, "--only", "toy-data", "--out", str(tmp_path / "a")])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(app, [*base, "--only", "toy-params", "--out", str(tmp_path / "b")])
    assert res.exit_code == 2 and "sees no CUDA GPU" in res.output
    assert not (tmp_path / "b").exists()


def _click_command(words: list[str]) -> Any:
    import typer

    command = typer.main.get_command(app)
    for word in words:
        command = command.commands[word]  # type: ignore[attr-defined]
    return command


@pytest.mark.parametrize("command", DEVICE_COMMANDS)
def test_every_command_reproduce_sends_device_to_takes_it(command):
    if command.startswith("parity"):  # config keys: --device is ParityConfig's runtime field
        field = {f.name: f for f in dataclasses.fields(ParityConfig)}["device"]
        assert field.metadata.get("runtime")
        return
    words = command.split() + (["train"] if command == "lm suite" else [])
    params = _click_command(words).params
    assert any("--device" in p.opts for p in params)
