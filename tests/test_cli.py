import shlex

import pandas as pd
import pytest
from typer.testing import CliRunner

from quanta.cli import app

# A run that takes well under a second; the step count is added per test.
TINY_TASK = shlex.split(
    "--n-tasks 5 --n-bits 8 --widths 4,8 --batch-size 32 --test-per-task 8 --eval-points 4 "
    "--threads 1"
)
TINY = [*TINY_TASK, "--steps", "20"]


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def test_train_writes_run_and_summary(runner, tmp_path):
    out = tmp_path / "run"
    res = runner.invoke(app, ["parity", "train", "--out", str(out), "--quiet", *TINY])
    assert res.exit_code == 0, res.output
    assert "learned" in res.stdout and "curves.parquet" in res.stdout
    curves = pd.read_parquet(out / "curves.parquet")
    assert sorted(curves["width"].unique()) == [4, 8]
    assert (out / "figures" / "subtask_curves.png").stat().st_size > 10_000
    again = runner.invoke(app, ["parity", "train", "--out", str(out), "--quiet", *TINY])
    assert again.exit_code == 0 and "complete; nothing to do" in again.output
    pd.testing.assert_frame_equal(pd.read_parquet(out / "curves.parquet"), curves)


def test_config_file_and_override_precedence(runner, tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        "widths = [4, 6]\nsteps = 10\nn_tasks = 5\nn_bits = 8\nbatch_size = 16\n"
        "test_per_task = 4\neval_points = 3\n"
    )
    out = tmp_path / "run"
    res = runner.invoke(
        app,
        [
            "parity",
            "train",
            "--out",
            str(out),
            "--quiet",
            "--config",
            str(cfg),
            "--steps",
            "12",
            "--no-figures",
        ],
    )
    assert res.exit_code == 0, res.output
    assert pd.read_parquet(out / "curves.parquet")["step"].max() == 12


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--k", "9"],
            "The 'k' parameter of ParityConfig must be an int in the range [1, 8]. Got 9 instead.",
        ),
        (["--widht", "4"], "Unknown config key 'widht' (did you mean 'widths'?)"),
        (
            ["--alpha", "-0.5"],
            "'alpha' parameter of ParityConfig must be a finite float in "
            "the range [0, inf). Got -0.5 instead.",
        ),
        (["--n-tasks", "100"], "must be at most C(n_bits, k) = C(8, 3) = 56"),
        (
            ["--widths", "4,0"],
            "'widths' parameter of ParityConfig must be a non-empty list "
            "of ints >= 1. Got [4, 0] instead.",
        ),
        (
            ["--batch-size", "0"],
            "'batch_size' parameter of ParityConfig must be an int in the "
            "range [1, inf). Got 0 instead.",
        ),
        (["--steps", "0"], "'steps' parameter"),
        (["--config", "/no/such.toml"], "Cannot read config file '/no/such.toml'"),
        (["--preset", "gpu"], "'preset' parameter of quanta parity must be one of 'cpu', 'paper'"),
        (["--lr"], "Option '--lr' needs a value."),
        (["stray"], "Unexpected argument 'stray'"),
    ],
)
def test_bad_input_one_line_exit_2(runner, tmp_path, args, message):
    res = runner.invoke(app, ["parity", "train", "--out", str(tmp_path / "r"), *TINY, *args])
    assert res.exit_code == 2
    err = " ".join(res.stderr.split())  # rich may wrap long lines
    assert message in err
    assert "Traceback" not in res.output + res.stderr
    assert not (tmp_path / "r").exists()  # nothing written on refused input


