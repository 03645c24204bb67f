"""Issue 18 end to end through the CLI, as a researcher runs it on their own non-NeoX models:
tiny GPT-2, Llama and Granite (``logits_scaling``) directories built from configs and saved with
a real BPE tokenizer → ``lm losses`` → ``qdg run --similarity exact`` → ``qdg export``, checked
against ``model(ids).logits`` and the parameter-selection oracle of tests/archs.py."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from archs import _config, linear_weights
from quanta.cli import app

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def suite(tmp_path_factory) -> dict[str, Path]:
    """Model directories (vocab 320 over a 300-token BPE tokenizer). Llama and Granite share
    their initial weights (seed 0, equal shapes) but not their logits: not one checkpoint."""
    from transformers import AutoModelForCausalLM

    from quanta.lm.corpus import load_documents
    from quanta.lm.minisuite import train_tokenizer

    root = tmp_path_factory.mktemp("e2e")
    tok = root / "tok"
    train_tokenizer([d.text for d in load_documents("stdlib:train", max_docs=4)[0]], 300, tok)
    dirs = {}
    for arch in ("gpt2", "llama", "granite"):
        torch.manual_seed(0)
        AutoModelForCausalLM.from_config(_config(arch, 320)).save_pretrained(root / arch)
        for f in tok.iterdir():
            shutil.copy(f, root / arch / f.name)
        dirs[arch] = root / arch
    return dirs


def _cli(*args: str):
    res = CliRunner().invoke(app, list(args))
    assert res.exit_code == 0, res.output
    return res


def _own_losses(model_dir: Path, ids: np.ndarray) -> np.ndarray:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir).float().eval()
    x = torch.as_tensor(ids, dtype=torch.long)[None]
    with torch.no_grad():
        logits = model(input_ids=x).logits[0, :-1].double()
    return torch.nn.functional.cross_entropy(logits, x[0, 1:], reduction="none").numpy()


def test_losses_qdg_exact_and_export_on_non_neox_models(suite, tmp_path):
    losses_dir, qdg_dir = tmp_path / "L", tmp_path / "Q"
    names = ",".join(str(suite[a]) for a in ("gpt2", "llama", "granite"))
    res = _cli(
        "lm", "losses", "--suite", names, "--max-docs", "6", "--quiet", "--out", str(losses_dir)
    )
    assert "same weights" not in res.output  # llama and granite compute different losses
    models = pd.read_parquet(losses_dir / "models.parquet")
    assert models["duplicate_of"].tolist() == ["", "", ""]
    assert models.set_index("label")["head"].to_dict() == {
        "gpt2": "chunked",
        "llama": "chunked",
        "granite": "full",
    }
    # Oracle: the losses column of document 0 is the cross-entropy of the model's own logits.
    index = pd.read_parquet(losses_dir / "corpus" / "index.parquet")
    tokens, offsets = (np.load(losses_dir / "corpus" / f) for f in ("tokens.npy", "offsets.npy"))
    losses = np.load(losses_dir / "losses.npy")
    for col, arch in enumerate(("gpt2", "llama", "granite")):
        got = losses[(index["doc_id"] == 0).to_numpy(), col]
        np.testing.assert_allclose(
            got, _own_losses(suite[arch], tokens[offsets[0] : offsets[1]]), atol=1e-5
        )

    res = _cli(
        "qdg", "run", str(losses_dir), "--model", "granite", "--out", str(qdg_dir),
        "--similarity", "exact", "--threshold", "auto", "--n", "24", "--min-samples", "12",
        "--ks", "2,3", "--quiet",
    )  # fmt: skip
    # The head fallback is one "warning:" line, not Python's form with the source line.
    assert "HeadFallbackWarning" not in res.output and "resolve_head(" not in res.output
    assert sum("warning: The chunked output head" in line for line in res.output.splitlines()) == 1
    grads = json.loads((qdg_dir / "grads.json").read_text())
    from transformers import AutoModelForCausalLM

    oracle = linear_weights(AutoModelForCausalLM.from_pretrained(suite["granite"]))
    assert set(grads["params"]) == oracle, grads  # no embedding, norm or head
    assert grads["head"] == "full"  # Granite's logits are scaled: the model's own forward

    _cli("qdg", "export", str(qdg_dir), "--format", "feature-circuits")
    exported = json.loads((qdg_dir / "export" / "feature-circuits" / "K3.json").read_text())
    samples = sum(len(examples) for examples in exported.values())
    assert samples == len(pd.read_parquet(qdg_dir / "samples.parquet"))
    example = next(iter(next(iter(exported.values())).values()))
    assert set(example) == {"context", "answer"} and all(
        isinstance(t, str) for t in example["context"]
    )
    _cli("qdg", "export", str(qdg_dir), "--format", "parquet")
    table = pd.read_parquet(qdg_dir / "export" / "clusters.parquet")
    assert sorted(table["K"].unique()) == [2, 3]


def test_windows_on_non_neox_models_equal_each_window_scored_alone(suite, tmp_path):
    # --windows 3 --max-len 32: every window's losses are the model's own cross-entropy on
    # that window's tokens read from its start (GPT-2's learned positions restart at 0).
    out = tmp_path / "W"
    names = ",".join(str(suite[a]) for a in ("gpt2", "llama", "granite"))
    args = ["--max-docs", "3", "--max-len", "32", "--windows", "3", "--quiet", "--out", str(out)]
    _cli("lm", "losses", "--suite", names, *args)
    tokens, offsets = (np.load(out / "corpus" / f) for f in ("tokens.npy", "offsets.npy"))
    docs = pd.read_parquet(out / "corpus" / "docs.parquet")
    assert any(name.endswith("#2") for name in docs["name"])  # long documents were cut
    assert (np.diff(offsets) <= 32).all()
    from transformers import AutoTokenizer

    from quanta.lm.corpus import load_documents

    first = load_documents("stdlib:test", max_docs=1)[0][0]
    whole = AutoTokenizer.from_pretrained(suite["gpt2"])(first.text, add_special_tokens=False)
    assert docs["name"][:3].tolist() == [first.name, f"{first.name}#1", f"{first.name}#2"]
    assert tokens[: offsets[3]].tolist() == whole["input_ids"][:96]  # consecutive, no gap
    losses, rows = np.load(out / "losses.npy"), np.cumsum([0, *(np.diff(offsets) - 1)])
    for col, arch in enumerate(("gpt2", "llama", "granite")):
        for d in range(len(offsets) - 1):
            own = _own_losses(suite[arch], tokens[offsets[d] : offsets[d + 1]])
            np.testing.assert_allclose(losses[rows[d] : rows[d + 1], col], own, atol=2e-4)
