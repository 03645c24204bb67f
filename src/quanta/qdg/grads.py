"""QDG step 2 (PAPER.md §4): the gradient of each selected token's loss, once per sample.

For every selected token: one forward over its context truncated at the token, the output
head only at that position, one backward — backward passes = samples (the paper's code
recomputed them for every block pair of the similarity matrix, 21× more: PAPER.md §4).
Measured alternatives (``benchmarks/bench_qdg.py`` (a), cpu-size GPT-NeoX, 512-token documents;
see docs/BENCHMARKS.md): one shared forward per document with a ``retain_graph`` backward per
token (``shared_forward=True``) is no faster (0.92× and 1.09× the per-token loop's speed in two
runs: within noise), and holds the document's whole graph until its last token; batching those
backwards as VJPs with one-hot cotangents (``is_grads_batched``, vmap) took as long as the
retained-graph loop (0.99× its time for 40 tokens).

Parameters: by default everything but the input/output embeddings and the layer norms (the
paper's choice; Pythia-70m: 18,903,040 dims). Rows are streamed to ``.npy`` in sample order, so
``n × dim`` never has to fit in memory; ``projection_dim=k`` stores a seeded CountSketch
(sparse Rademacher) projection instead — inner products preserved in expectation, error
measured by :func:`projection_error`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from quanta._validation import QuantaInputError, check_int
from quanta.lm.corpus import TokenizedCorpus

__all__ = [
    "CountSketch",
    "default_param_filter",
    "naive_token_gradient",
    "per_token_gradients",
    "projection_error",
    "select_params",
]

_OWNER = "quanta.qdg.grads"
_NORM = re.compile(r"(^|[._])(ln|layernorm|layer_norm|norm)(\w*)([._]|$)", re.IGNORECASE)


def default_param_filter(name: str, param: Any, model: Any) -> bool:
    """Everything but the input/output embeddings and layer norms."""
    embeddings = {id(model.get_input_embeddings().weight)}
    head = model.get_output_embeddings()
    if head is not None:
        embeddings.add(id(head.weight))
    return id(param) not in embeddings and not _NORM.search(name)


def select_params(
    model: Any, param_filter: Callable[[str, Any, Any], bool] | str | None = None
) -> list[tuple[str, Any]]:
    """``(name, parameter)`` pairs to differentiate. ``param_filter``: a predicate
    ``(name, param, model) -> bool``, a regular expression on names, or ``None`` (default)."""
    keep: Callable[[str, Any, Any], bool]
    if param_filter is None:
        keep = default_param_filter
    elif isinstance(param_filter, str):
        pattern = re.compile(param_filter)

        def keep(name: str, param: Any, model: Any) -> bool:
            return bool(pattern.search(name))
    else:
        keep = param_filter
    chosen = [(n, p) for n, p in model.named_parameters() if keep(n, p, model)]
    if not chosen:
        raise QuantaInputError(
            f"The parameter filter {param_filter!r} matches no parameter of the model."
        )
    return chosen


class CountSketch:
    """A seeded sparse random projection ``R^dim → R^k``: coordinate i goes to bucket
    ``h(i)`` with sign ``s(i)``. ``E[<Pa, Pb>] = <a, b>``."""

    def __init__(self, dim: int, k: int, seed: int = 0) -> None:
        import torch

        self.k = check_int(k, "projection_dim", _OWNER, low=1)
        gen = torch.Generator().manual_seed(seed)
        self.bucket = torch.randint(0, self.k, (dim,), generator=gen)
        self.sign = torch.randint(0, 2, (dim,), generator=gen).float() * 2 - 1

    def __call__(self, g: Any) -> Any:
        """Project rows of ``g`` ([m, dim]) to [m, k]."""
        import torch

        out = torch.zeros((g.shape[0], self.k), dtype=g.dtype)
        return out.index_add_(1, self.bucket, g * self.sign)


def _token_losses_at(model: Any, ids: Any, positions: Any) -> Any:
    """Losses of the tokens at ``positions`` (≥ 1) of one document ``ids`` [1, T]: one forward,
    the output head only where needed. Uses the next-token contract of quanta.lm.losses:
    the hidden state at ``pos − 1`` predicts token ``pos``."""
    import torch

    hidden = model.base_model(input_ids=ids).last_hidden_state[0]
    logits = model.get_output_embeddings()(hidden[positions - 1]).float()
    return torch.nn.functional.cross_entropy(logits, ids[0, positions], reduction="none")


def naive_token_gradient(
    model: Any, corpus: TokenizedCorpus, doc: int, pos: int, params: list
) -> Any:
    """Reference: a fresh forward + backward of one token's loss over its truncated context."""
    import torch

    ids = torch.from_numpy(corpus.doc(doc)[: pos + 1].astype(np.int64))[None]
    out = model(input_ids=ids).logits[0, pos - 1].float()
    loss = torch.nn.functional.cross_entropy(out[None], ids[0, pos : pos + 1])
    grads = torch.autograd.grad(loss, [p for _, p in params])
    return torch.cat([g.reshape(-1) for g in grads])


