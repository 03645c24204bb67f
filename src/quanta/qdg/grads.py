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

The loss is the model's own (:mod:`quanta.lm.head`, shared with ``quanta lm losses``): the
output head applied to the body's hidden state where that equals ``model(...).logits``, else
the model's own forward at the token's row (``logits_to_keep``), so scaled and soft-capped
logits (Cohere, Granite, Gemma 2) are differentiated as the model computes them. The path is
returned as ``head``.

Parameters (:func:`param_selection`): by default everything but embeddings (token, position,
type), the output head and every norm (layer norms, RMSNorms, QK-norms), recognized by module
type — ``nn.Embedding``/``nn.LayerNorm``/``nn.RMSNorm``/``nn.GroupNorm`` or a class name
containing "Embedding" or "Norm", and ``get_input_embeddings``/``get_output_embeddings`` —
with parameter names as the fallback (the paper's choice; Pythia-70m: 18,903,040 dims).

Rows are streamed to ``.npy`` in sample order, so ``n × dim`` never has to fit in memory;
``projection_dim=k`` stores a seeded CountSketch (sparse Rademacher) projection instead — inner
products preserved in expectation, error measured by :func:`projection_error`.

:func:`exact_gram` is the paper's exact similarity without the ``n × dim`` matrix (10,000 ×
18.9M float32 is 756 GB): the Gram matrix ``X Xᵀ`` accumulated over blocks of parameter
coordinates, each block's gradient rows recomputed — ``n_blocks × n`` backward passes.

Every tensor is created on the model's device (the first parameter's): a CUDA model computes
its gradients, sketches and Gram blocks on the GPU, and only finished rows or the finished Gram
matrix are copied to the host.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from quanta._validation import QuantaInputError, check_int
from quanta.lm.corpus import TokenizedCorpus
from quanta.lm.head import document_losses, resolve_head

__all__ = [
    "CountSketch",
    "default_param_filter",
    "exact_gram",
    "gram_block_params",
    "naive_token_gradient",
    "param_selection",
    "parameter_kinds",
    "per_token_gradients",
    "projection_error",
    "select_params",
]

_OWNER = "quanta.qdg.grads"
_NORM = re.compile(r"(^|[._])(ln|layernorm|layer_norm|norm)(\w*)([._]|$)", re.IGNORECASE)
_EMBED = re.compile(
    r"(^|[._])(wte|wpe|embed\w*|\w*_embeddings?|lm_head|unembed\w*)([._]|$)", re.IGNORECASE
)
EXCLUDED_KINDS = ("embedding", "head", "norm")


def _module_kind(module: Any, inputs: Any, outputs: Any) -> str | None:
    """What a module is, for parameter selection: "embedding", "head", "norm" or None."""
    import torch

    name = type(module).__name__
    if module is outputs:
        return "head"
    if module is inputs or isinstance(module, torch.nn.Embedding) or "Embedding" in name:
        return "embedding"
    norms = (torch.nn.LayerNorm, torch.nn.GroupNorm, torch.nn.RMSNorm)
    if isinstance(module, norms) or "Norm" in name:
        return "norm"
    return None


