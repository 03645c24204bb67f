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


def test_reproduce_checks_the_corpus_as_lm_losses_will_read_it(tmp_path):
    from quanta.pipeline import stage_options

    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"text": "caf\xe9"}\n')  # Latin-1, not UTF-8
    out = tmp_path / "r"
    args = ["reproduce", "--preset", "tiny", "--only", "lm", "--corpus", str(bad)]
    res = CliRunner().invoke(app, [*args, "--out", str(out)])
    assert res.exit_code == 2 and not out.exists()
    assert f"{bad}:1: invalid UTF-8 at byte 14 of the line (0xe9)" in " ".join(res.output.split())
    extra = stage_options("tiny", "lm", device="cpu", decode_errors="replace")
    assert extra["lm losses"] == ["--decode-errors", "replace", "--device", "cpu"]
    assert all("--decode-errors" not in v for v in stage_options("tiny", "lm").values())
