"""The loss of a token: one definition for per-token losses and for their gradients.

Token ``pos`` (≥ 1) of a document ``ids`` ``[1, T]`` has loss
``cross_entropy(model(input_ids=ids).logits[0, pos - 1], ids[0, pos])`` in nats: the hidden
state at ``pos − 1`` predicts token ``pos`` (:func:`next_token_targets`, the only shift), under
the model's **own** logits — whatever the architecture does after its body (Cohere's
``logit_scale``, Granite's ``logits_scaling``, Gemma 2's ``final_logit_softcapping``).

Two paths compute those logits, and every caller (``quanta.lm.losses``, ``quanta.qdg.grads``)
takes one of them through this module:

- ``"chunked"``: the body once (``model.base_model``), then the output head
  (``model.get_output_embeddings()``) only on the rows needed. Fast, small memory; right only
  where the logits *are* that linear head of the body's output.
- ``"full"``: the model's own forward. Where it takes ``logits_to_keep`` (every causal LM
  tested here) only the rows from the first needed one on are computed (for a token over its
  own truncated context, 2) — the final transforms applied to them by the model itself.

:func:`resolve_head` checks the chunked path against ``model(...).logits`` once per model
(:func:`head_check`) and picks; :func:`check_causal` refuses a model that is not causal (an
encoder such as BERT loaded as a causal LM), whose "loss of token pos" would see token pos.
"""

from __future__ import annotations

import inspect
import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from quanta._validation import QuantaInputError, check_choice

__all__ = [
    "HEADS",
    "HeadCheck",
    "HeadFallbackWarning",
    "batch_losses",
    "check_causal",
    "document_losses",
    "head_check",
    "next_token_targets",
    "resolve_head",
]

HEADS = ("auto", "chunked", "full")
_CHECK_TOKENS = 64  # the check's document: the first 64 tokens of document 0
_RTOL = 1e-5  # relative to max |logit|: float32 heads agree to ~1e-7; see _tolerance


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


class HeadFallbackWarning(UserWarning):
    """The chunked output head disagreed with the model's own logits; full logits were used.

    Turn it into an error with ``warnings.simplefilter("error", HeadFallbackWarning)``, or
    ask for ``head="chunked"``.
    """


def _last_row_keyword(model: Any) -> str | None:
    """The keyword by which ``model``'s forward computes only the last rows' logits
    (``logits_to_keep``; ``num_logits_to_keep`` in older transformers), or None."""
    accepted = inspect.signature(model.forward).parameters
    return next((k for k in ("logits_to_keep", "num_logits_to_keep") if k in accepted), None)


def _full_logits(model: Any, ids: Any, rows: Any) -> Any:
    """The model's own logits of ``ids`` [1, T] at hidden rows ``rows`` [n]: float32 [n, V].

    Where the forward takes the keyword, the model computes only the last ``T − min(rows)``
    rows (a token over its own truncated context: 2 of them, the token's and its target's),
    through every final transform of its own; an int count means the same in every
    transformers version that has the keyword."""
    keyword = _last_row_keyword(model)
    if keyword is None:
        return model(input_ids=ids).logits[0, rows].float()
    first = int(rows.min())
    kept = model(input_ids=ids, **{keyword: ids.shape[1] - first}).logits[0]  # rows first..T-1
    return kept[rows - first].float()


def _chunked_logits(model: Any, ids: Any, rows: Any) -> Any:
    """The output head applied to the body's hidden states of ``ids`` [1, T] at ``rows``."""
    hidden = model.base_model(input_ids=ids).last_hidden_state[0]  # (T, d)
    return model.get_output_embeddings()(hidden[rows]).float()  # (n, V)


def document_losses(model: Any, ids: Any, positions: Any, head: str) -> Any:
    """Losses (nats, float32 [n], differentiable) of the tokens at ``positions`` (≥ 1, on
    ``ids``' device) of one document ``ids`` [1, T], by path ``head`` ("chunked" | "full")."""
    import torch

    logits_of = _chunked_logits if head == "chunked" else _full_logits
    logits = logits_of(model, ids, positions - 1)
    return torch.nn.functional.cross_entropy(logits, ids[0, positions], reduction="none")


def batch_losses(model: Any, ids: Any, mask: Any, head: str, chunk_rows: int) -> np.ndarray:
    """Losses of the valid targets of a right-padded batch ``ids`` [B, T], row-major, by path
    ``head``: chunked applies the output head ``chunk_rows`` targets at a time."""
    import torch

    # No attention mask: padding is on the right, so under the causal mask a real token only
    # ever attends to real tokens; without a padding mask attention takes the fused causal
    # kernel instead of materializing [batch, heads, pos, pos] scores.
    targets, valid = next_token_targets(ids, mask)  # (B, T - 1)
    if head == "full":
        logits = model(input_ids=ids).logits.float()  # (B, T, V)
        ce = torch.nn.functional.cross_entropy(
            logits[:, :-1].transpose(1, 2), targets, reduction="none"
        )  # (B, T - 1)
        return ce[valid].cpu().numpy()
    hidden = model.base_model(input_ids=ids).last_hidden_state  # (B, T, d)
    h, t = hidden[:, :-1][valid], targets[valid]  # (n, d), (n,)
    lm_head = model.get_output_embeddings()
    parts = []
    for i in range(0, len(t), chunk_rows):
        logits = lm_head(h[i : i + chunk_rows]).float()  # (≤ chunk_rows, vocab)
        ce = torch.nn.functional.cross_entropy(logits, t[i : i + chunk_rows], reduction="none")
        parts.append(ce.cpu())
    return torch.cat(parts).numpy()


