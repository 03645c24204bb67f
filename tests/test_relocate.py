"""Relocatable run directories: inputs inside the run's tree are recorded relative to it, so a
moved or copied tree resumes (every run reused), verifies and reads its inputs from its new
place."""

import json
import shutil

from typer.testing import CliRunner

from quanta.cli import app
from quanta.store import portable_path, resolve_paths

QDG = ["--model", "-1", "--threshold", "auto", "--n", "60", "--ks", "3,6", "--quiet"]


def _run(args):
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    return " ".join(res.output.split())


def _losses(root):
    return ["lm", "losses", "--suite", str(root / "suite"), "--max-docs", "8", "--quiet"]


def test_a_moved_tree_resumes_and_verifies(tiny_suite, tmp_path):
    first = tmp_path / "first"
    shutil.copytree(tiny_suite, first / "suite")
    _run([*_losses(first), "--out", str(first / "losses")])
    _run(["qdg", "run", str(first / "losses"), "--out", str(first / "qdg"), *QDG])
    config = json.loads((first / "losses" / "manifest.json").read_text())["config"]
    assert config["suite"] == "../suite"
    assert {m["source"] for m in config["models"]} <= {
        f"../suite/models/{m['name']}" for m in config["models"]
    }
    qdg_config = json.loads((first / "qdg" / "manifest.json").read_text())["config"]
    assert qdg_config["losses"] == "../losses"

    moved = tmp_path / "elsewhere" / "moved"
    shutil.move(first, moved)
    # The expensive files (losses per model, gradients); losses.npy is always reassembled.
    expensive = [*moved.glob("losses/columns/*.npy"), moved / "qdg" / "grads.npy"]
    stamps = {p: p.stat().st_mtime_ns for p in expensive}
    assert len(stamps) == 5, sorted(stamps)
    losses = (moved / "losses" / "losses.npy").read_bytes()
    said = _run([*_losses(moved), "--out", str(moved / "losses")])
    assert "different config" not in said
    said = _run(["qdg", "run", str(moved / "losses"), "--out", str(moved / "qdg"), *QDG])
    assert {p: p.stat().st_mtime_ns for p in expensive} == stamps  # all reused
    assert (moved / "losses" / "losses.npy").read_bytes() == losses
    res = CliRunner().invoke(app, ["verify", str(moved)])
    assert res.exit_code == 0 and "all as recorded" in res.output
    # Its inputs are read from the new place: the QDG scale stage reads losses and models.
    _run(["qdg", "scale", str(moved / "qdg"), "--losses", str(moved / "losses")])


def test_portable_paths_round_trip(tmp_path):
    (tmp_path / "tree" / "suite").mkdir(parents=True)
    (tmp_path / "corpus.jsonl").write_text("{}\n")
    run = tmp_path / "tree" / "losses"
    inside = portable_path(tmp_path / "tree" / "suite", run)
    outside = portable_path(tmp_path / "corpus.jsonl", run)
    assert (inside, outside) == ("../suite", str((tmp_path / "corpus.jsonl").resolve()))
    assert portable_path("EleutherAI/pythia-70m", run) == "EleutherAI/pythia-70m"
    stored = {"suite": f"{inside},EleutherAI/pythia-70m", "m": [{"source": "./x"}], "n": 3}
    assert resolve_paths(stored, run) == {
        "suite": f"{tmp_path / 'tree' / 'suite'},EleutherAI/pythia-70m",
        "m": [{"source": str(run / "x")}],
        "n": 3,
    }