def per_token_gradients(
    model: Any,
    corpus: TokenizedCorpus,
    samples: pd.DataFrame,
    out: str | Path,
    *,
    param_filter: Callable[[str, Any, Any], bool] | str | None = None,
    projection_dim: int | None = None,
    seed: int = 0,
    memory_bytes: int = 64 << 20,
    shared_forward: bool = False,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Gradients of every sample's loss (rows of ``samples``: ``doc_id``, ``pos``) written as
    ``out`` (``.npy`` float32, [n_samples, dim or projection_dim], sample order). Returns
    ``{"dim", "stored_dim", "n_backward", "params"}``."""
    import torch

    from quanta.store import atomic_write

    params = select_params(model, param_filter)
    tensors = [p for _, p in params]
    for p in model.parameters():
        p.requires_grad_(False)
    for p in tensors:
        p.requires_grad_(True)
    dim = sum(p.numel() for p in tensors)
    sketch = None
    if projection_dim is not None:
        sketch = CountSketch(dim, check_int(projection_dim, "projection_dim", _OWNER, low=1), seed)
    stored = sketch.k if sketch is not None else dim
    per_chunk = max(1, memory_bytes // (4 * dim))
    docs = samples["doc_id"].to_numpy()
    positions = samples["pos"].to_numpy()
    if np.any(np.diff(docs) < 0):
        raise QuantaInputError("Samples must be sorted by document (as select_tokens returns).")
    n_backward = 0
    header = {"descr": "<f4", "fortran_order": False, "shape": (len(samples), stored)}
    model.eval()
    with atomic_write(Path(out)) as fh:
        np.lib.format.write_array_header_1_0(fh, header)
        for doc in pd.unique(docs):
            pos = torch.from_numpy(positions[docs == doc].astype(np.int64))
            ids = torch.from_numpy(corpus.doc(int(doc))[: int(pos.max()) + 1].astype(np.int64))
            losses = _token_losses_at(model, ids[None], pos) if shared_forward else None
            for start in range(0, len(pos), per_chunk):
                m = min(per_chunk, len(pos) - start)
                grads = []
                for i in range(start, start + m):
                    if losses is None:  # the token's own truncated context
                        p = int(pos[i])
                        loss = _token_losses_at(model, ids[None, : p + 1], pos[i : i + 1])[0]
                        g = torch.autograd.grad(loss, tensors)
                    else:
                        g = torch.autograd.grad(losses[i], tensors, retain_graph=True)
                    grads.append(torch.cat([x.reshape(-1) for x in g]))
                rows = torch.stack(grads)
                n_backward += m
                if not torch.isfinite(rows).all():
                    raise QuantaInputError(
                        f"Non-finite gradient for a token of document {int(doc)}; the model "
                        "or its inputs are broken (NaN/Inf)."
                    )
                if sketch is not None:
                    rows = sketch(rows)
                fh.write(rows.detach().float().numpy().astype("<f4").tobytes())
                if progress is not None:
                    progress(m)
    for p in model.parameters():
        p.requires_grad_(True)
    return {
        "dim": dim,
        "stored_dim": stored,
        "n_backward": n_backward,
        "params": [n for n, _ in params],
    }


def projection_error(
    exact: np.ndarray, projected: np.ndarray, *, pairs: int = 20_000, seed: int = 0
) -> dict[str, float]:
    """Cosine similarity error of projected vs exact rows over random pairs: mean and max."""
    rng = np.random.default_rng(seed)
    i = rng.integers(0, len(exact), pairs)
    j = rng.integers(0, len(exact), pairs)
    keep = i != j
    i, j = i[keep], j[keep]

    def cos(a: np.ndarray) -> np.ndarray:
        a = np.asarray(a, dtype=np.float64)
        unit = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-30)
        return np.einsum("ij,ij->i", unit[i], unit[j])

    err = np.abs(cos(exact) - cos(projected))
    return {"mean": float(err.mean()), "max": float(err.max()), "pairs": len(err)}
