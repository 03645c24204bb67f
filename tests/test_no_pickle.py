"""Issue 21, part 3: opening a shared run directory runs none of its author's code.

Each test plants a pickle that writes a marker file when unpickled, where quanta reads a model
file or a checkpoint, and checks that the command refuses it in one line and the marker never
appears. (quanta < 0.2 unpickled both files with ``torch.load(weights_only=False)``.)
"""

import shlex
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from quanta._tensorfile import load_tree, save_tree
from quanta._validation import QuantaInputError
from quanta.cli import app
from quanta.config import build_config, parse_overrides
from quanta.parity import ParityConfig
from quanta.parity.run import CHECKPOINT, MODEL, OLD_CHECKPOINT, OLD_MODEL, run_parity

ARGS = shlex.split(
    "--n-tasks 4 --n-bits 8 --widths 4,8 --batch-size 16 --test-per-task 4 --eval-points 3 "
    "--threads 1 --steps 30 --checkpoint-seconds 0"
)


class _Payload:
    """Unpickling this runs ``exec`` of code that creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('ran')",))


def _plant(path: Path, marker: Path) -> None:
    """The pickle at ``path``, and a manifest that vouches for it: whoever plants a file can
    rewrite the manifest too, so the loader itself must never unpickle (the recorded content
    hashes of issue 21 part 2 would otherwise refuse the planted file before it is opened)."""
    import json

    torch.save({"state_dict": _Payload(marker)}, path)
    manifest = path.parent / "manifest.json"
    record = json.loads(manifest.read_text())
    record.pop("files", None)  # as a run written before hashes were kept
    manifest.write_text(json.dumps(record))


def _cfg() -> ParityConfig:
    return build_config(ParityConfig, layers=[("cli", parse_overrides(ARGS))])


@pytest.fixture
def marker(tmp_path):
    m = tmp_path / "PWNED"
    yield m
    assert not m.exists(), "a planted pickle ran"


def _one_line(res) -> str:
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output and len(res.output.strip().splitlines()) <= 3
    return " ".join(res.output.split())


@pytest.mark.parametrize("name", [OLD_MODEL, MODEL])
def test_planted_model_file_is_inert_through_qdg_parity(tmp_path, marker, name):
    run = tmp_path / "run"
    run_parity(_cfg(), run)
    (run / MODEL).unlink()
    _plant(run / name, marker)
    res = CliRunner().invoke(app, ["qdg", "parity", str(run), "--out", str(tmp_path / "q")])
    text = _one_line(res)
    assert str(run / name) in text
    assert ("old pickle format" if name == OLD_MODEL else "Cannot read") in text
    assert not (tmp_path / "q").exists()


@pytest.mark.parametrize("name", [OLD_CHECKPOINT, CHECKPOINT])
def test_planted_checkpoint_is_inert_through_parity_train_resume(tmp_path, marker, name):
    run = tmp_path / "run"
    calls = {"n": 0}

    def stop() -> bool:
        calls["n"] += 1
        return calls["n"] > 10

    with pytest.raises(KeyboardInterrupt):
        run_parity(_cfg(), run, stop=stop)
    (run / CHECKPOINT).unlink()
    _plant(run / name, marker)
    res = CliRunner().invoke(app, ["parity", "train", "--out", str(run), *ARGS, "--quiet"])
    text = _one_line(res)
    assert str(run / name) in text


def test_planted_model_file_is_inert_through_reproduce(tmp_path, marker):
    out = tmp_path / "r"
    runner = CliRunner()
    args = ["reproduce", "--preset", "tiny", "--out", str(out), "--only"]
    first = runner.invoke(app, [*args, "toy-params"])
    assert first.exit_code == 0, first.output
    params = out / "toy" / "params"
    (params / MODEL).unlink()
    _plant(params / OLD_MODEL, marker)
    res = runner.invoke(app, [*args, "toy-params,qdg-parity"])
    assert res.exit_code == 1, res.output
    assert "old pickle format" in " ".join(res.output.split())


def test_tree_round_trip_is_exact_and_keeps_keys_tuples_and_strings(tmp_path):
    f = tmp_path / "t.safetensors"
    tree = {
        "step": 7,
        "lr": 0.1 + 0.2,  # not representable in a short decimal: repr must round-trip
        "state": {0: {"exp_avg": torch.randn(3, 2, dtype=torch.float64)}, 1: {}},
        "betas": (0.9, 0.999),
        "gen": torch.Generator().manual_seed(3).get_state(),
        "blocks": [{"split": np.array(["test", "val", "ü"], dtype=object), "x": np.arange(3)}],
        "none": None,
        "inf": float("inf"),
    }
    save_tree(f, tree)
    back = load_tree(f)
    assert back["step"] == 7 and back["lr"] == tree["lr"] and back["betas"] == (0.9, 0.999)
    assert list(back["state"]) == [0, 1] and back["state"][1] == {}
    assert torch.equal(back["state"][0]["exp_avg"], tree["state"][0]["exp_avg"])
    assert torch.equal(back["gen"], tree["gen"]) and back["none"] is None
    split = back["blocks"][0]["split"]
    assert split.dtype == object and split.tolist() == ["test", "val", "ü"]
    assert back["blocks"][0]["x"].tolist() == [0, 1, 2] and back["inf"] == float("inf")


def test_a_damaged_tree_file_is_named_in_one_line(tmp_path):
    f = tmp_path / "t.safetensors"
    save_tree(f, {"w": torch.ones(4)})
    f.write_bytes(f.read_bytes()[:20])
    with pytest.raises(QuantaInputError, match=r"Cannot read '.*t\.safetensors'"):
        load_tree(f)
