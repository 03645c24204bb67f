"""Executors (quanta.executors) on a real local Ray cluster bound to 127.0.0.1 and on
submitit-local: parity sweeps and ``lm losses`` give the local results, tasks get the resources
they ask for, SLURM work goes out as one array, and unusable executors are refused up front."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from quanta._validation import QuantaInputError
from quanta.cli import app
from quanta.executors import Task, run_tasks, torch_threads
from quanta.lm.losses_run import run_losses
from quanta.sweep import _tasks, run_sweep
from test_sweep import BASE, sorted_results, tiny_spec


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def ray_cluster():
    """A real local Ray cluster bound to 127.0.0.1 with 2 CPUs, torn down afterwards.

    Its processes share the process group of the ``ray start`` that launched them, and
    teardown ends that group only: ``ray stop`` would end every Ray cluster on the machine."""
    ray_bin = Path(sys.executable).parent / "ray"
    if not ray_bin.exists():
        pytest.skip("ray is not installed")
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    port = _free_port()
    start = subprocess.Popen(
        [
            str(ray_bin),
            "start",
            "--head",
            "--node-ip-address=127.0.0.1",
            f"--port={port}",
            "--include-dashboard=false",
            "--num-cpus=2",
            "--disable-usage-stats",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        _, err = start.communicate(timeout=180)
        assert start.returncode == 0, err[-2000:]
        yield f"127.0.0.1:{port}"
    finally:
        _end_group(start.pid)


def _end_group(pgid: int) -> None:
    """SIGTERM the process group, then SIGKILL what is left after 5 s (gcs_server and raylet
    sometimes ignore SIGTERM)."""
    try:
        os.killpg(pgid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            os.killpg(pgid, 0)  # raises once the group is empty
            time.sleep(0.2)
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def test_ray_executor_on_a_real_local_cluster(ray_cluster, tmp_path):
    results = run_sweep(tiny_spec(), tmp_path / "ray", executor="ray", ray_address=ray_cluster)
    local = run_sweep(tiny_spec(), tmp_path / "local")
    pd.testing.assert_frame_equal(sorted_results(results), sorted_results(local))
    manifest = (tmp_path / "ray" / "manifest.json").read_text()
    assert '"executor": "ray"' in manifest


def test_submitit_local_executor(tmp_path):
    pytest.importorskip("submitit")
    results = run_sweep(tiny_spec(), tmp_path / "sub", executor="submitit-local")
    local = run_sweep(tiny_spec(), tmp_path / "local")
    pd.testing.assert_frame_equal(sorted_results(results), sorted_results(local))


# ------------------------------------------------------------------ what remote tasks ask for


def _thread_probe():
    """A task body reporting the torch threads it runs with; made in a function so that
    cloudpickle ships it by value (workers cannot import this test module)."""

    def probe(tag):
        import torch

        return tag, torch.get_num_threads()

    return probe


def _ray_probe():
    def probe(tag):
        import ray
        import torch

        return tag, torch.get_num_threads(), ray.get_runtime_context().get_assigned_resources()

    return probe


def test_remote_sweep_tasks_ask_for_their_threads_and_gpu():
    from quanta.config import config_to_dict
    from quanta.parity import ParityConfig

    configs = [
        ParityConfig(**{**BASE, "threads": 3, "device": "cuda:1"}),
        ParityConfig(**{**BASE, "threads": 0}),  # the auto rule: 1 thread for a net this small
    ]
    jobs = [(config_to_dict(c), f"/runs/{i}") for i, c in enumerate(configs)]
    tasks = _tasks(jobs, configs)
    assert [(t.cpus, t.gpus) for t in tasks] == [(3, 1), (1, 0)]
    # The worker runs with what was requested: threads pinned, the scheduler's GPU as 'cuda'.
    assert [(t.args[0]["threads"], t.args[0]["device"]) for t in tasks] == [(3, "cuda"), (1, "cpu")]


def test_ray_tasks_run_with_exactly_the_cpus_they_request(ray_cluster):
    probe = _ray_probe()
    tasks = [Task(probe, ("two",), cpus=2), Task(probe, ("one",), cpus=1)]
    got = run_tasks("ray", tasks, ray_address=ray_cluster)
    assert got == [("two", 2, {"CPU": 2.0}), ("one", 1, {"CPU": 1.0})]
    # A request no node can hold is refused instead of waiting forever.
    for cpus, gpus in ((3, 0), (1, 1)):
        with pytest.raises(
            QuantaInputError,
            match=rf"No node of the Ray cluster at '127\.0\.0\.1:\d+' has {cpus} CPU\(s\) and "
            rf"{gpus} GPU\(s\) for one task \(the largest: 2 CPUs, 0 GPUs\)",
        ):
            run_tasks("ray", [Task(probe, ("x",), cpus=cpus, gpus=gpus)], ray_address=ray_cluster)


def test_submitit_sends_one_array_shaped_by_its_largest_task(tmp_path, monkeypatch):
    submitit = pytest.importorskip("submitit")
    calls = {"map_array": [], "submit": 0, "parameters": {}}
    real_map = submitit.AutoExecutor.map_array
    real_update = submitit.AutoExecutor.update_parameters

    def map_array(self, fn, *iterables):
        calls["map_array"].append(len(iterables[0]))
        return real_map(self, fn, *iterables)

    def submit(self, *args, **kwargs):
        calls["submit"] += 1
        raise AssertionError("tasks must go out as one array, not one submit each")

    def update_parameters(self, **kwargs):
        calls["parameters"].update(kwargs)
        return real_update(self, **kwargs)

    monkeypatch.setattr(submitit.AutoExecutor, "map_array", map_array)
    monkeypatch.setattr(submitit.AutoExecutor, "submit", submit)
    monkeypatch.setattr(submitit.AutoExecutor, "update_parameters", update_parameters)
    probe = _thread_probe()
    tasks = [Task(probe, ("a",), cpus=1), Task(probe, ("b",), cpus=2), Task(probe, ("c",))]
    got = run_tasks("submitit-local", tasks, folder=tmp_path / "sub", slurm_array_parallelism=2)
    assert got == [("a", 1), ("b", 2), ("c", 1)]  # each job runs with its own thread count
    assert calls["map_array"] == [3] and calls["submit"] == 0
    assert calls["parameters"] == {
        "timeout_min": 1440,
        "cpus_per_task": 2,
        "gpus_per_node": 0,
        "slurm_array_parallelism": 2,
    }


# ------------------------------------------------------------------ lm losses over executors

LOSSES = {"checkpoints": "neox-h48-l2", "max_docs": 5, "max_len": 64, "threads": 1}
TIMINGS = ["seconds", "tokens_per_second"]


def _assert_same_losses(a: Path, b: Path) -> None:
    """Two ``lm losses`` directories hold the same numbers (timings aside)."""
    np.testing.assert_array_equal(np.load(b / "losses.npy"), np.load(a / "losses.npy"))
    pd.testing.assert_frame_equal(
        pd.read_parquet(b / "models.parquet").drop(columns=TIMINGS),
        pd.read_parquet(a / "models.parquet").drop(columns=TIMINGS),
    )
    assert (b / "corpus" / "tokens.npy").read_bytes() == (a / "corpus" / "tokens.npy").read_bytes()
    pd.testing.assert_frame_equal(
        pd.read_parquet(b / "corpus" / "index.parquet"),
        pd.read_parquet(a / "corpus" / "index.parquet"),
    )
    assert json.loads((b / "manifest.json").read_text())["status"] == "complete"


@pytest.mark.slow
def test_lm_losses_on_ray_equal_local_and_skip_finished_columns(ray_cluster, tiny_suite, tmp_path):
    suite = str(tiny_suite)
    local = run_losses(suite, "stdlib:test", tmp_path / "local", **LOSSES)
    assert len(local) == 3  # one column per revision of the model

    def stop_before_the_second(label, n_tokens):
        if (tmp_path / "ray" / "columns" / "0.npy").exists():
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_losses(
            suite, "stdlib:test", tmp_path / "ray", **LOSSES, on_model=stop_before_the_second
        )
    first = tmp_path / "ray" / "columns" / "0.npy"
    stamp = first.stat().st_mtime_ns
    remote = run_losses(
        suite, "stdlib:test", tmp_path / "ray", **LOSSES, executor="ray", ray_address=ray_cluster
    )
    assert first.stat().st_mtime_ns == stamp  # the finished column was not recomputed
    pd.testing.assert_frame_equal(remote.drop(columns=TIMINGS), local.drop(columns=TIMINGS))
    _assert_same_losses(tmp_path / "local", tmp_path / "ray")


@pytest.mark.slow
def test_lm_losses_on_submitit_local_equal_local(tiny_suite, tmp_path):
    pytest.importorskip("submitit")
    kw = {**LOSSES, "revisions": "step6,step40"}
    run_losses(str(tiny_suite), "stdlib:test", tmp_path / "local", **kw)
    run_losses(str(tiny_suite), "stdlib:test", tmp_path / "sub", **kw, executor="submitit-local")
    for kind, suffix in (("columns", ".npy"), ("rows", ".json")):  # written by the jobs
        assert sorted(p.name for p in (tmp_path / "sub" / kind).iterdir()) == [
            f"0{suffix}",
            f"1{suffix}",
        ]
    _assert_same_losses(tmp_path / "local", tmp_path / "sub")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--executor", "ray", "--ray-address", "127.0.0.1:{port}"], "Cannot reach a Ray cluster"),
        (["--executor", "ray", "--ray-address", "nohost"], "must look like HOST:PORT"),
        (["--executor", "ray"], "--executor ray needs --ray-address HOST:PORT"),
        (["--executor", "slurm"], "SLURM is not available here (no 'sbatch' on PATH)"),
        (["--executor", "dask"], "The 'executor' parameter of quanta lm losses must be one of"),
        (
            ["--executor", "submitit-local", "--slurm-array-parallelism", "0"],
            "The 'slurm_array_parallelism' parameter of quanta lm losses must be an int",
        ),
        (["--threads", "0"], "The 'threads' parameter of quanta lm losses must be an int"),
    ],
)
def test_lm_losses_cli_refuses_an_unusable_executor_before_writing(
    tiny_suite, tmp_path, monkeypatch, extra, message
):
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))  # no sbatch, whatever this machine has
    out = tmp_path / "L"
    extra = [e.format(port=_free_port()) for e in extra]
    args = ["lm", "losses", "--suite", str(tiny_suite), "--out", str(out), "--quiet", *extra]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2, res.output
    assert message in res.output and len(res.output.strip().splitlines()) == 1
    assert not out.exists()


# ------------------------------------------------------------------ QDG over several models

QDG = ["--threshold", "5", "--n", "40", "--ks", "3,5", "--quiet"]


@pytest.fixture(scope="module")
def qdg_losses(tiny_suite, tmp_path_factory):
    """A losses directory of the tiny suite's final checkpoints (4 models, 8 documents)."""
    out = tmp_path_factory.mktemp("qdg_losses") / "L"
    run_losses(str(tiny_suite), "stdlib:test", out, max_docs=8, max_len=200, threads=1)
    return out


