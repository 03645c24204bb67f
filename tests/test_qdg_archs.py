"""QDG's gradients and losses on every family of Hugging Face causal LM (tests/archs.py):
each checked against an independent oracle computed from ``model(input_ids).logits``."""

import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from archs import ARCHS, SAMPLES, build, linear_weights, naive_gradients, random_corpus
from archs import reference_losses as model_losses
from quanta._validation import QuantaInputError
from quanta.lm.corpus import tokenize_documents
from quanta.lm.head import HeadFallbackWarning, check_causal, resolve_head
from quanta.lm.losses import token_losses
from quanta.qdg.grads import CountSketch, exact_gram, param_selection, per_token_gradients

GRAM_BLOCK = 997  # prime: blocks split tensors and the last block is short
SKETCH_K = 256


@pytest.fixture(scope="module", params=list(ARCHS))
def arch(request):
    name = request.param
    return name, build(name), random_corpus(name)


def _quiet(fn, *args, **kwargs):
    """``fn(...)`` with the head-fallback warning (tested on its own below) silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", HeadFallbackWarning)
        return fn(*args, **kwargs)


def test_losses_are_the_models_own_and_the_head_path_is_chosen_by_the_check(arch):
    name, model, corpus = arch
    plain = ARCHS[name]
    want = model_losses(model, corpus)
    if plain:
        assert resolve_head(model, corpus.doc(0)) == "chunked"
    else:  # scaled or soft-capped logits: the fast head is refused, visibly
        with pytest.warns(HeadFallbackWarning, match="disagrees with the model's own logits"):
            assert resolve_head(model, corpus.doc(0)) == "full"
        with pytest.raises(QuantaInputError, match="disagrees with the model's own logits"):
            token_losses(model, corpus, head="chunked")
        with pytest.raises(QuantaInputError, match="disagrees with the model's own logits"):
            exact_gram(model, corpus, SAMPLES, head="chunked")  # --head: as for the losses
    for head in ("auto", "full", "chunked") if plain else ("auto", "full"):
        got = _quiet(token_losses, model, corpus, head=head, chunk_rows=7)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


def test_exact_gram_and_rows_equal_naive_autograd_of_the_models_logits(arch, tmp_path):
    name, model, corpus = arch
    chosen, _ = param_selection(model)
    names = [n for n, _ in chosen]
    x = naive_gradients(model, corpus, SAMPLES, names)  # (6, dim) float64
    want = (x @ x.T).numpy()
    heads = ("auto", "full") if ARCHS[name] else ("auto",)
    for head in heads:  # "full" on a plain model: the logits_to_keep path, checked too
        gram, info = _quiet(exact_gram, model, corpus, SAMPLES, block_params=GRAM_BLOCK, head=head)
        assert info["head"] == ("chunked" if ARCHS[name] and head == "auto" else "full")
        assert info["params"] == names and info["n_blocks"] == -(-x.shape[1] // GRAM_BLOCK)
        err = np.abs(gram - want).max() / np.abs(want).max()
        assert err < 1e-5, (name, head, err)
    for shared in (False, True):  # one forward per token, or per document (all its rows)
        info = _quiet(
            per_token_gradients, model, corpus, SAMPLES, tmp_path / "g.npy", shared_forward=shared
        )
        np.testing.assert_allclose(
            np.load(tmp_path / "g.npy"), x.numpy(), rtol=0, atol=1e-5 * float(x.abs().max())
        )
        assert info["head"] == ("chunked" if ARCHS[name] else "full")


def test_sketch_is_the_countsketch_of_the_true_gradients_within_its_error_bound(arch, tmp_path):
    _, model, corpus = arch
    names = [n for n, _ in param_selection(model)[0]]
    x = naive_gradients(model, corpus, SAMPLES, names)
    _quiet(
        per_token_gradients,
        model,
        corpus,
        SAMPLES,
        tmp_path / "s.npy",
        projection_dim=SKETCH_K,
        seed=3,
    )
    got = torch.from_numpy(np.load(tmp_path / "s.npy")).double()
    sketch = CountSketch(x.shape[1], SKETCH_K, seed=3)
    want = sketch(x)
    np.testing.assert_allclose(
        got.numpy(), want.numpy(), rtol=0, atol=1e-5 * float(want.abs().max())
    )
    # E<Pa, Pb> = <a, b> with variance ≤ 2 |a|² |b|² / k: six standard deviations.
    norms = x.norm(dim=1)
    bound = 6 * np.sqrt(2 / SKETCH_K) * torch.outer(norms, norms)
    assert ((got @ got.T - x @ x.T).abs() <= bound).all()


# What each family must leave out, and why (the rest: tests/archs.py's oracle).
EXCLUDED = {
    "gpt2": {"transformer.wte.weight": "embedding", "transformer.wpe.weight": "embedding"},
    "llama": {"lm_head.weight": "head", "model.layers.0.input_layernorm.weight": "norm"},
    "opt": {"model.decoder.embed_positions.weight": "embedding"},
    "qwen2": {"model.embed_tokens.weight": "embedding", "model.norm.weight": "norm"},
    "qwen3": {
        "model.layers.0.self_attn.q_norm.weight": "norm",
        "model.layers.1.self_attn.k_norm.weight": "norm",
    },
    "neox": {"gpt_neox.embed_in.weight": "embedding", "lm_head.weight": "head"},
    "gemma2": {"model.layers.1.pre_feedforward_layernorm.weight": "norm"},
    "cohere": {"model.layers.0.input_layernorm.weight": "norm"},
    "granite": {"lm_head.weight": "head"},
    "mamba": {"backbone.embeddings.weight": "embedding", "backbone.norm_f.weight": "norm"},
}


def test_parameters_are_selected_by_what_they_are(arch):
    name, model, _ = arch
    chosen, excluded = param_selection(model)
    assert {n for n, _ in chosen} == linear_weights(model)
    assert EXCLUDED[name].items() <= excluded.items()
    assert set(excluded.values()) <= {"embedding", "head", "norm"}  # all by module, not name
    assert set(excluded) | {n for n, _ in chosen} == {n for n, _ in model.named_parameters()}
    regex, rest = param_selection(model, r"\.0\.")  # --param-filter: the names decide alone
    assert all(".0." in n for n, _ in regex) and set(rest.values()) == {"filter"}


def test_names_are_the_fallback_for_modules_of_unknown_type():
    class Scale(torch.nn.Module):  # a norm whose class says nothing
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.ones(4))

    class Toy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.tok = torch.nn.Embedding(10, 4)
            self.pos_embed = torch.nn.Parameter(torch.zeros(8, 4))
            self.ln_f = Scale()
            self.proj = torch.nn.Linear(4, 4)
            self.out = torch.nn.Linear(4, 10)

        def get_input_embeddings(self):
            return self.tok

        def get_output_embeddings(self):
            return self.out

    chosen, excluded = param_selection(Toy())
    assert [n for n, _ in chosen] == ["proj.weight", "proj.bias"]
    assert excluded == {
        "pos_embed": "embedding (by name)",
        "tok.weight": "embedding",
        "ln_f.weight": "norm (by name)",
        "out.weight": "head",
        "out.bias": "head",
    }


def test_an_encoder_is_refused_as_not_causal():
    bert = build("bert")
    doc = random_corpus("bert").doc(0)
    with pytest.raises(QuantaInputError, match="BertLMHeadModel is not a causal language model"):
        check_causal(bert, doc)
    with pytest.raises(QuantaInputError, match="not a causal language model"):
        resolve_head(bert, doc, head="full")  # every head: the check runs first
    check_causal(build("gpt2"), doc)  # a causal one passes


def _bos_tokenizer():
    """A Llama-style tokenizer whose post-processor adds BOS (as Llama 2 / 3's do)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = ["<s>", "<unk>", "the", "cat", "sat", "on", "mat"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", unk_token="<unk>")


def test_bos_is_added_once_by_bos_and_never_by_the_tokenizer():
    from quanta.lm.corpus import Document

    tok = _bos_tokenizer()
    assert tok("the cat")["input_ids"] == [0, 2, 3]  # the tokenizer's own special tokens add BOS
    docs = [Document("a", "the cat sat"), Document("b", "on the mat")]
    plain = tokenize_documents(docs, tok, max_len=16)
    with_bos = tokenize_documents(docs, tok, max_len=16, bos=True)
    assert [plain.doc(d).tolist() for d in (0, 1)] == [[2, 3, 4], [5, 2, 6]]
    assert [with_bos.doc(d).tolist() for d in (0, 1)] == [[0, 2, 3, 4], [0, 5, 2, 6]]
    assert (plain.bos, with_bos.bos, with_bos.n_predicted) == (False, True, 6)
    index = pd.DataFrame(with_bos.index_table())
    assert index.groupby("doc_id")["pos"].min().tolist() == [1, 1]  # BOS itself is never scored


# --------------------------------------------------------------------------- through the CLI


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    """Saved tiny GPT-2 and Gemma-2 models with a byte-level BPE tokenizer, and their losses
    (``quanta lm losses``: GPT-2 by the chunked head, Gemma-2 by its own logits)."""
    from quanta.lm.corpus import load_documents
    from quanta.lm.losses_run import run_losses
    from quanta.lm.minisuite import train_tokenizer

    root = tmp_path_factory.mktemp("archs")
    texts = [d.text for d in load_documents("stdlib:test", max_docs=8)[0]]
    for name in ("gpt2", "gemma2"):
        tok = train_tokenizer(texts, 300, root / name)
        model = build(name, vocab=len(tok))
        model.save_pretrained(root / name)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", HeadFallbackWarning)
            run_losses(
                str(root / name), "stdlib:test", root / f"{name}-losses", max_docs=4, max_len=48
            )
    return root


QDG = ["--threshold", "auto", "--n", "10", "--min-samples", "10", "--ks", "2,3", "--quiet"]


@pytest.mark.parametrize(("name", "head"), [("gpt2", "chunked"), ("gemma2", "full")])
def test_qdg_run_records_and_prints_the_head_and_the_parameters(model_dirs, tmp_path, name, head):
    import json

    from typer.testing import CliRunner

    from quanta.cli import app

    out = tmp_path / "q"
    losses = str(model_dirs / f"{name}-losses")
    res = CliRunner().invoke(
        app, ["qdg", "run", losses, "--out", str(out), "--similarity", "exact", *QDG]
    )
    assert res.exit_code == 0, res.output
    # said once, as one "warning:" line (cli._common.one_line_warnings), where the fast head is
    # refused
    fallbacks = [line for line in res.output.splitlines() if line.startswith("warning:")]
    assert len(fallbacks) == (head == "full"), res.output
    info = json.loads((out / "grads.json").read_text())
    assert info["head"] == head and f"loss by the {head} head" in res.output
    if name == "gpt2":
        assert info["excluded"]["transformer.wpe.weight"] == "embedding"
        assert "excluded (embedding): transformer.wpe.weight, transformer.wte.weight" in res.output
        assert "transformer.h.*.attn.c_attn.weight ×2" in res.output
    assert sorted(info["params"]) == sorted(linear_weights(build(name, vocab=300)))


def test_a_non_causal_model_is_refused_in_one_line_with_nothing_written(model_dirs, tmp_path):
    import shutil

    from typer.testing import CliRunner

    from quanta.cli import app

    saved = tmp_path / "saved"
    shutil.copytree(model_dirs / "gpt2", saved)
    build("bert", vocab=300).save_pretrained(model_dirs / "gpt2")  # the losses' model, now BERT
    try:
        out = tmp_path / "q"
        losses = str(model_dirs / "gpt2-losses")
        res = CliRunner().invoke(app, ["qdg", "run", losses, "--out", str(out), *QDG])
        assert res.exit_code == 2 and "is not a causal language model" in res.output, res.output
        assert len(res.output.strip().splitlines()) == 1 and not out.exists()
        again = tmp_path / "losses"
        res = CliRunner().invoke(
            app,
            [
                *["lm", "losses", "--suite", str(model_dirs / "gpt2"), "--out", str(again)],
                *["--max-docs", "2", "--max-len", "32"],
            ],
        )
        assert res.exit_code == 2 and "is not a causal language model" in res.output, res.output
        assert not (again / "losses.npy").exists()
    finally:
        shutil.rmtree(model_dirs / "gpt2")
        shutil.copytree(saved, model_dirs / "gpt2")