def parameter_kinds(model: Any) -> dict[str, str]:
    """Every parameter name of ``model`` (as ``named_parameters`` lists them: a tied weight
    once) → its kind: ``"embedding"``, ``"head"`` or ``"norm"`` by the module that owns it,
    else ``"embedding (by name)"`` / ``"norm (by name)"`` by its name, else ``"weight"``.

    >>> import torch
    >>> class Toy(torch.nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.wte, self.ln = torch.nn.Embedding(5, 2), torch.nn.LayerNorm(2)
    ...         self.mlp, self.out = torch.nn.Linear(2, 2), torch.nn.Linear(2, 5)
    ...     def get_input_embeddings(self): return self.wte
    ...     def get_output_embeddings(self): return self.out
    >>> parameter_kinds(Toy())  # doctest: +NORMALIZE_WHITESPACE
    {'wte.weight': 'embedding', 'ln.weight': 'norm', 'ln.bias': 'norm', 'mlp.weight': 'weight',
     'mlp.bias': 'weight', 'out.weight': 'head', 'out.bias': 'head'}
    """
    inputs, outputs = model.get_input_embeddings(), model.get_output_embeddings()
    by_id: dict[int, str] = {}
    for module in model.modules():
        kind = _module_kind(module, inputs, outputs)
        for p in module.parameters(recurse=False):
            if kind is not None:
                by_id.setdefault(id(p), kind)  # a tied head is its input embedding, seen first
    kinds = {}
    for name, p in model.named_parameters():
        if id(p) in by_id:
            kinds[name] = by_id[id(p)]
        elif _EMBED.search(name):
            kinds[name] = "embedding (by name)"
        elif _NORM.search(name):
            kinds[name] = "norm (by name)"
        else:
            kinds[name] = "weight"
    return kinds


def default_param_filter(name: str, param: Any, model: Any) -> bool:
    """Everything but embeddings, the output head and norms (:func:`parameter_kinds`)."""
    return parameter_kinds(model).get(name, "weight") == "weight"


def param_selection(
    model: Any, param_filter: Callable[[str, Any, Any], bool] | str | None = None
) -> tuple[list[tuple[str, Any]], dict[str, str]]:
    """``(name, parameter)`` pairs to differentiate and ``{name: why}`` of the others.

    ``param_filter``: ``None`` (default) keeps the parameters :func:`parameter_kinds` calls
    ``"weight"`` and gives the others' kind as the reason; a regular expression on names, or a
    predicate ``(name, param, model) -> bool``, decides alone (reason ``"filter"``).
    """
    kinds = parameter_kinds(model)
    keep: Callable[[str, Any, Any], bool]
    if param_filter is None:

        def keep(name: str, param: Any, model: Any) -> bool:
            return kinds[name] == "weight"
    elif isinstance(param_filter, str):
        pattern = re.compile(param_filter)

        def keep(name: str, param: Any, model: Any) -> bool:
            return bool(pattern.search(name))
    else:
        keep = param_filter
    chosen, excluded = [], {}
    for n, p in model.named_parameters():
        if keep(n, p, model):
            chosen.append((n, p))
        else:
            excluded[n] = kinds[n] if param_filter is None else "filter"
    if not chosen:
        raise QuantaInputError(
            f"The parameter filter {param_filter!r} matches no parameter of the model."
        )
    return chosen, excluded


def select_params(
    model: Any, param_filter: Callable[[str, Any, Any], bool] | str | None = None
) -> list[tuple[str, Any]]:
    """``(name, parameter)`` pairs to differentiate: :func:`param_selection`'s first part."""
    return param_selection(model, param_filter)[0]


class CountSketch:
    """A seeded sparse random projection ``R^dim → R^k``: coordinate i goes to bucket
    ``h(i)`` with sign ``s(i)``. ``E[<Pa, Pb>] = <a, b>``. The hash is drawn on the CPU
    (the same ``seed`` gives the same sketch on every device) and kept on ``device``."""

    def __init__(self, dim: int, k: int, seed: int = 0, *, device: Any = "cpu") -> None:
        import torch

        self.k = check_int(k, "projection_dim", _OWNER, low=1)
        gen = torch.Generator(device="cpu").manual_seed(seed)
        bucket = torch.randint(0, self.k, (dim,), generator=gen, device="cpu")
        sign = torch.randint(0, 2, (dim,), generator=gen, device="cpu").float() * 2 - 1
        self.bucket, self.sign = bucket.to(device), sign.to(device)

    def __call__(self, g: Any) -> Any:
        """Project rows of ``g`` ([m, dim], on the sketch's device) to [m, k]."""
        import torch

        out = torch.zeros((g.shape[0], self.k), dtype=g.dtype, device=g.device)
        return out.index_add_(1, self.bucket, g * self.sign)


def _device(model: Any) -> Any:
    """The device of the model's parameters (where every tensor of this module is made)."""
    return next(model.parameters()).device


