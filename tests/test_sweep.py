import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pandas as pd
import pytest

from quanta._validation import QuantaInputError
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
KEY = ["run", "member", "step", "split", "task"]


def tiny_spec() -> SweepSpec:
    return SweepSpec(BASE, {"alpha": [0.2, 0.5], "seed": [0, 1]}, "custom")


def sorted_results(df: pd.DataFrame) -> pd.DataFrame:
    return df.sort_values(KEY).reset_index(drop=True)


def test_spec_values_are_normalized_so_identity_is_stable():
    from_cli = SweepSpec({"steps": "40"}, {"alpha": ["0.2", "0.5"]})
    from_toml = SweepSpec({"steps": 40}, {"alpha": [0.2, 0.5]})
    assert from_cli.to_dict() == from_toml.to_dict()
    assert [c.alpha for c in from_toml.configs()] == [0.2, 0.5]


def test_presets_expand_to_valid_configs():
    for (experiment, preset), spec in SWEEP_PRESETS.items():
        configs = spec.configs()
        assert configs and spec.experiment == experiment
        if (experiment, preset) == ("data", "paper"):
            assert len(configs) == 30 and configs[0].widths == (500,)
        if (experiment, preset) == ("params", "paper"):
            assert len(configs[0].widths) == 30 and configs[0].steps == 200_000


def test_local_sweep_runs_every_point_once_and_resumes(tmp_path):
    results = run_sweep(tiny_spec(), tmp_path / "s")
    assert results["run"].nunique() == 4
    assert not results.duplicated(KEY).any()
    assert set(zip(results["alpha"], results["seed"], strict=True)) == {
        (a, s) for a in (0.2, 0.5) for s in (0, 1)
    }
    again = run_sweep(tiny_spec(), tmp_path / "s")  # complete: nothing retrained
    pd.testing.assert_frame_equal(sorted_results(again), sorted_results(results))
    runs = pd.read_parquet(tmp_path / "s" / "runs.parquet")
    assert len(runs) == 4 and (runs["wall_seconds"] > 0).all()


@pytest.mark.parametrize(
    ("grid", "match"),
    [
        ({"alhpa": [1]}, r"Unknown sweep axis 'alhpa' \(did you mean 'alpha'\?\)"),
        ({"widths": [4]}, r"trained together in every run"),
        ({"alpha": []}, r"Sweep axis 'alpha' has no values: the sweep is empty"),
    ],
)
def test_bad_sweep_specs(grid, match):
    with pytest.raises(QuantaInputError, match=match):
        SweepSpec(BASE, grid)


def test_unusable_executors_refused_before_writing(tmp_path):
    with pytest.raises(QuantaInputError, match=r"Cannot reach a Ray cluster at .127\.0\.0\.1:"):
        run_sweep(
            tiny_spec(), tmp_path / "r", executor="ray", ray_address=f"127.0.0.1:{_free_port()}"
        )
    if shutil.which("sbatch") is None:
        with pytest.raises(QuantaInputError, match="SLURM is not available here"):
            run_sweep(tiny_spec(), tmp_path / "r", executor="slurm")
    assert not (tmp_path / "r").exists()


def test_sweep_killed_with_sigkill_finishes_every_run_exactly_once(tmp_path):
    out = tmp_path / "s"
    args = [
        sys.executable,
        "-m",
        "quanta.cli",
        "parity",
        "sweep",
        "--out",
        str(out),
        "--n-tasks",
        "5",
        "--n-bits",
        "8",
        "--widths",
        "4,8",
        "--steps",
        "3000",
        "--batch-size",
        "32",
        "--test-per-task",
        "8",
        "--eval-points",
        "6",
        "--grid",
        "seed=0,1,2",
        "--threads",
        "1",
        "--checkpoint-seconds",
        "0.2",
        "--quiet",
    ]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    # Kill once one run is complete and the next one has a checkpoint (mid-training).
    while time.monotonic() < deadline:
        runs = list((out / "runs").glob("*")) if (out / "runs").exists() else []
        done = [r for r in runs if (r / "curves.parquet").exists()]
        midway = [r for r in runs if (r / "checkpoint.safetensors").exists()]
        if done and midway:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert done and midway, "the sweep did not get far enough to be killed mid-way"
    finished = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr
    results = pd.read_parquet(out / "results.parquet")
    assert results["run"].nunique() == 3 and not results.duplicated(KEY).any()
    # ... and the numbers are those of a sweep that was never interrupted.
    spec = SweepSpec({**BASE, "steps": 3000, "eval_points": 6}, {"seed": [0, 1, 2]})
    clean = run_sweep(spec, tmp_path / "clean")
    pd.testing.assert_frame_equal(
        sorted_results(results)[clean.columns], sorted_results(clean), check_dtype=False
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--grid", "alhpa=0.1,0.2"], "Unknown sweep axis 'alhpa' (did you mean 'alpha'?)"),
        (["--grid", "alpha="], "Sweep axis 'alpha' has no values"),
        (["--grid", "alpha"], "--grid takes AXIS=V1,V2"),
        (["--grid", "alpha=0.1,-1"], "'alpha'"),
        (["--experiment", "dat"], "'experiment'"),
        (["--executor", "ray", "--ray-address", "127.0.0.1:1"], "Cannot reach a Ray cluster"),
        (["--executor", "ray"], "--executor ray needs --ray-address"),
    ],
)
def test_sweep_cli_bad_input_is_one_line_and_writes_nothing(tmp_path, extra, message):
    from typer.testing import CliRunner

    from quanta.cli import app

    out = tmp_path / "s"
    res = CliRunner().invoke(app, ["parity", "sweep", "--out", str(out), "--quiet", *extra])
    assert res.exit_code == 2, res.output
    assert message in res.output and len(res.output.strip().splitlines()) == 1
    assert not out.exists()


def test_sweep_cli_refuses_another_sweep_in_the_same_directory(tmp_path):
    from typer.testing import CliRunner

    from quanta.cli import app

    args = ["parity", "sweep", "--out", str(tmp_path / "s"), "--quiet"]
    tiny = [
        f"--{k.replace('_', '-')}={','.join(map(str, v)) if isinstance(v, tuple) else v}"
        for k, v in BASE.items()
    ]
    first = CliRunner().invoke(app, [*args, *tiny, "--grid", "seed=0"])
    assert first.exit_code == 0, first.output
    before = (tmp_path / "s" / "results.parquet").read_bytes()
    second = CliRunner().invoke(app, [*args, *tiny, "--grid", "seed=1"])
    assert second.exit_code == 2 and "different config" in second.output
    assert (tmp_path / "s" / "results.parquet").read_bytes() == before
