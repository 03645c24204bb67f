"""Content hashes of finished files: recorded at completion, checked on reuse (a damaged file
is named and recomputed, or refused as input), and by ``quanta verify``."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from cli_args import TINY_PARITY_TRAIN
from quanta.cli import app
from quanta.integrity import HASH, file_digest, verify_tree

TRAIN = TINY_PARITY_TRAIN


def _train(out):
    res = CliRunner().invoke(app, [*TRAIN, "--out", str(out)])
    assert res.exit_code == 0, res.output
    return " ".join(res.output.split())


def _garble(path, *, truncate=False):
    """Flip one byte in the middle (same size), or cut the file in half."""
    data = bytearray(path.read_bytes())
    if truncate:
        path.write_bytes(bytes(data[: len(data) // 2]))
    else:
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))


def test_a_complete_run_records_every_file(tmp_path):
    _train(tmp_path / "run")
    files = json.loads((tmp_path / "run" / "manifest.json").read_text())["files"]
    assert sorted(files) == ["curves.parquet", "model.safetensors"]
    for name, rec in files.items():  # an independent read of the file
        assert rec["size"] == (tmp_path / "run" / name).stat().st_size
        assert rec[HASH] == file_digest(tmp_path / "run" / name)


@pytest.mark.parametrize("truncate", [False, True], ids=["garbled", "truncated"])
def test_a_damaged_file_is_named_and_recomputed(tmp_path, truncate):
    out = tmp_path / "run"
    _train(out)
    before = pd.read_parquet(out / "curves.parquet")
    _garble(out / "curves.parquet", truncate=truncate)
    output = _train(out)
    assert f"'{out / 'curves.parquet'}': " in output and "recomputing it" in output
    assert "nothing to do" not in output  # not reused
    pd.testing.assert_frame_equal(pd.read_parquet(out / "curves.parquet"), before)
    assert verify_tree(out)[2] == []


def test_a_damaged_input_is_refused_in_one_line(tmp_path):
    out = tmp_path / "run"
    _train(out)
    _garble(out / "model.safetensors")
    for args in (["parity", "analyze", str(out)], ["qdg", "parity", str(out)]):
        res = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "x")])
        assert res.exit_code == 2, res.output
        line = " ".join(res.output.split())
        assert f"'{out / 'model.safetensors'}': content differs" in line and "Traceback" not in line
    assert not (tmp_path / "x").exists()


def test_verify_names_each_damaged_file(tmp_path):
    root = tmp_path / "all"
    for name in ("a", "b"):
        _train(root / name)
    res = CliRunner().invoke(app, ["verify", str(root)])
    assert res.exit_code == 0 and "4 files in 2 directories, all as recorded" in res.output
    (root / "a" / "curves.parquet").unlink()
    _garble(root / "b" / "model.safetensors", truncate=True)
    res = CliRunner().invoke(app, ["verify", str(root)])
    assert res.exit_code == 1
    lines = [ln for ln in res.output.splitlines() if ln.startswith("damaged: ")]
    model = root / "b" / "model.safetensors"
    recorded = json.loads((root / "b" / "manifest.json").read_text())["files"][model.name]
    assert lines == [
        f"damaged: '{root / 'a' / 'curves.parquet'}': missing",
        f"damaged: '{model}': size {model.stat().st_size:,} bytes, recorded {recorded['size']:,}",
    ]
    res = CliRunner().invoke(app, ["verify", str(tmp_path / "nothing")])
    assert res.exit_code == 2 and "is not a directory" in res.output


def test_lm_losses_recompute_damaged_tables_and_refuse_damaged_weights(tiny_suite, tmp_path):
    suite = tmp_path / "suite"
    shutil.copytree(tiny_suite, suite)  # the fixture is shared: damage a copy
    out = tmp_path / "losses"
    args = ["lm", "losses", "--suite", str(suite), "--max-docs", "2", "--max-len", "48"]
    res = CliRunner().invoke(app, [*args, "--out", str(out)])
    assert res.exit_code == 0, res.output
    losses, models = (out / "losses.npy").read_bytes(), (out / "models.parquet").read_bytes()
    _garble(out / "losses.npy")
    _garble(out / "models.parquet", truncate=True)
    (out / "columns" / "1.npy").unlink()
    res = CliRunner().invoke(app, [*args, "--out", str(out)])
    assert res.exit_code == 0, res.output
    said = " ".join(res.output.split())
    for name in ("losses.npy", "models.parquet", "columns/1.npy"):
        assert f"'{out / name}': " in said
    assert (out / "losses.npy").read_bytes() == losses
    table = pd.read_parquet(out / "models.parquet")
    pd.testing.assert_frame_equal(
        table.drop(columns=["seconds", "tokens_per_second"]),
        pd.read_parquet(__import__("io").BytesIO(models)).drop(
            columns=["seconds", "tokens_per_second"]
        ),
    )
    assert verify_tree(out)[2] == []
    # neox-h16-l1: not the last size, so training it again must not move it to the end.
    weights = sorted(suite.glob("models/*/step*/model.safetensors"))[0]
    _garble(weights)
    res = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "other")])
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert f"'{weights}': content differs" in " ".join(res.output.split())
    assert not (tmp_path / "other").exists()
    # The suite trains that model again, in its place: the losses' config stays the same.
    order = json.loads((suite / "suite.json").read_text())["models"]
    res = CliRunner().invoke(app, ["lm", "suite", "train", "--preset", "tiny", "--out", str(suite)])
    assert res.exit_code == 0, res.output
    assert f"'{weights}': content differs" in " ".join(res.output.split())
    assert [m["name"] for m in json.loads((suite / "suite.json").read_text())["models"]] == [
        m["name"] for m in order
    ]
    res = CliRunner().invoke(app, [*args, "--out", str(out)])
    assert res.exit_code == 0 and "different config" not in res.output
    assert np.load(out / "losses.npy").shape[1] == 4