def _assert_same_qdg(a: Path, b: Path) -> None:
    """Two ``qdg run`` directories hold the same results (timings aside)."""
    for name in ("labels.parquet", "samples.parquet", "rank_frequency.parquet"):
        pd.testing.assert_frame_equal(pd.read_parquet(b / name), pd.read_parquet(a / name))
    assert json.loads((b / "zipf.json").read_text()) == json.loads((a / "zipf.json").read_text())
    np.testing.assert_array_equal(np.load(b / "grads.npy"), np.load(a / "grads.npy"))
    assert json.loads((b / "manifest.json").read_text())["status"] == "complete"


@pytest.mark.slow
def test_qdg_models_on_submitit_local_equal_one_local_run_each(qdg_losses, tmp_path):
    pytest.importorskip("submitit")
    from quanta.qdg.multi import model_dir_name

    base = ["qdg", "run", str(qdg_losses), *QDG]
    multi = tmp_path / "multi"
    args = [*base, "--models", "0,-1", "--out", str(multi), "--executor", "submitit-local"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    table = pd.read_parquet(qdg_losses / "models.parquet").sort_values("n_params", kind="stable")
    labels = [table["label"].iloc[0], table["label"].iloc[-1]]
    assert sorted(p.name for p in multi.iterdir()) == sorted(
        [*(model_dir_name(label) for label in labels), "submitit"]
    )
    for index, label in zip(("0", "-1"), labels, strict=True):
        single = tmp_path / f"single{index}"
        with torch_threads(1):  # as the task (1 thread): float sums in the same order
            res = CliRunner().invoke(app, [*base, "--model", index, "--out", str(single)])
        assert res.exit_code == 0, res.output
        _assert_same_qdg(single, multi / model_dir_name(label))
    # a finished model directory is reused, not recomputed
    stamp = (multi / model_dir_name(labels[0]) / "labels.parquet").stat().st_mtime_ns
    res = CliRunner().invoke(app, [*base, "--models", "0", "--out", str(multi)])
    assert res.exit_code == 0, res.output
    assert (multi / model_dir_name(labels[0]) / "labels.parquet").stat().st_mtime_ns == stamp


@pytest.mark.slow
def test_qdg_models_on_ray_equal_local(ray_cluster, qdg_losses, tmp_path):
    from quanta.qdg.multi import model_dir_name

    base = ["qdg", "run", str(qdg_losses), *QDG, "--models", "1"]
    ray = ["--executor", "ray", "--ray-address", ray_cluster]
    res = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "ray"), *ray])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "local"), "--threads", "1"])
    assert res.exit_code == 0, res.output
    (name,) = [p.name for p in (tmp_path / "local").iterdir()]
    assert name == model_dir_name(
        str(json.loads((tmp_path / "local" / name / "zipf.json").read_text())["model"])
    )
    _assert_same_qdg(tmp_path / "local" / name, tmp_path / "ray" / name)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--executor", "dask"], "The 'executor' parameter of quanta qdg run must be one of"),
        (["--executor", "slurm"], "SLURM is not available here (no 'sbatch' on PATH)"),
        (["--executor", "ray"], "--executor ray needs --ray-address HOST:PORT"),
        (["--threads", "0"], "The 'threads' parameter of quanta qdg run must be an int"),
        (["--model", "0"], "--models and --model exclude each other"),
        (["--ks", "3,500"], "K = 500 exceeds the 40 selected samples"),
        (["--n-init", "0", "--assign", "kmeans"], "'n_init' parameter of quanta qdg run"),
    ],
)
def test_qdg_models_refuse_bad_input_before_writing(
    qdg_losses, tmp_path, monkeypatch, extra, message
):
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))  # no sbatch, whatever this machine has
    out = tmp_path / "Q"
    args = ["qdg", "run", str(qdg_losses), *QDG, "--models", "0,-1", "--out", str(out), *extra]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2, res.output
    assert message in res.output and len(res.output.strip().splitlines()) == 1
    assert not out.exists()


def test_qdg_models_refuse_an_unknown_or_repeated_model_before_writing(qdg_losses, tmp_path):
    out = tmp_path / "Q"
    base = ["qdg", "run", str(qdg_losses), *QDG, "--out", str(out)]
    for models, message in (("0,9", "Got '9' instead"), ("0,0", "twice")):
        res = CliRunner().invoke(app, [*base, "--models", models])
        assert res.exit_code == 2 and message in res.output, res.output
        assert not out.exists()
    # a model whose directory holds another configuration is refused before the others start
    (out / "x").mkdir(parents=True)
    table = pd.read_parquet(qdg_losses / "models.parquet").sort_values("n_params", kind="stable")
    from quanta.qdg.multi import model_dir_name

    foreign = out / model_dir_name(table["label"].iloc[-1])
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    res = CliRunner().invoke(app, [*base, "--models", "0,-1"])
    assert res.exit_code == 2 and "holds no quanta run" in res.output, res.output
    assert sorted(p.name for p in out.iterdir()) == sorted(["x", foreign.name])