def _doc_ids(corpus: TokenizedCorpus, doc: int, end: int, device: Any) -> Any:
    """Token ids ``[0, end)`` of document ``doc`` as int64 [1, end] on ``device``."""
    import torch

    return torch.from_numpy(corpus.doc(doc)[:end].astype(np.int64)).to(device)[None]


def naive_token_gradient(
    model: Any, corpus: TokenizedCorpus, doc: int, pos: int, params: list
) -> Any:
    """Reference: a fresh forward + backward of one token's loss over its truncated context."""
    import torch

    ids = _doc_ids(corpus, doc, pos + 1, _device(model))
    out = model(input_ids=ids).logits[0, pos - 1].float()
    loss = torch.nn.functional.cross_entropy(out[None], ids[0, pos : pos + 1])
    grads = torch.autograd.grad(loss, [p for _, p in params])
    return torch.cat([g.reshape(-1) for g in grads])


def _check_sorted(samples: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    docs = samples["doc_id"].to_numpy()
    if np.any(np.diff(docs) < 0):
        raise QuantaInputError("Samples must be sorted by document (as select_tokens returns).")
    return docs, samples["pos"].to_numpy()


def _gradient_rows(
    model: Any,
    corpus: TokenizedCorpus,
    samples: pd.DataFrame,
    tensors: list,
    *,
    chunk: int,
    head: str,
    shared_forward: bool = False,
    keep: Callable[[list], Any] | None = None,
) -> Iterator[Any]:
    """Flat gradients of the samples' losses w.r.t. ``tensors``, in sample order, as float32
    [m ≤ chunk, dim] blocks on the model's device (never mixing two documents in a block).
    ``keep`` maps a token's per-tensor gradients to its row (default: all of them,
    concatenated). ``head``: the path of :func:`quanta.lm.head.document_losses`. Refuses a
    non-finite row before it is yielded."""
    import torch

    docs, positions = _check_sorted(samples)
    device = _device(model)
    for doc in pd.unique(docs):
        at = positions[docs == doc]
        pos = torch.from_numpy(at.astype(np.int64)).to(device)
        ids = _doc_ids(corpus, int(doc), int(at.max()) + 1, device)
        losses = document_losses(model, ids, pos, head) if shared_forward else None
        for start in range(0, len(pos), chunk):
            grads = []
            for i in range(start, min(start + chunk, len(pos))):
                if losses is None:  # the token's own truncated context
                    end = int(at[i]) + 1
                    loss = document_losses(model, ids[:, :end], pos[i : i + 1], head)[0]
                    g = torch.autograd.grad(loss, tensors)
                else:
                    g = torch.autograd.grad(losses[i], tensors, retain_graph=True)
                grads.append(keep(list(g)) if keep else torch.cat([x.reshape(-1) for x in g]))
            rows = torch.stack(grads).float()
            if not torch.isfinite(rows).all():
                raise QuantaInputError(
                    f"Non-finite gradient for a token of document {int(doc)}; the model "
                    "or its inputs are broken (NaN/Inf)."
                )
            yield rows


class _OnlyGrads:
    """Within the block only ``tensors`` require gradients (autograd then skips the weight
    gradients of every other parameter); on exit every parameter gets its flag back."""

    def __init__(self, model: Any, tensors: list) -> None:
        self.model, self.tensors = model, tensors
        self.before: list[tuple[Any, bool]] = []

    def __enter__(self) -> None:
        self.before = [(p, p.requires_grad) for p in self.model.parameters()]
        for p, _ in self.before:
            p.requires_grad_(False)
        for p in self.tensors:
            p.requires_grad_(True)

    def __exit__(self, *exc: object) -> None:
        for p, flag in self.before:
            p.requires_grad_(flag)


def _setup(
    model: Any,
    corpus: TokenizedCorpus,
    samples: pd.DataFrame,
    param_filter: Callable[[str, Any, Any], bool] | str | None,
    head: str,
) -> tuple[list[tuple[str, Any]], str, dict[str, Any]]:
    """The parameters to differentiate, the head path (:func:`quanta.lm.head.resolve_head` on
    document 0, as ``quanta lm losses`` decides) and what both record: ``params`` (selected
    names), ``excluded`` ({name: why}), ``head``."""
    _check_sorted(samples)
    params, excluded = param_selection(model, param_filter)
    path = resolve_head(model, corpus.doc(0), head=head, owner=_OWNER)
    return params, path, {"params": [n for n, _ in params], "excluded": excluded, "head": path}


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
    head: str = "auto",
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Gradients of every sample's loss (rows of ``samples``: ``doc_id``, ``pos``) written as
    ``out`` (``.npy`` float32, [n_samples, dim or projection_dim], sample order). Computed on
    the model's device; ``memory_bytes`` bounds one block of rows held there before it is
    copied out. ``head``: "auto" | "chunked" | "full", as for ``quanta lm losses``
    (:func:`quanta.lm.head.resolve_head`). Returns ``{"dim", "stored_dim", "n_backward",
    "params", "excluded", "head"}``."""
    from quanta.store import atomic_write

    params, path, recorded = _setup(model, corpus, samples, param_filter, head)
    tensors = [p for _, p in params]
    dim = sum(p.numel() for p in tensors)
    sketch = None
    if projection_dim is not None:
        k = check_int(projection_dim, "projection_dim", _OWNER, low=1)
        sketch = CountSketch(dim, k, seed, device=_device(model))
    stored = sketch.k if sketch is not None else dim
    n_backward = 0
    header = {"descr": "<f4", "fortran_order": False, "shape": (len(samples), stored)}
    model.eval()
    rows_of = _gradient_rows(
        model,
        corpus,
        samples,
        tensors,
        chunk=max(1, memory_bytes // (4 * dim)),
        head=path,
        shared_forward=shared_forward,
    )
    with _OnlyGrads(model, tensors), atomic_write(Path(out)) as fh:
        np.lib.format.write_array_header_1_0(fh, header)
        for rows in rows_of:
            n_backward += len(rows)
            if sketch is not None:
                rows = sketch(rows)
            fh.write(rows.detach().cpu().numpy().astype("<f4").tobytes())
            if progress is not None:
                progress(len(rows))
    return {"dim": dim, "stored_dim": stored, "n_backward": n_backward, **recorded}


def gram_block_params(
    dim: int, n: int, block_params: int | None = None, *, block_memory: int = 4 << 30
) -> int:
    """Coordinates per block of :func:`exact_gram`: ``block_params`` if given (checked), else
    the most whose float32 rows for ``n`` samples fit in ``block_memory`` bytes, at most
    ``dim``; :func:`exact_gram` recomputes the gradients ``⌈dim / block⌉`` times.

    >>> gram_block_params(18_903_040, 10_000)  # Pythia-70m, the paper's n: 177 blocks
    107374
    >>> gram_block_params(1000, 10), gram_block_params(1000, 10, 300)
    (1000, 300)
    """
    if block_params is None:
        return min(dim, max(1, int(block_memory) // (4 * max(n, 1))))
    return check_int(block_params, "block_params", _OWNER, low=1)


def exact_gram(
    model: Any,
    corpus: TokenizedCorpus,
    samples: pd.DataFrame,
    *,
    param_filter: Callable[[str, Any, Any], bool] | str | None = None,
    block_params: int | None = None,
    block_memory: int = 4 << 30,
    head: str = "auto",
    progress: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """The exact Gram matrix ``G = X Xᵀ`` of the samples' gradients ``X`` [n, dim], without
    ever holding ``X``.

    The ``dim`` gradient coordinates (the selected parameters, flattened and concatenated in
    :func:`select_params` order) are cut into consecutive blocks of ``block_params``; a block
    may split a parameter tensor. For each block every sample's gradient is recomputed with
    only the block's tensors requiring gradients, its slice kept as a float32 row of
    ``X_b`` [n, block] on the model's device, and ``X_b X_bᵀ`` added to ``G``. Cost:
    ``n_blocks = ⌈dim / block_params⌉`` times the backward passes of :func:`per_token_gradients`
    (one forward and backward per sample and block) and ``2 n² dim`` flops of products.

    Precision: ``G`` and every product are float64. Gradient cosines are small (the paper's
    reason for exact similarities), a float32 dot product over millions of coordinates loses
    about √dim·2⁻²⁴ of ``|x||y|`` (and TF32 GPU matmuls 2⁻¹¹), so the float32 rows are
    upcast a column slice at a time (≤ 256 MiB of float64 at once) for the products.

    Parameters
    ----------
    model : transformers causal LM
        Gradients are taken on its device.
    corpus : TokenizedCorpus
    samples : DataFrame
        ``doc_id``, ``pos`` (the predicted token's index), sorted by ``doc_id``.
    param_filter : callable, str or None
        As :func:`param_selection`.
    block_params : int, optional
        Coordinates per block [the most whose float32 rows fit in ``block_memory``:
        ``block_memory // (4 n)``, at most ``dim``].
    block_memory : int, default 4 GiB
        Bytes of gradient rows held at once when ``block_params`` is not given.
    head : {"auto", "chunked", "full"}, default "auto"
        How the loss is computed: :func:`quanta.lm.head.resolve_head` (as ``quanta lm
        losses``; "auto" falls back to the model's own logits where the head disagrees).
    progress : callable, optional
        Called with the number of backward passes just done.

    Returns
    -------
    gram : ndarray of float64, shape (n, n)
        ``G[i, j] = <g_i, g_j>`` (units: nats² per parameter unit²).
    info : dict
        ``dim``, ``block_params``, ``n_blocks``, ``n_backward``, ``params`` (selected names),
        ``excluded`` ({name: why}), ``head`` (the path that ran), ``dtype``.
    """
    import torch

    params, path, recorded = _setup(model, corpus, samples, param_filter, head)
    tensors = [p for _, p in params]
    sizes = [p.numel() for p in tensors]
    dim, n = sum(sizes), len(samples)
    block_params = gram_block_params(dim, n, block_params, block_memory=block_memory)
    device = _device(model)
    starts = np.concatenate([[0], np.cumsum(sizes)])  # tensor t holds [starts[t], starts[t+1])
    gram = torch.zeros((n, n), dtype=torch.float64, device=device)
    n_backward = 0
    model.eval()
    for lo in range(0, dim, block_params):
        hi = min(lo + block_params, dim)
        # (tensor, first, last) coordinates of each tensor overlapping [lo, hi)
        parts = [
            (
                t,
                max(lo, int(starts[t])) - int(starts[t]),
                min(hi, int(starts[t + 1])) - int(starts[t]),
            )
            for t in range(len(tensors))
            if starts[t] < hi and starts[t + 1] > lo
        ]
        block = [tensors[t] for t, _, _ in parts]

        def keep(grads: list, parts: list = parts) -> Any:
            return torch.cat(
                [g.reshape(-1)[a:b] for g, (_, a, b) in zip(grads, parts, strict=True)]
            )

        rows = torch.empty((n, hi - lo), dtype=torch.float32, device=device)
        done = 0
        with _OnlyGrads(model, block):
            for chunk in _gradient_rows(
                model, corpus, samples, block, chunk=256, head=path, keep=keep
            ):
                rows[done : done + len(chunk)] = chunk
                done += len(chunk)
                if progress is not None:
                    progress(len(chunk))
        n_backward += n
        step = max(1, (256 << 20) // (8 * max(n, 1)))
        for c in range(0, hi - lo, step):
            x = rows[:, c : c + step].double()  # (n, ≤ step)
            gram.addmm_(x, x.T)
        del rows
    return gram.cpu().numpy(), {
        "dim": dim,
        "block_params": block_params,
        "n_blocks": -(-dim // block_params),
        "n_backward": n_backward,
        **recorded,
        "dtype": "float64",
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