def test_bad_toml_is_one_line(runner, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("widths = [4,\n")
    res = runner.invoke(app, ["parity", "describe", "--config", str(bad)])
    assert res.exit_code == 2 and "is not valid TOML" in res.stderr
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("withs = [4]\n")
    res = runner.invoke(app, ["parity", "describe", "--config", str(unknown)])
    assert res.exit_code == 2
    assert "Unknown config key 'withs' (did you mean 'widths'?)" in " ".join(res.stderr.split())


def test_other_config_in_out_dir_is_refused_and_kept(runner, tmp_path):
    out = tmp_path / "run"
    assert (
        runner.invoke(app, ["parity", "train", "--out", str(out), "--quiet", *TINY]).exit_code == 0
    )
    before = (out / "curves.parquet").read_bytes()
    res = runner.invoke(
        app, ["parity", "train", "--out", str(out), "--quiet", *TINY, "--lr", "0.01"]
    )
    assert res.exit_code == 2 and "different config" in res.stderr
    assert (out / "curves.parquet").read_bytes() == before


def test_describe_lists_frequencies_and_members(runner):
    res = runner.invoke(app, ["parity", "describe", "--preset", "paper"])
    assert res.exit_code == 0, res.output
    assert "n_tasks=500" in res.stdout and "0.3451" in res.stdout
    assert "301,502" in res.stdout  # P = 603·500 + 2 for the widest paper member


def test_help_lists_every_config_key(runner):
    from dataclasses import fields

    from quanta.parity import ParityConfig

    res = runner.invoke(app, ["parity", "train", "--help"])
    assert res.exit_code == 0
    for f in fields(ParityConfig):
        assert "--" + f.name.replace("_", "-") in res.stdout


@pytest.mark.parametrize(("sig", "code"), [("SIGINT", 130), ("SIGTERM", 143)])
def test_sigint_checkpoints_and_rerun_resumes_identically(tmp_path, sig, code):
    # SIGTERM (a scheduler's stop) takes Ctrl-C's path: a clean step boundary, one line.
    import os
    import re
    import signal
    import subprocess
    import sys
    import time

    args = [*TINY_TASK, "--steps", "200000", "--checkpoint-seconds", "0.5"]
    args += ["--quiet", "--no-figures"]
    cmd = [sys.executable, "-m", "quanta.cli", "parity", "train", "--out", str(tmp_path / "a")]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([*cmd, *args], env=env, stderr=subprocess.PIPE, text=True)
    checkpoint = tmp_path / "a" / "checkpoint.safetensors"  # first written after training started
    deadline = time.monotonic() + 60
    while not checkpoint.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(getattr(signal, sig))
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    line = " ".join(err.split())
    assert "Rerun the same command to resume" in line and len(err.strip().splitlines()) == 1
    assert line.startswith("terminated (SIGTERM)" if sig == "SIGTERM" else "interrupted")
    assert (tmp_path / "a" / "checkpoint.safetensors").exists()
    assert "Traceback" not in err
    stopped_at = int(re.search(r"stopped at step (\d+)", line).group(1))
    assert 0 < stopped_at < 200_000
    # The signal must stop at a clean step boundary: the checkpoint equals the state of the
    # same config stopped at the same step through the Python API.
    import torch

    from quanta.config import build_config, parse_overrides
    from quanta.parity import ParityConfig, train_parity
    from quanta.parity.run import load_checkpoint

    state = load_checkpoint(tmp_path / "a" / "checkpoint.safetensors")
    assert state.step == stopped_at
    overrides = parse_overrides([a for a in args if a not in ("--quiet", "--no-figures")])
    cfg = build_config(ParityConfig, layers=[("cli", overrides)])
    calls = {"n": 0}

    def stop() -> bool:
        calls["n"] += 1
        return calls["n"] > stopped_at

    snapshots = []
    with pytest.raises(KeyboardInterrupt):
        train_parity(cfg, stop=stop, on_checkpoint=snapshots.append)
    fresh = snapshots[-1]  # the stop snapshot (periodic ones may come before it)
    assert fresh.step == stopped_at
    for key in fresh.model:
        assert torch.equal(fresh.model[key], state.model[key]), key
    assert torch.equal(fresh.stream, state.stream)


def test_help_lists_each_config_key_on_its_own_line_with_type_and_default(runner):
    from dataclasses import fields

    from quanta.parity import ParityConfig

    res = runner.invoke(app, ["parity", "train", "--help"])
    assert res.exit_code == 0
    section = res.stdout.split("Config keys", 1)[1].split("Presets:", 1)[0]
    lines = {ln.split()[0]: ln for ln in section.splitlines() if ln.strip().startswith("--")}
    assert len(lines) == len(fields(ParityConfig))  # one option line per key, no other
    for f in fields(ParityConfig):
        key = "--" + f.name.replace("_", "-")
        default = ",".join(map(str, f.default)) if isinstance(f.default, tuple) else f.default
        assert f"[default: {str(default).lower()}]" in lines[key].lower(), lines[key]
    # the type and default share the key's line, as for every other option
    assert "--widths <int,...>" in lines["--widths"]
    assert "[default: 8,16,32,64,128,256,512]" in lines["--widths"]
    assert "--alpha <float>" in lines["--alpha"] and "[default: 0.4]" in lines["--alpha"]
    assert "--uniform <bool>" in lines["--uniform"] and "[default: false]" in lines["--uniform"]
    assert "<str>" in lines["--device"] and "[runtime]" in lines["--device"]
    assert "[runtime]" not in lines["--lr"]
    describe = runner.invoke(app, ["parity", "describe", "--help"]).stdout
    assert "--n-tasks <int>" in describe and "[default: 40]" in describe


def test_config_keys_are_still_overrides_after_the_help_change(runner):
    res = runner.invoke(app, ["parity", "describe", "--n-tasks", "7", "--n-bits=9", "--k", "2"])
    assert res.exit_code == 0, res.output
    assert "n_tasks=7" in res.stdout and "n_bits=9" in res.stdout
    res = runner.invoke(app, ["parity", "describe", "--alpah", "0.3"])
    assert res.exit_code == 2
    assert "Unknown config key 'alpah' (did you mean 'alpha'?)" in " ".join(res.stderr.split())


def test_qdg_run_refuses_knn_with_relu_norm_before_touching_anything(runner, tmp_path):
    """The combination is refused before the losses are even read: nothing is claimed and no
    gradient is computed (the losses directory here need not exist)."""
    fresh, existing = tmp_path / "fresh", tmp_path / "existing"
    existing.mkdir()
    for out in (fresh, existing):
        args = ["qdg", "run", str(tmp_path / "losses"), "--out", str(out), "--quiet"]
        res = runner.invoke(app, [*args, "--knn", "5", "--affinity", "relu_norm"])
        assert res.exit_code == 2
        lines = res.stderr.strip().splitlines()
        err = " ".join(res.stderr.split())
        assert "'affinity' parameter of quanta qdg run must be one of 'angular', 'relu', " in err
        assert "'shift' with knn = 5" in err and "Got 'relu_norm' instead." in err
        assert len(lines) <= 2 and "Traceback" not in res.output  # one (soft-wrapped) line
    assert not fresh.exists() and list(existing.iterdir()) == []


def test_the_knn_affinities_run_qdg_allows_are_those_knn_affinity_takes():
    import numpy as np

    from quanta.qdg.cluster import AFFINITIES, KNN_AFFINITIES, knn_affinity

    g = np.random.default_rng(0).normal(size=(12, 5))
    taken = []
    for transform in AFFINITIES:
        try:
            knn_affinity(g, n_neighbors=3, transform=transform)
        except ValueError:  # check_choice's refusal
            continue
        taken.append(transform)
    assert tuple(taken) == KNN_AFFINITIES and "relu_norm" not in taken


def test_the_in_process_runner_turns_outcomes_into_exceptions():
    """What ``quanta reproduce`` relies on: refused input → QuantaInputError with the one line
    (also when Typer itself refuses a value), Ctrl-C → KeyboardInterrupt, another exit status
    → RuntimeError; user errors raise only inside the runner."""
    import typer
    import typer.main

    from quanta._validation import QuantaInputError
    from quanta.cli._common import RAISE_ERRORS, fail, in_process_runner, user_errors

    tiny = typer.Typer()

    @tiny.command()
    @user_errors
    def go(what: str, n: int = 1) -> None:
        if what == "refuse":
            raise fail("'refuse' is refused; use 'ok'.")
        if what == "ctrl-c":
            raise KeyboardInterrupt
        if what == "exit3":
            raise typer.Exit(3)

    run = in_process_runner(typer.main.get_command(tiny))
    run(["ok"])
    with pytest.raises(QuantaInputError, match=r"^'refuse' is refused; use 'ok'\.$"):
        run(["refuse"])
    with pytest.raises(QuantaInputError, match="Invalid value for '--n'"):
        run(["ok", "--n", "many"])
    with pytest.raises(KeyboardInterrupt):
        run(["ctrl-c"])
    with pytest.raises(RuntimeError, match="exited with status 3"):
        run(["exit3"])
    assert RAISE_ERRORS.get() is False  # reset after every run, also after an error
    res = CliRunner().invoke(tiny, ["refuse"])  # outside the runner: one line, exit 2
    assert res.exit_code == 2 and "'refuse' is refused" in res.stderr
