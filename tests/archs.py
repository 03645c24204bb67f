"""Tiny causal LMs of many architectures, built from configs (no hub, no files), and the
independent oracles tests check quanta against: losses and per-token gradients from
``model(input_ids).logits`` by plain autograd.

Each architecture stands for a family with something the fast paths could get wrong:

=========  ====================================================================
gpt2       tied embeddings, Conv1D layers, learned position embeddings (wpe)
llama      RMSNorm, untied head; its corpus starts with BOS (id 1)
opt        learned positions with an offset of 2 (OPTLearnedPositionalEmbedding)
qwen2      attention biases, untied head
qwen3      QK-norms (q_norm, k_norm)
neox       parallel residual (Pythia)
gemma2     final_logit_softcapping (logits = c·tanh(z / c)), scaled embeddings
cohere     logit_scale (logits = s·z), tied
granite    logits_scaling (logits = z / s)
mamba      no attention at all (selective state space)
=========  ====================================================================
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from quanta.lm.corpus import TokenizedCorpus

VOCAB = 96
BOS = 1
# Soft-cap and scales far from the identity, so a head that ignores them is visibly wrong.
_COMMON = {
    "vocab_size": VOCAB,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 64,
    "max_position_embeddings": 64,
}


def _config(arch: str, vocab: int) -> Any:
    import transformers as tf

    common = {**_COMMON, "vocab_size": vocab}
    gqa = {**common, "num_key_value_heads": 2}
    builders = {
        "gpt2": lambda: tf.GPT2Config(
            vocab_size=vocab,
            n_embd=32,
            n_layer=2,
            n_head=4,
            n_positions=64,
            bos_token_id=0,
            eos_token_id=0,
        ),
        "llama": lambda: tf.LlamaConfig(**gqa, bos_token_id=BOS),
        "opt": lambda: tf.OPTConfig(
            vocab_size=vocab,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            ffn_dim=64,
            max_position_embeddings=64,
            word_embed_proj_dim=32,
        ),
        "qwen2": lambda: tf.Qwen2Config(**gqa),
        "qwen3": lambda: tf.Qwen3Config(**gqa, head_dim=8),
        "neox": lambda: tf.GPTNeoXConfig(**common),
        "gemma2": lambda: tf.Gemma2Config(**gqa, head_dim=8, final_logit_softcapping=1.0),
        "cohere": lambda: tf.CohereConfig(**gqa, logit_scale=0.25, eos_token_id=0),
        "granite": lambda: tf.GraniteConfig(**gqa, logits_scaling=4.0),
        "mamba": lambda: tf.MambaConfig(
            vocab_size=vocab, hidden_size=32, num_hidden_layers=2, state_size=4
        ),
        "bert": lambda: tf.BertConfig(
            vocab_size=vocab,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=64,
            max_position_embeddings=64,
        ),
    }
    return builders[arch]()


# Architecture → whether its logits are the plain output head of the last hidden state.
ARCHS = {
    "gpt2": True,
    "llama": True,
    "opt": True,
    "qwen2": True,
    "qwen3": True,
    "neox": True,
    "gemma2": False,
    "cohere": False,
    "granite": False,
    "mamba": True,
}


def build(arch: str, seed: int = 0, *, vocab: int = VOCAB) -> Any:
    """A tiny ``arch`` causal LM, float32, eval mode, weights drawn with ``seed``."""
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging

    logging.set_verbosity_error()  # mamba's "no fast kernel" and config notes
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(_config(arch, vocab), attn_implementation="eager")
    return model.float().eval()


def random_corpus(arch: str, *, n_docs: int = 3, length: int = 24, seed: int = 0) -> Any:
    """``n_docs`` documents of ``length`` random token ids (llama's start with BOS)."""
    rng = np.random.default_rng(seed)
    docs = rng.integers(2, VOCAB, (n_docs, length)).astype(np.int32)
    bos = arch == "llama"
    if bos:
        docs[:, 0] = BOS
    offsets = np.arange(n_docs + 1, dtype=np.int64) * length
    return TokenizedCorpus(docs.reshape(-1), offsets, [f"d{i}" for i in range(n_docs)], 64, bos)


# (doc_id, pos): the first predicted token (from BOS alone for llama), middle, last.
SAMPLES = pd.DataFrame({"doc_id": [0, 0, 0, 1, 1, 2], "pos": [1, 5, 23, 2, 17, 11]})


def reference_losses(model: Any, corpus: Any) -> np.ndarray:
    """Per-token losses from ``model(input_ids).logits``, one document at a time, no grad."""
    import torch

    out = []
    with torch.no_grad():
        for d in range(corpus.n_docs):
            ids = torch.as_tensor(corpus.doc(d), dtype=torch.long)[None]
            logits = model(input_ids=ids).logits[0, :-1].double()
            out.append(torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="none"))
    return torch.cat(out).numpy()


def naive_gradients(model: Any, corpus: Any, samples: pd.DataFrame, names: list[str]) -> Any:
    """Oracle: each sample's loss from ``model(ids[: pos + 1]).logits[pos - 1]`` and its
    gradient by ``torch.autograd.grad`` w.r.t. the parameters ``names``: float64 [n, dim]."""
    import torch

    named = dict(model.named_parameters())
    tensors = [named[n] for n in names]
    rows = []
    for r in samples.itertuples():
        ids = torch.as_tensor(corpus.doc(int(r.doc_id))[: int(r.pos) + 1], dtype=torch.long)
        logits = model(input_ids=ids[None]).logits[0, -2]
        loss = torch.nn.functional.cross_entropy(logits[None].float(), ids[-1:])
        grads = torch.autograd.grad(loss, tensors, allow_unused=True)
        rows.append(
            torch.cat(
                [
                    (g if g is not None else torch.zeros_like(t)).reshape(-1)
                    for g, t in zip(grads, tensors, strict=True)
                ]
            )
        )
    return torch.stack(rows).double()


def linear_weights(model: Any) -> set[str]:
    """Oracle of the default parameter selection: the parameters of every Linear, Conv1D and
    Conv1d module but the output head, and Mamba's state matrices (``A_log``, ``D``)."""
    import torch
    from transformers.pytorch_utils import Conv1D

    head = model.get_output_embeddings()
    owners = {}
    for module in model.modules():
        for pname, p in module.named_parameters(recurse=False):
            owners.setdefault(id(p), (module, pname))  # a tied weight: its first owner
    keep = set()
    for name, p in model.named_parameters():
        module, pname = owners[id(p)]
        layer = isinstance(module, (torch.nn.Linear, Conv1D, torch.nn.Conv1d))
        if (layer and module is not head) or pname in ("A_log", "D"):
            keep.add(name)
    return keep
