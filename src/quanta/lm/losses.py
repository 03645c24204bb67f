"""Per-token losses of a model on a corpus: batched and memory-bounded.

The engine (:func:`token_losses`) sorts documents by length (so batches hold similar lengths
and padding is small), packs as many as fit in ``batch_tokens`` padded tokens, runs the model's
body under ``torch.inference_mode`` and applies the output head and log-softmax in chunks of
``chunk_rows`` positions (512: measured fastest on a 50k vocabulary, logits of a chunk stay
near cache size), so the ``[tokens, vocab]`` logits never exist at once. That chunked head is
checked against the model's own logits before use (:func:`resolve_head`); a model whose logits
are not a plain linear head falls back, visibly, to full logits. The loss of a token, both
paths and the check live in :mod:`quanta.lm.head`, shared with the gradients of QDG. Padding
is on the right and causal, so it changes no loss (tested) and needs no attention mask.

**The next-token shift lives in one place**, :func:`quanta.lm.head.next_token_targets`: for
inputs ``[batch, pos]`` the hidden state at position ``j`` predicts token ``j + 1``, so targets
and losses are ``[batch, pos - 1]`` and loss ``[b, j]`` belongs to the predicted token at
position ``j + 1`` — index-table row ``(doc_id, pos = j + 1)``.

A suite's losses in a resumable run directory (one column per model, over executors) are
:func:`quanta.lm.losses_run.run_losses`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from quanta._validation import QuantaInputError, check_int
from quanta.lm import head as _head
from quanta.lm.corpus import TokenizedCorpus
from quanta.lm.head import HEADS, HeadFallbackWarning, batch_losses, next_token_targets

__all__ = [
    "HEADS",
    "HeadFallbackWarning",
    "next_token_targets",
    "paper_token_losses",
    "resolve_head",
    "token_losses",
]

_OWNER = "quanta lm losses"


def _batches(lengths: np.ndarray, batch_tokens: int) -> Iterator[np.ndarray]:
    """Document ids in batches of similar length whose padded size fits ``batch_tokens``."""
    order = np.argsort(-lengths, kind="stable")
    i = 0
    while i < len(order):
        longest = int(lengths[order[i]])
        take = max(1, batch_tokens // longest)
        yield order[i : i + take]
        i += take


def token_losses(
    model: Any,
    corpus: TokenizedCorpus,
    *,
    batch_tokens: int = 8192,
    chunk_rows: int = 512,
    head: str = "auto",
    device: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Per-token cross-entropy (nats, float32) of ``model`` on every predicted token of
    ``corpus``, in index-table order. ``progress(n)`` is called with the tokens just done.
    Batches go to ``device`` (default: the model's own, where they must be).

    ``head`` picks how logits are made: ``"chunked"``, ``"full"`` or ``"auto"`` (the default:
    chunked when it agrees with the model's own logits, else full with a
    :class:`HeadFallbackWarning`); see :func:`resolve_head`, which tells which one runs.
    """
    import torch

    batch_tokens = check_int(batch_tokens, "batch_tokens", _OWNER, low=1)
    chunk_rows = check_int(chunk_rows, "chunk_rows", _OWNER, low=1)
    vocab = model.get_input_embeddings().weight.shape[0]
    if corpus.tokens.size and int(corpus.tokens.max()) >= vocab:
        raise QuantaInputError(
            f"Tokenizer/model vocabulary mismatch: the corpus has token id "
            f"{int(corpus.tokens.max())} but the model's vocabulary has {vocab} entries."
        )
    path = resolve_head(model, corpus, head=head, chunk_rows=chunk_rows, device=device)
    rows = corpus.row_offsets()
    lengths = corpus.lengths
    out = np.empty(corpus.n_predicted, dtype=np.float32)
    to_model = _mover(model, device)
    with torch.inference_mode():
        for docs in _batches(lengths, batch_tokens):
            width = int(lengths[docs].max())
            # Padded on the host, then one copy per batch to the model's device.
            ids = np.zeros((len(docs), width), dtype=np.int64)
            mask = np.zeros((len(docs), width), dtype=np.int64)
            for b, d in enumerate(docs):
                n = int(lengths[d])
                ids[b, :n] = corpus.doc(int(d))
                mask[b, :n] = 1
            losses = batch_losses(model, to_model(ids), to_model(mask), path, chunk_rows)
            dest = np.concatenate([np.arange(rows[d], rows[d + 1]) for d in docs])
            out[dest] = losses
            if progress is not None:
                progress(len(dest))
    return out


def _mover(model: Any, device: str | None) -> Callable[[np.ndarray], Any]:
    """Host array -> tensor on ``device``, or on the model's device when ``device`` is None."""
    import torch

    target = torch.device(device) if device is not None else next(model.parameters()).device
    return lambda a: torch.from_numpy(a).to(target)


def resolve_head(
    model: Any,
    corpus: TokenizedCorpus,
    *,
    head: str = "auto",
    chunk_rows: int = 512,
    device: str | None = None,
) -> str:
    """The output-head path :func:`token_losses` takes for ``model``: ``"chunked"`` or ``"full"``.

    *chunked* runs the model's body and applies the output head and cross-entropy to
    ``chunk_rows`` positions at a time, so the ``[tokens, vocab]`` logits never exist at once.
    It is exact only where the logits are a plain linear head of the body's output, so its
    logits are checked once, on the first 64 tokens of document 0, against *full*: the model's
    own forward, ``model(input_ids).logits`` (``[batch, pos, vocab]`` at once: slower, more
    memory). The rule (:func:`quanta.lm.head.resolve_head`) is the gradients' too; a model
    that is not causal is refused.

    Parameters
    ----------
    model : transformers causal LM
    corpus : TokenizedCorpus
        Its first document is the check's input.
    head : {"auto", "chunked", "full"}, default "auto"
        ``"auto"``: chunked if the check passes, else full with a :class:`HeadFallbackWarning`
        (full without a warning for models with no separate output head).
        ``"chunked"``: chunked, or an error if the check fails. ``"full"``: full, no check.
    chunk_rows : int, default 512
    device : str, optional
        Where the check document goes; default the model's device.

    Returns
    -------
    str
        ``"chunked"`` or ``"full"``.

    Raises
    ------
    QuantaInputError
        ``head="chunked"`` for a model whose chunked head disagrees with its logits; a model
        that is not causal.

    Warns
    -----
    HeadFallbackWarning
        ``head="auto"`` and the chunked head disagrees: full logits are used instead.
    """
    check_int(chunk_rows, "chunk_rows", _OWNER, low=1)
    return _head.resolve_head(model, corpus.doc(0), head=head, owner=_OWNER, device=device)


def paper_token_losses(model: Any, corpus: TokenizedCorpus) -> list[float]:
    """The paper's method, for benchmarks: one document per forward, autograd on, full
    logits, losses collected as a Python list."""
    import torch

    losses: list[float] = []
    to_model = _mover(model, None)
    for d in range(corpus.n_docs):
        ids = to_model(corpus.doc(d).astype(np.int64)[None])
        logits = model(input_ids=ids).logits
        ce = torch.nn.functional.cross_entropy(logits[0, :-1], ids[0, 1:], reduction="none")
        losses.extend(ce.tolist())
    return losses
