"""One writer per run directory: a second writer refused naming the holder or waiting, a
killed holder's lock taken over, re-entrant in one process, temporary files per process."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli_args import TINY_PARITY_TRAIN
from quanta.cli import app
from quanta.lock import LOCK_FILE, holder, run_lock
from quanta.store import atomic_write, cleanup_temporary

TRAIN = TINY_PARITY_TRAIN


def _holder(directory: Path, release: Path, *, die: bool = False) -> subprocess.Popen:
    """Another process holding the lock of ``directory`` until ``release`` exists (or, with
    ``die``, killing itself with SIGKILL while holding it)."""
    code = textwrap.dedent(
        f"""
        import os, pathlib, signal, time
        from quanta.lock import run_lock
        with run_lock({str(directory)!r}):
            if {die!r}:
                os.kill(os.getpid(), signal.SIGKILL)
            while not pathlib.Path({str(release)!r}).exists():
                time.sleep(0.05)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", code])
    deadline = time.monotonic() + 60
    while (holder(directory) or {}).get("pid") != proc.pid:
        assert time.monotonic() < deadline and (die or proc.poll() is None), "holder never locked"
        if die and proc.poll() is not None:
            break
        time.sleep(0.05)
    return proc


def test_a_second_writer_is_refused_naming_the_holder(tmp_path):
    out, release = tmp_path / "run", tmp_path / "release"
    proc = _holder(out, release)
    try:
        res = CliRunner().invoke(app, [*TRAIN, "--out", str(out)])
        assert res.exit_code == 2, res.output
        line = " ".join(res.output.split())
        assert f"is being written by PID {proc.pid}: " in line and "-c" in line
        assert "--wait" in line and "Traceback" not in res.output
        assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE]  # nothing written
    finally:
        release.touch()
        proc.wait(timeout=60)
    assert not out.exists()  # the holder wrote nothing and removed what it created


def test_wait_waits_for_the_holder_then_writes(tmp_path):
    out, release = tmp_path / "run", tmp_path / "release"
    proc = _holder(out, release)
    timer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import time, pathlib; time.sleep(1.5); pathlib.Path({str(release)!r}).touch()",
        ]
    )
    t0 = time.monotonic()
    res = CliRunner().invoke(app, [*TRAIN, "--out", str(out), "--wait"])
    waited = time.monotonic() - t0
    timer.wait(timeout=60)
    proc.wait(timeout=60)
    assert res.exit_code == 0, res.output
    assert f"waiting for PID {proc.pid}" in " ".join(res.output.split())
    assert waited >= 1.0 and (out / "curves.parquet").exists()
    assert not (out / LOCK_FILE).exists()  # released and removed when done


def test_a_killed_holders_lock_is_taken_over(tmp_path):
    out = tmp_path / "run"
    proc = _holder(out, tmp_path / "never", die=True)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    assert holder(out)["pid"] == proc.pid  # its line is left behind ...
    res = CliRunner().invoke(app, [*TRAIN, "--out", str(out)])
    assert res.exit_code == 0, res.output  # ... but nobody holds the lock: taken
    assert (out / "curves.parquet").exists() and not (out / LOCK_FILE).exists()


def test_the_lock_is_reentrant_in_one_process(tmp_path):
    out = tmp_path / "run"
    with run_lock(out), run_lock(out):  # a reproduce stage writing the reproduce dir
        res = CliRunner().invoke(app, [*TRAIN, "--out", str(out / "sub")])
        assert res.exit_code == 0, res.output
        assert holder(out)["pid"] == os.getpid()
    assert not (out / LOCK_FILE).exists() and (out / "sub" / "curves.parquet").exists()


def test_a_refused_input_leaves_no_directory(tmp_path):
    res = CliRunner().invoke(app, [*TRAIN, "--device", "tpu", "--out", str(tmp_path / "a/b")])
    assert res.exit_code == 2
    assert list(tmp_path.iterdir()) == []


def test_cleanup_keeps_the_temporary_files_of_live_processes(tmp_path):
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    try:
        theirs = tmp_path / "columns" / f".3.npy.{alive.pid}-k2j4.tmp"
        stale = tmp_path / f".models.parquet.{dead.pid}-x9q1.tmp"
        for p in (theirs, stale):
            p.parent.mkdir(exist_ok=True)
            p.write_bytes(b"partial")
        assert cleanup_temporary(tmp_path) == [stale]
        assert theirs.exists() and not stale.exists()
    finally:
        alive.kill()
        alive.wait()


def test_temporary_names_carry_the_pid(tmp_path):
    target = tmp_path / "x.bin"
    with atomic_write(target) as fh:
        (tmp,) = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
        assert tmp.name.startswith(f".x.bin.{os.getpid()}-")
        fh.write(b"1")
    assert [p.name for p in tmp_path.iterdir()] == ["x.bin"]


@pytest.mark.parametrize("path", ["file"])
def test_an_output_path_that_is_a_file_is_refused(tmp_path, path):
    (tmp_path / path).write_text("x")
    res = CliRunner().invoke(app, [*TRAIN, "--out", str(tmp_path / path)])
    assert res.exit_code == 2 and "not a directory" in res.output
