"""Issue 21: files written outside a run's manifest (analyses, theory, figures, reports) are
recorded in their directory's outputs.json at write time, checked by ``quanta verify`` and on
reuse; the Python API's writers hold the run lock like the CLI."""

import json
import os
import subprocess
import sys
import textwrap
import time

import pytest
import xxhash
from typer.testing import CliRunner

from quanta._stages import PlannedStage, write_stages_file
from quanta.cli import app
from quanta.cli._common import in_process_runner
from quanta.lock import LOCK_FILE, RunLocked, holder, run_lock

THEORY = ["theory", "--alpha", "0.4", "--seeds", "1"]


def _digest(path):
    """XXH3-128 of the whole file in one call: not the streaming code under test."""
    return xxhash.xxh3_128(path.read_bytes()).hexdigest()


def _garble(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_theory_records_its_files_and_verify_names_a_damaged_one(tmp_path):
    out = tmp_path / "theory"
    res = CliRunner().invoke(app, [*THEORY, "--out", str(out)])
    assert res.exit_code == 0, res.output
    files = json.loads((out / "outputs.json").read_text())["files"]
    assert sorted(files) == ["theory.json", "theory.parquet", "theory.png"]
    for name, rec in files.items():
        assert rec == {"size": (out / name).stat().st_size, "xxh3_128": _digest(out / name)}
    res = CliRunner().invoke(app, ["verify", str(out)])
    assert res.exit_code == 0 and "3 files in 1 directory, all as recorded" in res.output
    _garble(out / "theory.png")
    res = CliRunner().invoke(app, ["verify", str(out)])
    assert res.exit_code == 1
    assert f"damaged: '{out / 'theory.png'}': content differs" in " ".join(res.output.split())


def test_a_reproduce_stage_with_a_damaged_output_runs_again(tmp_path, capsys):
    from typer.main import get_command

    from quanta._stage_runner import StageRunner
    from quanta.presets import Stage

    stage = Stage("theory", "toy", "t", ((*THEORY, "--out", "{out}/theory"),), "theory/theory.json")
    out = tmp_path / "r"
    out.mkdir()

    def job(state):
        runner = in_process_runner(get_command(app))
        planned = [PlannedStage("theory", "toy", "t")]
        return StageRunner(out, "tiny", "", {}, runner, None, planned, state)

    first = job({})
    first.run(0, 1, stage)
    assert first.state["theory"]["status"] == "done"
    table = (out / "theory" / "theory.parquet").read_bytes()
    _garble(out / "theory" / "theory.parquet")
    capsys.readouterr()
    again = job(dict(first.state))
    again.run(0, 1, stage)
    err = " ".join(capsys.readouterr().err.split())
    assert f"'{out / 'theory' / 'theory.parquet'}': content differs" in err
    assert "running stage theory again" in err
    assert (out / "theory" / "theory.parquet").read_bytes() == table  # seeded: the same bytes
    intact = job(dict(again.state))
    told = []
    intact.on_stage = lambda i, n, s, status: told.append(status)
    intact.run(0, 1, stage)
    assert told == ["reused"]


def test_a_damaged_analysis_is_refused_as_an_input(tmp_path):
    from quanta.store import read_outputs, record_outputs

    (tmp_path / "analysis.json").write_text('{"slopes": []}')
    record_outputs(tmp_path, [tmp_path / "analysis.json"])
    read_outputs(tmp_path, "'quanta parity analyze'")  # intact: nothing raised
    (tmp_path / "analysis.json").write_text('{"slopes": [1]}')
    with pytest.raises(ValueError, match=r"analysis.json': size 15 bytes, recorded 14; run"):
        read_outputs(tmp_path, "'quanta parity analyze'")


def test_report_warns_of_a_damaged_file_in_one_line(tmp_path):
    out = tmp_path / "r"
    res = CliRunner().invoke(app, [*THEORY, "--out", str(out / "theory")])
    assert res.exit_code == 0, res.output
    manifest = {"kind": "reproduce", "config": {"preset": "tiny"}, "environment": {}}
    (out / "manifest.json").write_text(json.dumps(manifest))
    write_stages_file(out, plan=[PlannedStage("theory", "toy", "t")], stages={})
    _garble(out / "theory" / "theory.json")
    res = CliRunner().invoke(app, ["report", str(out)])
    assert res.exit_code == 0, res.output
    said = " ".join(res.output.split())
    assert f"warning: '{out / 'theory' / 'theory.json'}': content differs" in said
    assert "report.html" in json.loads((out / "outputs.json").read_text())["files"]


# ------------------------------------------------------------------------ the API takes the lock


def _holder(directory, release):
    """Another process holding ``directory``'s lock until ``release`` exists."""
    code = textwrap.dedent(
        f"""
        import pathlib, time
        from quanta.lock import run_lock
        with run_lock({str(directory)!r}):
            while not pathlib.Path({str(release)!r}).exists():
                time.sleep(0.05)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", code])
    deadline = time.monotonic() + 60
    while (holder(directory) or {}).get("pid") != proc.pid:
        assert time.monotonic() < deadline and proc.poll() is None, "holder never locked"
        time.sleep(0.05)
    return proc


def _api_calls(tmp_path):
    """Every public writer of a run or outputs directory, called as a script would (the
    arguments are never looked at: the lock is taken first)."""
    from quanta.lm.losses_run import run_losses
    from quanta.lm.minisuite import build_suite_config, train_minisuite
    from quanta.parity.capacity import run_capacity
    from quanta.parity.config import ParityConfig
    from quanta.parity.domino import run_domino
    from quanta.parity.polygenic import write_polygenic
    from quanta.parity.run import run_parity
    from quanta.pipeline import reproduce
    from quanta.qdg.compare import compare_runs
    from quanta.qdg.multi import run_qdg_models
    from quanta.qdg.run import run_qdg
    from quanta.qdg.validate import write_planted_truth
    from quanta.report import write_report
    from quanta.sweep import run_sweep
    from quanta.theory import write_theory

    return {
        "run_parity": lambda d: run_parity(ParityConfig(), d),
        "run_sweep": lambda d: run_sweep(None, d),
        "run_losses": lambda d: run_losses("s", "c", d),
        "train_minisuite": lambda d: train_minisuite(build_suite_config("tiny"), d),
        "run_qdg": lambda d: run_qdg(tmp_path, d),
        "run_qdg_models": lambda d: run_qdg_models(tmp_path, d, [0]),
        "compare_runs": lambda d: compare_runs([], d),
        "reproduce": lambda d: reproduce(d, "tiny", run_command=print),
        "write_theory": lambda d: write_theory(None, None, {}, d),
        "write_planted_truth": lambda d: write_planted_truth(None, d),
        "write_report": lambda d: write_report(d),
        "run_capacity": lambda d: run_capacity(tmp_path, d),
        "run_domino": lambda d: run_domino([], d),
        "write_polygenic": lambda d: write_polygenic(None, d),
    }


def test_every_api_writer_is_refused_while_another_process_writes(tmp_path):
    out, release = tmp_path / "run", tmp_path / "release"
    proc = _holder(out, release)
    try:
        for name, call in _api_calls(tmp_path).items():
            with pytest.raises(RunLocked, match=f"is being written by PID {proc.pid}: "):
                call(out)
            assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE], name
    finally:
        release.touch()
        proc.wait(timeout=60)


def test_the_api_inside_a_held_lock_does_not_deadlock(tiny_cfg, tmp_path):
    from quanta.parity.run import run_parity

    out = tmp_path / "run"
    with run_lock(out):  # what the CLI does around the API call
        outcome = run_parity(tiny_cfg, out)
        assert holder(out)["pid"] == os.getpid()
    assert outcome.status == "trained" and not (out / LOCK_FILE).exists()
