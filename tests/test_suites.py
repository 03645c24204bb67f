"""The suite registry (hub suites counted on the meta device, revision names), user suite files,
checkpoint fingerprints and duplicates, and the bad inputs of issue 18 — on tiny models built
from configs and saved here (no hub)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from quanta._validation import QuantaInputError
from quanta.cli import app
from quanta.lm.registry import (
    GPT2_ARCHS,
    OLMO_1B,
    PYTHIA,
    SMOLLM2_ARCHS,
    SUITES,
    arch_params,
    non_embedding_params,
    parse_revision,
)
from quanta.lm.suite import resolve_suite

# ----------------------------------------------------------------------------- builders


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory) -> Path:
    """A small BPE tokenizer saved alone (models built here copy it beside them)."""
    from quanta.lm.corpus import load_documents
    from quanta.lm.minisuite import train_tokenizer

    out = tmp_path_factory.mktemp("tok")
    texts = [d.text for d in load_documents("stdlib:train", max_docs=5)[0]]
    train_tokenizer(texts, 300, out)
    return out


def _neox(path: Path, tok: Path | None, *, seed: int = 0, context: int = 256) -> Path:
    """A one-layer GPT-NeoX saved at ``path`` (with the tokenizer of ``tok`` unless None)."""
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    cfg = GPTNeoXConfig(
        vocab_size=320,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=context,
    )
    torch.manual_seed(seed)
    GPTNeoXForCausalLM(cfg).save_pretrained(path)
    if tok is not None:
        for f in tok.iterdir():
            shutil.copy(f, path / f.name)
    return path


def _losses(suite: str, out: Path):
    args = ["lm", "losses", "--suite", suite, "--max-docs", "2", "--quiet", "--out", str(out)]
    return CliRunner().invoke(app, args)


def _one_line_refusal(res, out: Path, *needles: str) -> None:
    assert res.exit_code == 2, res.output
    assert len(res.output.strip().splitlines()) == 1, res.output
    text = " ".join(res.output.split())
    for needle in needles:
        assert needle in text, text
    assert "Traceback" not in text and not out.exists()


# ----------------------------------------------------------------------------- registry


def _llama_n(d: int, layers: int, heads: int, kv: int, inner: int) -> int:
    """Llama's non-embedding count by hand: q, o (d²), k, v (d × kv·d/heads), gate/up/down
    (3·d·inner), two RMSNorms per layer and the final one."""
    kv_dim = kv * d // heads
    return layers * (2 * d * d + 2 * d * kv_dim + 3 * d * inner + 2 * d) + d


def test_every_hub_suite_is_counted_on_the_meta_device_as_by_hand():
    # Pythia: the paper's table (PAPER.md §3), for all three Pythia suites.
    for name in ("pythia", "pythia-v0", "pythia-deduped"):
        assert list(SUITES[name].models.values()) == list(PYTHIA.values()), name
    # Independent closed forms: GPT-2 (12·L·d² + 13·L·d + 2·d; no position embeddings, as
    # Kaplan's N), OLMo (no norm parameters: 4·d² + 3·d·inner per layer), Llama (above).
    for size, (layers, d) in {"small": (12, 768), "medium": (24, 1024)}.items():
        assert arch_params(GPT2_ARCHS[size]) == 12 * layers * d * d + 13 * layers * d + 2 * d
    assert arch_params(OLMO_1B) == 16 * (4 * 2048**2 + 3 * 2048 * 8192)
    for arch in SMOLLM2_ARCHS.values():
        n = _llama_n(arch.hidden, arch.layers, arch.heads, arch.kv_heads, arch.intermediate)
        assert arch_params(arch) == n
    assert arch_params(SMOLLM2_ARCHS["135M"]) == 106_203_456  # 134.5M minus 49152 × 576
    for suite in SUITES.values():
        assert all(m.n_params > 0 for m in suite.members), suite.name


def test_polypythias_are_a_seed_axis_of_one_size():
    refs = resolve_suite("polypythia-160m")
    assert [r.source for r in refs] == ["EleutherAI/pythia-160m"] + [
        f"EleutherAI/pythia-160m-seed{k}" for k in range(1, 10)
    ]
    assert [r.seed for r in refs] == list(range(10)) and {r.revision for r in refs} == {
        "step143000"
    }
    assert SUITES["polypythia-160m"].axis == "seed"
    assert set(SUITES["polypythia-160m"].models.values()) == {PYTHIA["pythia-160m"]}
    data = resolve_suite("polypythia-160m-data-seed")
    assert [r.source.split("/")[1] for r in data][1:] == [
        f"pythia-160m-data-seed{k}" for k in (1, 2, 3)
    ]
    assert data[2].tag == "data seed 2"
    weight = resolve_suite("polypythia-160m-weight-seed", checkpoints="all", revisions="step512")
    assert weight[-1].label() == "pythia-160m-weight-seed3@step512"
    crfm = resolve_suite("crfm-gpt2-medium")
    assert crfm[0].source == "stanford-crfm/arwen-gpt2-medium-x21" and crfm[0].seed == 21
    assert [r.seed for r in crfm] == [21, 49, 81, 343, 777]


@pytest.mark.parametrize(
    ("revision", "parsed"),
    [
        ("step143000", (143000, None)),
        ("step0", (0, None)),
        ("step20000-tokens84B", (20000, 84 * 10**9)),
        ("step5-tokens10M", (5, 10**7)),
        ("step-1200000", (1200000, None)),
        ("checkpoint-400000", (400000, None)),
        ("main", (None, None)),
        ("step12a", (None, None)),
        (None, (None, None)),
    ],
)
def test_revision_names_are_parsed_into_steps_and_tokens(revision, parsed):
    assert parse_revision(revision) == parsed


def test_pattern_suites_check_revision_names_offline_and_need_revisions_for_dynamics():
    refs = resolve_suite("olmo-1b", checkpoints="all", revisions="step2000-tokens8B,main")
    assert [r.label() for r in refs] == ["OLMo-1B-hf@main", "OLMo-1B-hf@step2000-tokens8B"]
    with pytest.raises(QuantaInputError, match="'olmo-1b' has no revision 'step1500-tokens6B'"):
        resolve_suite("olmo-1b", checkpoints="all", revisions="step1500-tokens6B")
    with pytest.raises(QuantaInputError, match="'smollm2' has no revision 'step40000'"):
        resolve_suite("smollm2", checkpoints="SmolLM2-135M", revisions="step40000")
    with pytest.raises(QuantaInputError, match="no default checkpoints; name them with"):
        resolve_suite("crfm-gpt2-small", checkpoints="all")
    refs = resolve_suite("smollm2", checkpoints="SmolLM2-360M", revisions="step-40000")
    assert refs[0].source == "HuggingFaceTB/SmolLM2-360M-intermediate-checkpoints"
    assert refs[0].tokens() is None  # SmolLM2's batch is not in the registry: unknown


def test_tokens_seen_come_from_the_revision_name_or_the_suites_batch():
    (ref,) = resolve_suite("pythia-deduped", checkpoints="pythia-70m-deduped", revisions="step8")
    assert ref.tokens() == 8 * 1024 * 2048  # Pythia: 1024 sequences of 2048 tokens per step
    assert resolve_suite("polypythia-14m")[3].tokens() == 143000 * 1024 * 2048
    (olmo,) = resolve_suite("olmo-1b", checkpoints="all", revisions="step10000-tokens41B")
    assert olmo.tokens() == 41 * 10**9


def test_suite_show_lists_every_suite_and_one_suite():
    res = CliRunner().invoke(app, ["lm", "suite", "show"], env={"COLUMNS": "220"})
    assert res.exit_code == 0, res.output
    for name in SUITES:
        assert re.search(rf"│\s+{re.escape(name)} │", res.output), name
    assert "18,915,328 … 11,327,027,200" in res.output  # pythia's N range
    res = CliRunner().invoke(app, ["lm", "suite", "show", "polypythia-70m"])
    assert res.exit_code == 0, res.output
    assert res.output.count("18,915,328") == 10 and "pythia-70m-seed9" in res.output


def test_position_embeddings_are_not_counted_in_n():
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(n_embd=16, n_layer=1, n_head=2, n_positions=32, vocab_size=50)
    model = GPT2LMHeadModel(cfg)
    total = sum(p.numel() for p in model.parameters())  # wte tied with lm_head: counted once
    assert non_embedding_params(model) == total - 50 * 16 - 32 * 16


# ----------------------------------------------------------------------------- user suites


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_a_user_suite_file_runs_with_its_seeds_labels_and_sizes(tmp_path, tokenizer_dir):
    _neox(tmp_path / "small" / "step1", tokenizer_dir, seed=0)
    _neox(tmp_path / "small" / "step2", tokenizer_dir, seed=1)
    suite = _write(
        tmp_path / "suite.toml",
        'description = "two checkpoints"\n'
        '[[model]]\nsource = "small"\nrevision = "step1"\nseed = 3\nlabel = "early"\n'
        '[[model]]\nsource = "small"\nrevision = "step2"\nn_params = 12345\n',
    )
    refs = resolve_suite(str(suite))
    assert [r.label() for r in refs] == ["small@step1", "small@step2"]
    assert refs[0].source == str((tmp_path / "small").resolve())  # relative to the file
    res = _losses(str(suite), tmp_path / "L")
    assert res.exit_code == 0, res.output
    models = pd.read_parquet(tmp_path / "L" / "models.parquet")
    assert models["seed"].tolist() == [3, -1] and models["tag"].tolist() == ["early", ""]
    assert models["step"].tolist() == [1, 2]
    assert models["n_params"].iloc[1] == 12345 and models["n_params"].iloc[0] != 12345
    res = CliRunner().invoke(app, ["lm", "suite", "show", str(suite)], env={"COLUMNS": "200"})
    assert res.exit_code == 0 and "counted when loaded" in res.output and "12,345" in res.output


@pytest.mark.parametrize(
    ("body", "needles"),
    [
        (
            '[[model]]\nsource = "nowhere/at/all"\n',
            ["Model 'nowhere/at/all' of [[model]] 1", "does not exist"],
        ),
        ('[[model]]\nsource = "./gone"\n', ["Model './gone' of [[model]] 1", "does not exist"]),
        (
            '[[model]]\nsource = "m"\nrevision = "step9"\n',
            ["has no revision 'step9'", "it has step1"],
        ),
        ('[[model]]\nsource = "m"\nrevison = "step1"\n', ["Unknown key 'revison'", "'revision'?"]),
        ('[[model]]\nsource = "m"\nseed = "one"\n', ["'seed' of [[model]] 1", "must be an int"]),
        ('[[model]\nsource = "m"\n', ["is not valid TOML"]),
        ('description = "empty"\n', ["has no models"]),
    ],
)
def test_a_bad_suite_file_is_one_line_nothing_written(tmp_path, tokenizer_dir, body, needles):
    _neox(tmp_path / "m" / "step1", tokenizer_dir)
    suite = _write(tmp_path / "s.toml", body)
    _one_line_refusal(_losses(str(suite), tmp_path / "L"), tmp_path / "L", *needles)


def test_a_missing_suite_file_is_one_line(tmp_path):
    out = tmp_path / "L"
    _one_line_refusal(_losses(str(tmp_path / "no.toml"), out), out, "does not exist")


def test_a_user_suite_mixing_context_lengths_is_refused(tmp_path, tokenizer_dir):
    _neox(tmp_path / "short", tokenizer_dir, context=128)
    _neox(tmp_path / "long", tokenizer_dir, context=256)
    suite = _write(tmp_path / "s.toml", '[[model]]\nsource = "short"\n[[model]]\nsource = "long"\n')
    out = tmp_path / "L"
    _one_line_refusal(
        _losses(str(suite), out), out, "must share one context length", "'short' reads 128"
    )
    # The same two as a plain list: documents are cut to the shorter context instead.
    res = _losses(f"{tmp_path / 'short'},{tmp_path / 'long'}", out)
    assert res.exit_code == 0, res.output
    assert json.loads((out / "manifest.json").read_text())["config"]["max_len"] == 128


# ----------------------------------------------------------------------------- bad models


def test_a_model_directory_without_a_tokenizer_is_one_line(tmp_path, tokenizer_dir):
    good = _neox(tmp_path / "good", tokenizer_dir)
    bare = _neox(tmp_path / "bare", None)
    out = tmp_path / "L"
    for suite in (str(bare), f"{good},{bare}"):
        _one_line_refusal(
            _losses(suite, out),
            out,
            f"Model directory '{bare}' has no tokenizer",
            "tokenizer.save_pretrained",
        )


def test_a_non_causal_model_is_refused(tmp_path, tokenizer_dir):
    from transformers import BertConfig, BertForMaskedLM

    good = _neox(tmp_path / "good", tokenizer_dir)
    bert = tmp_path / "bert"
    cfg = BertConfig(
        vocab_size=320,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
    )
    BertForMaskedLM(cfg).save_pretrained(bert)
    for f in tokenizer_dir.iterdir():
        shutil.copy(f, bert / f.name)
    out = tmp_path / "L"
    _one_line_refusal(
        _losses(f"{good},{bert}", out),
        out,
        "'bert' is not a causal language model",
        "an encoder",
    )


# ----------------------------------------------------------------------------- fingerprints


def test_a_planted_duplicate_checkpoint_is_flagged_in_one_warning(tmp_path, tokenizer_dir):
    base = tmp_path / "m"
    _neox(base / "step1", tokenizer_dir, seed=0)
    _neox(base / "step2", tokenizer_dir, seed=1)
    shutil.copytree(base / "step2", base / "step3")  # step3 serves step2's weights (#205)
    suite = _write(
        tmp_path / "s.toml",
        "".join(f'[[model]]\nsource = "m"\nrevision = "step{k}"\n' for k in (1, 2, 3)),
    )
    res = _losses(str(suite), tmp_path / "L")
    assert res.exit_code == 0, res.output
    warnings = [line for line in res.output.splitlines() if "warning:" in line]
    assert len(warnings) == 1, res.output
    assert "1 checkpoint holds the same weights" in warnings[0]
    assert "m@step3 = m@step2" in warnings[0]
    models = pd.read_parquet(tmp_path / "L" / "models.parquet")
    assert models["duplicate_of"].tolist() == ["", "", "m@step2"]
    prints = models["weights_fingerprint"].tolist()
    assert prints[1] == prints[2] != prints[0] and prints[0].startswith("xxh3_128:")
    from quanta.lm.fingerprint import integrity_line

    line = integrity_line(models)  # the report's line
    assert line.startswith("Duplicate checkpoints: 1 checkpoint") and "m@step3 = m@step2" in line
    assert integrity_line(models.iloc[:2]).startswith("Checkpoint integrity: the weights of all 2")


def test_the_fingerprint_sees_every_weight_and_no_file_layout():
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    from quanta.lm.fingerprint import weights_fingerprint

    cfg = GPTNeoXConfig(
        vocab_size=64,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
    )
    torch.manual_seed(0)
    a = GPTNeoXForCausalLM(cfg)
    b = GPTNeoXForCausalLM(cfg)
    b.load_state_dict(a.state_dict())
    assert weights_fingerprint(a) == weights_fingerprint(b)
    for name, p in b.named_parameters():  # one element of any tensor changes it
        old = p.detach().view(-1)[-1].item()
        with torch.no_grad():
            p.view(-1)[-1] = old + 1.0
        assert weights_fingerprint(a) != weights_fingerprint(b), name
        with torch.no_grad():
            p.view(-1)[-1] = old
    assert weights_fingerprint(a) == weights_fingerprint(b.to(torch.float64).to(torch.float32))


def test_a_suite_file_naming_a_hub_model_not_reachable_is_one_line(tmp_path, monkeypatch):
    import huggingface_hub
    from huggingface_hub import constants

    def no_request(*_, **__):
        raise AssertionError("offline: no request may be sent to the hub")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty"))
    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", no_request)
    suite = _write(
        tmp_path / "s.toml", '[[model]]\nsource = "EleutherAI/pythia-70m"\nrevision = "step9"\n'
    )
    out = tmp_path / "L"
    _one_line_refusal(
        _losses(str(suite), out), out, "Cannot load 'pythia-70m@step9'", "not in the local cache"
    )
