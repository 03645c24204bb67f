"""Issue 21, part 4: every input is checked before any stage or training runs."""

import time

from typer.testing import CliRunner

from quanta.cli import app


def test_reproduce_refuses_a_missing_corpus_before_any_stage(tmp_path):
    out = tmp_path / "r"
    args = ["reproduce", "--preset", "tiny", "--only", "lm", "--out", str(out)]
    started = time.perf_counter()
    res = CliRunner().invoke(app, [*args, "--corpus", str(tmp_path / "nonexistent.jsonl")])
    seconds = time.perf_counter() - started
    assert res.exit_code == 2, res.output
    text = " ".join(res.output.split())
    assert "nonexistent.jsonl' does not exist" in text and "Traceback" not in text
    assert not out.exists()  # no directory claimed, no stage started
    assert seconds < 2.0  # was: the mini-suite trained first (minutes at the cpu preset)


def test_suite_train_refuses_a_missing_corpus_before_claiming_the_directory(tmp_path):
    out = tmp_path / "s"
    res = CliRunner().invoke(
        app, ["lm", "suite", "train", "--corpus", str(tmp_path / "no.jsonl"), "--out", str(out)]
    )
    assert res.exit_code == 2 and "no.jsonl' does not exist" in " ".join(res.output.split())
    assert not out.exists()
