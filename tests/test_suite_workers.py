"""Mini-suite sizes trained in worker processes (``workers``): the same suite as one process,
interruption and resume, a worker's error, bad input."""

from __future__ import annotations

import json
import multiprocessing as mp
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from quanta.cli import app
from quanta.lm.minisuite import (
    MiniSuiteConfig,
    build_suite_config,
    train_flops_per_token,
    train_minisuite,
)
from quanta.lm.suite_workers import lpt_order


def _tiny(**overrides):
    values = {"max_docs": 20, "steps": 12, "n_checkpoints": 2, "threads": 1, **overrides}
    return build_suite_config("tiny", **values)


def _contents(out: Path) -> dict[str, bytes]:
    """Every finished file of a suite directory but its manifest (wall time), by path."""
    files = [out / "suite.json", out / "train_log.parquet", *(out / "models").rglob("*")]
    return {str(p.relative_to(out)): p.read_bytes() for p in files if p.is_file()}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The tiny suite trained in this process, one thread per model."""
    out = tmp_path_factory.mktemp("workers") / "one"
    train_minisuite(_tiny(), out)
    return _contents(out)


def test_two_workers_train_the_same_suite_bit_for_bit(tmp_path, reference):
    """Same threads per model: the same weights (every checkpoint's bytes), records and log,
    the files in size order although the sizes finished largest first."""
    seen: list[str] = []

    def progress(name, step, total, loss):
        if step == total:
            seen.append(name)

    models = train_minisuite(_tiny(workers=2), tmp_path / "two", progress=progress)
    assert _contents(tmp_path / "two") == reference
    assert models["name"].tolist() == [
        m["name"] for m in json.loads(reference["suite.json"])["models"]
    ]
    assert sorted(seen) == sorted(models["name"]) and seen[0] != models["name"].iloc[0]
    # workers is a runtime key: the same run config (a suite resumes with any count).
    assert _tiny(workers=2).to_dict() == _tiny().to_dict()


def test_an_interrupt_keeps_the_finished_models_and_a_rerun_completes(
    tmp_path, reference, monkeypatch
):
    import quanta.lm.suite_workers as sw

    monkeypatch.setattr(sw, "_STOP_S", 1.0)  # stopped at once, not left to finish their work
    out = tmp_path / "s"

    def progress(name, step, total, loss):
        if (out / "suite.json").exists():  # one model recorded: Ctrl-C
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_minisuite(_tiny(workers=2), out, progress=progress)
    assert not mp.active_children()  # no worker outlives the call
    kept = [m["name"] for m in json.loads((out / "suite.json").read_text())["models"]]
    assert 1 <= len(kept) < 4
    assert set(pd.read_parquet(out / "train_log.parquet")["model"]) == set(kept)
    # More workers than sizes left: capped; the unrecorded models are trained again.
    train_minisuite(_tiny(workers=8), out)

    # A resumed suite reloads its tokenizer from disk, whose saved config then gains loading
    # keys ("is_local"), in one process as in workers; the rest is the same bytes.
    def trained(files):
        return {k: v for k, v in files.items() if not k.endswith("tokenizer_config.json")}

    assert trained(_contents(out)) == trained(reference)


def test_damaged_models_are_trained_again_in_workers(tmp_path, reference):
    """A finished suite with two damaged checkpoints: reopened with workers, those two models
    train again (in two workers), the others are kept, and the files are the reference's."""
    out = tmp_path / "s"
    train_minisuite(_tiny(), out)
    for name in ("neox-h8-l1", "neox-h32-l1"):
        weights = out / "models" / name / "step12" / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:100])
    kept = (out / "models" / "neox-h16-l1" / "step12" / "model.safetensors").stat().st_mtime_ns
    trained: list[str] = []

    def progress(name, step, total, loss):
        if step == 1:
            trained.append(name)

    train_minisuite(_tiny(workers=2), out, progress=progress)
    assert sorted(trained) == ["neox-h32-l1", "neox-h8-l1"]
    assert (
        out / "models" / "neox-h16-l1" / "step12" / "model.safetensors"
    ).stat().st_mtime_ns == kept
    files = _contents(out)
    assert {k: v for k, v in files.items() if "tokenizer" not in k} == {
        k: v for k, v in reference.items() if "tokenizer" not in k
    }


def test_a_workers_error_is_the_same_one_line_error(tmp_path):
    out = tmp_path / "s"
    base = ["lm", "suite", "train", "--preset", "tiny", "--out", str(out), "--quiet"]
    small = ["--max-docs", "20", "--steps", "4", "--sizes", "8x1,48x2", "--threads", "1"]
    res = CliRunner().invoke(app, [*base, *small, "--workers", "2", "--lrs", "5e-3,1e9"])
    assert res.exit_code == 2, res.output
    text = " ".join(res.output.split())
    assert "Training neox-h48-l2 diverged at step" in text and "Traceback" not in text
    # The small model may have finished (and been recorded) first; the diverged one is not.
    if (out / "suite.json").exists():
        models = json.loads((out / "suite.json").read_text())["models"]
        assert [m["name"] for m in models] == ["neox-h8-l1"]


def test_a_worker_that_dies_without_a_word_is_an_error_not_a_hang(tmp_path):
    """A worker killed (out of memory, a signal) sends nothing: the parent sees it exit,
    raises at once (not after the other worker's sizes) and stops the other."""
    killed, after = [], []

    def progress(name, step, total, loss):
        if killed:
            after.append(step)
        else:
            victim = mp.active_children()[0]
            victim.kill()
            killed.append(victim)

    with pytest.raises(ChildProcessError, match=r"worker exited with status -9 before \d"):
        train_minisuite(_tiny(workers=2, steps=200), tmp_path / "s", progress=progress)
    assert killed and not mp.active_children()
    assert len(after) < 100  # the other worker did not go on to finish a 200-step size


def test_bad_worker_counts_are_refused_before_writing(tmp_path):
    with pytest.raises(ValueError, match=r"'workers' parameter of MiniSuiteConfig .* Got 0"):
        MiniSuiteConfig(workers=0)
    out = tmp_path / "s"
    base = ["lm", "suite", "train", "--preset", "tiny", "--out", str(out), "--quiet"]
    res = CliRunner().invoke(app, [*base, "--workers", "0"])
    assert res.exit_code == 2, res.output
    assert "'workers' parameter of MiniSuiteConfig must be an int in the range [1, inf)" in (
        " ".join(res.output.split())
    )
    assert not out.exists()


def test_the_largest_sizes_are_scheduled_first():
    cfg = build_suite_config("cpu")

    def cost(i):
        return train_flops_per_token(cfg, *cfg.sizes[i], cfg.vocab_size)

    assert lpt_order(range(len(cfg.sizes)), cost) == [5, 4, 3, 2, 1, 0]
    assert lpt_order([0, 3, 1], cost) == [3, 1, 0]
