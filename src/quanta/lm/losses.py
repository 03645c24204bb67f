"""Per-token losses of a model on a corpus: batched and memory-bounded.

The engine (:func:`token_losses`) sorts documents by length (so batches hold similar lengths
and padding is small), packs as many as fit in ``batch_tokens`` padded tokens, runs the model's
body under ``torch.inference_mode`` and applies the output head and log-softmax in chunks of
``chunk_rows`` positions (512: measured fastest on a 50k vocabulary, logits of a chunk stay
near cache size), so the ``[tokens, vocab]`` logits never exist at once. That chunked head is
checked against the model's own logits before use (:func:`resolve_head`); a model whose logits
are not a plain linear head falls back, visibly, to full logits. Padding is on the right and
causal, so it changes no loss (tested) and needs no attention mask.

**The next-token shift lives in one place**, :func:`next_token_targets`: for inputs ``[batch,
pos]`` the hidden state at position ``j`` predicts token ``j + 1``, so targets and losses are
``[batch, pos - 1]`` and loss ``[b, j]`` belongs to the predicted token at position ``j + 1`` —
index-table row ``(doc_id, pos = j + 1)``.

A suite's losses in a resumable run directory (one column per model, over executors) are
:func:`quanta.lm.losses_run.run_losses`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from quanta._validation import QuantaInputError, check_choice, check_int
from quanta.lm.corpus import TokenizedCorpus

__all__ = [
    "HEADS",
    "HeadFallbackWarning",
    "next_token_targets",
    "paper_token_losses",
    "resolve_head",
    "token_losses",
]

_OWNER = "quanta lm losses"
HEADS = ("auto", "chunked", "full")
_HEAD_ATOL = 1e-4  # nats: chunked vs full must agree this well on the check document


def next_token_targets(input_ids: Any, attention_mask: Any) -> tuple[Any, Any]:
    """Targets and their validity for next-token prediction: both ``[batch, pos - 1]``.

    ``targets[b, j] = input_ids[b, j + 1]`` is predicted from positions ``≤ j``; ``valid[b, j]``
    is False where position ``j + 1`` is padding.

    >>> import torch
    >>> t, v = next_token_targets(torch.tensor([[5, 6, 7]]), torch.tensor([[1, 1, 0]]))
    >>> t.tolist(), v.tolist()
    ([[6, 7]], [[True, False]])
    """
    return input_ids[:, 1:], attention_mask[:, 1:].bool()


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
    losses_of = _chunked_losses if path == "chunked" else _full_losses
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
            losses = losses_of(model, to_model(ids), to_model(mask), chunk_rows)
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


class HeadFallbackWarning(UserWarning):
    """The chunked output head disagreed with the model's own logits; full logits were used.

    Turn it into an error with ``warnings.simplefilter("error", HeadFallbackWarning)``, or
    ask for ``head="chunked"``.
    """


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
    It is exact only where the logits are a plain linear head of the body's output, so it is
    checked once, on the first 64 tokens of document 0 and with chunks of at most 16 rows (so
    chunk boundaries are crossed), against *full*: the model's own forward,
    ``model(input_ids).logits`` (``[batch, pos, vocab]`` at once: slower, more memory).

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
        ``head="chunked"`` for a model whose chunked head disagrees with its logits.

    Warns
    -----
    HeadFallbackWarning
        ``head="auto"`` and the chunked head disagrees: full logits are used instead.
    """
    import torch

    head = check_choice(head, "head", _OWNER, list(HEADS))
    chunk_rows = check_int(chunk_rows, "chunk_rows", _OWNER, low=1)
    if head == "full":
        return "full"
    name = type(model).__name__
    if model.get_output_embeddings() is None or model.base_model is model:
        if head == "chunked":
            raise QuantaInputError(
                f"head='chunked' needs a model with a separate output head; {name} has none. "
                "Use head='auto' or 'full'."
            )
        return "full"
    with torch.inference_mode():
        first = _mover(model, device)(corpus.doc(0)[:64].astype(np.int64)[None])
        ones = torch.ones_like(first)
        chunked = _chunked_losses(model, first, ones, min(chunk_rows, 16))
        full = _full_losses(model, first, ones, 0)
    gap = float(np.max(np.abs(chunked - full), initial=0.0))
    if gap <= _HEAD_ATOL:  # float32 agrees to ~1e-6 nats; 1e-4 leaves room for kernels
        return "chunked"
    # A disagreement is an error only when the fast path was demanded. Under "auto" it is a
    # warning: the full path *is* the model's own forward, so its losses are right by
    # construction, and the models that need it (logits soft-capped or scaled after the head,
    # e.g. Gemma 2's final_logit_softcapping) are legitimate inputs that an error would leave
    # with no way to run. What must not happen is a silent switch, since a broken fast path
    # would then pass every check: the warning says so, and run_losses records the path per
    # model (models.parquet, column "head").
    message = (
        f"The chunked output head of {name} disagrees with the model's own logits on document "
        f"0 (max |loss difference| {gap:.2e} nats > {_HEAD_ATOL:g})"
    )
    if head == "chunked":
        raise QuantaInputError(f"{message}; use head='auto' or 'full' for this model.")
    warnings.warn(
        f"{message}; computing full logits instead (slower, [batch, pos, vocab] memory).",
        HeadFallbackWarning,
        stacklevel=2,
    )
    return "full"


def _chunked_losses(model: Any, ids: Any, mask: Any, chunk_rows: int) -> np.ndarray:
    """Losses of the valid targets of ``ids`` ``[batch, pos]``, row-major: the body once, then
    the output head and cross-entropy ``chunk_rows`` targets at a time."""
    import torch

    # No attention mask: padding is on the right, so under the causal mask a real token only
    # ever attends to real tokens; without a padding mask attention takes the fused causal
    # kernel instead of materializing [batch, heads, pos, pos] scores.
    hidden = model.base_model(input_ids=ids).last_hidden_state  # (B, T, d)
    targets, valid = next_token_targets(ids, mask)  # (B, T - 1)
    h, t = hidden[:, :-1][valid], targets[valid]  # (n, d), (n,)
    lm_head = model.get_output_embeddings()
    parts = []
    for i in range(0, len(t), chunk_rows):
        logits = lm_head(h[i : i + chunk_rows]).float()  # (≤ chunk_rows, vocab)
        ce = torch.nn.functional.cross_entropy(logits, t[i : i + chunk_rows], reduction="none")
        parts.append(ce.cpu())
    return torch.cat(parts).numpy()


def _full_losses(model: Any, ids: Any, mask: Any, chunk_rows: int) -> np.ndarray:
    """Same as :func:`_chunked_losses` from the model's own ``[batch, pos, vocab]`` logits."""
    import torch

    logits = model(input_ids=ids).logits.float()  # right padding: see _chunked_losses
    targets, valid = next_token_targets(ids, mask)
    ce = torch.nn.functional.cross_entropy(
        logits[:, :-1].transpose(1, 2), targets, reduction="none"
    )  # (B, T - 1)
    return ce[valid].cpu().numpy()


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