@dataclass(frozen=True)
class HeadCheck:
    """The chunked head against the model's own logits on the check document.

    ``gap``: max |logit difference|; ``scale``: max |logit| of the model's; ``tolerance``:
    the largest ``gap`` accepted (relative to ``scale``; wider for half precision).
    """

    gap: float
    scale: float
    tolerance: float

    @property
    def agrees(self) -> bool:
        return self.gap <= self.tolerance


def _tolerance(scale: float, dtype: Any) -> float:
    """Largest logit gap two float paths may show: relative 1e-5 in float32 (a final transform
    this close to the identity changes gradients by about as little), 4 ulps in half precision
    (row-subset matmuls round differently)."""
    import torch

    eps = float(torch.finfo(dtype).eps) if dtype.is_floating_point else 0.0
    return max(_RTOL, 4 * eps) * max(scale, 1e-6)


def _check_ids(model: Any, first_doc: np.ndarray, device: str | None) -> Any:
    """The check document on ``device`` (default the model's): int64 [1, ≤ 64]."""
    import torch

    target = torch.device(device) if device is not None else next(model.parameters()).device
    ids = np.asarray(first_doc[:_CHECK_TOKENS], dtype=np.int64)[None]
    return torch.from_numpy(ids).to(target)


def head_check(model: Any, first_doc: np.ndarray, *, device: str | None = None) -> HeadCheck:
    """Compare the chunked head's logits to ``model(input_ids).logits`` on the first 64 tokens
    of ``first_doc`` (every row): see :class:`HeadCheck`."""
    import torch

    ids = _check_ids(model, first_doc, device)
    with torch.inference_mode():
        want = model(input_ids=ids).logits[0].float()  # (T, V)
        rows = torch.arange(ids.shape[1], device=ids.device)
        scale = float(want.abs().max())
        try:
            got = _chunked_logits(model, ids, rows)
        except (AttributeError, TypeError, IndexError, RuntimeError):
            # a body without last_hidden_state, or a head of another shape: no fast path
            return HeadCheck(float("inf"), scale, _tolerance(scale, _dtype(model)))
    gap = float((got - want).abs().max()) if got.shape == want.shape else float("inf")
    return HeadCheck(gap, scale, _tolerance(scale, _dtype(model)))


def _dtype(model: Any) -> Any:
    """The dtype of the model's parameters (its logits' precision)."""
    return next(model.parameters()).dtype


def check_causal(model: Any, first_doc: np.ndarray, *, device: str | None = None) -> None:
    """Refuse a model whose logits at a position depend on later tokens (not a causal LM: e.g.
    BERT, which ``AutoModelForCausalLM`` loads as ``BertLMHeadModel`` without a causal mask):
    the last token of the check document is changed and every earlier row must stay put."""
    import torch

    ids = _check_ids(model, first_doc, device)
    name = type(model).__name__
    if ids.shape[1] < 2:
        return
    vocab = model.get_input_embeddings().weight.shape[0]
    other = ids.clone()
    other[0, -1] = (other[0, -1] + 1) % vocab
    with torch.inference_mode():
        a = model(input_ids=ids).logits[0, :-1].float()
        b = model(input_ids=other).logits[0, :-1].float()
    gap = float((a - b).abs().max())
    scale = float(a.abs().max())
    if gap > _tolerance(scale, _dtype(model)):
        raise QuantaInputError(
            f"{name} is not a causal language model: its logits at earlier positions change "
            f"when a later token does (max |difference| {gap:.2e}); quanta needs a causal LM "
            "(GPT-2, Llama, GPT-NeoX, …), not an encoder such as BERT."
        )


def resolve_head(
    model: Any,
    first_doc: np.ndarray,
    *,
    head: str = "auto",
    owner: str = "quanta lm losses",
    device: str | None = None,
) -> str:
    """The output-head path for ``model``: ``"chunked"`` or ``"full"`` (see the module).

    Parameters
    ----------
    model : transformers causal LM
    first_doc : ndarray of int
        Token ids; its first 64 are the check's input (:func:`head_check`).
    head : {"auto", "chunked", "full"}, default "auto"
        ``"auto"``: chunked if the check passes, else full with a :class:`HeadFallbackWarning`
        (full without a warning for models with no separate output head).
        ``"chunked"``: chunked, or an error if the check fails. ``"full"``: full, no check.
    owner : str
        Who asks (named in the messages).

    Raises
    ------
    QuantaInputError
        ``head="chunked"`` for a model whose chunked head disagrees with its logits, or a model
        that is not causal (:func:`check_causal`, run for every ``head``).
    """
    head = check_choice(head, "head", owner, list(HEADS))
    check_causal(model, first_doc, device=device)
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
    check = head_check(model, first_doc, device=device)
    # Non-finite logits (broken weights) cannot be judged; the fast path is kept so that the
    # callers' own refusals (a non-finite gradient) say what is wrong, not a head warning.
    if check.agrees or not math.isfinite(check.scale):
        return "chunked"
    # A disagreement is an error only when the fast path was demanded. Under "auto" it is a
    # warning: the full path *is* the model's own forward, so its losses are right by
    # construction, and the models that need it (logits soft-capped or scaled after the head)
    # are legitimate inputs. What must not happen is a silent switch: the warning says so, and
    # the callers record the path (models.parquet column "head", grads.json "head").
    message = (
        f"The chunked output head of {name} disagrees with the model's own logits on document "
        f"0 (max |logit difference| {check.gap:.2e} > {check.tolerance:.1e}, of max |logit| "
        f"{check.scale:.2e})"
    )
    if head == "chunked":
        raise QuantaInputError(f"{message}; use head='auto' or 'full' for this model.")
    warnings.warn(
        f"{message}; computing the model's own logits instead (slower).",
        HeadFallbackWarning,
        stacklevel=2,
    )
    return "full"
