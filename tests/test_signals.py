"""Issue 21, part 6: SIGTERM takes Ctrl-C's path — one line saying what is kept and how to
resume, exit 143 (130 for Ctrl-C) — in every command and through ``quanta reproduce``.
(The subprocess test of a real SIGTERM on ``parity train`` is in test_cli.py.)"""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from quanta.cli import app
from quanta.cli._common import Terminated, in_process_runner, user_errors
from quanta.pipeline import read_stages


def _app(exc: BaseException) -> typer.Typer:
    one = typer.Typer()

    @one.command()
    @user_errors
    def work(out_dir: Path = typer.Option(..., "--out")) -> None:
        raise exc

    return one


@pytest.mark.parametrize(
    ("exc", "code", "head"),
    [
        (Terminated(), 143, "terminated (SIGTERM)"),
        (KeyboardInterrupt(), 130, "interrupted"),
    ],
)
def test_an_interrupted_command_prints_one_line_and_exits_128_plus_the_signal(
    tmp_path, exc, code, head
):
    res = CliRunner().invoke(_app(exc), ["--out", str(tmp_path)])
    assert res.exit_code == code
    assert res.output.strip() == (
        f"{head}; what was finished is kept in '{tmp_path}'. Rerun the same command to resume."
    )
    # inside `quanta reproduce` (the in-process runner) it stops the whole job instead
    with pytest.raises(KeyboardInterrupt) as err:
        in_process_runner(typer.main.get_command(_app(exc)))(["--out", str(tmp_path)])
    assert isinstance(err.value, Terminated) == isinstance(exc, Terminated)


def test_sigterm_during_reproduce_records_the_stage_and_exits_143(tmp_path, monkeypatch):
    import quanta.cli.job as job

    def terminated_runner(command):
        def run(argv):
            raise Terminated()

        return run

    monkeypatch.setattr(job, "in_process_runner", terminated_runner)
    out = tmp_path / "r"
    res = CliRunner().invoke(
        app, ["reproduce", "--preset", "tiny", "--only", "theory", "--out", str(out)]
    )
    assert res.exit_code == 143, res.output
    text = " ".join(res.output.split())
    assert f"terminated (SIGTERM); finished stages are kept in '{out}'" in text
    assert read_stages(out)["theory"]["status"] == "interrupted"


def test_the_entry_point_installs_the_sigterm_handler(tmp_path):
    code = (
        "import signal, sys\n"
        "import quanta.cli as cli\n"
        "cli.app = lambda **kw: signal.raise_signal(signal.SIGTERM)\n"
        "cli.main()\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    # Terminated is a KeyboardInterrupt: uncaught at top level, Python exits 130 with its
    # traceback (inside a command, user_errors turns it into the line and 143).
    assert proc.returncode != -signal.SIGTERM and "Terminated" in proc.stderr
