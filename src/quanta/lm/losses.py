"""Per-token losses of a model suite on a corpus: batched, memory-bounded, resumable.

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

On disk (:func:`run_losses`), ``DIR`` is a quanta run directory::

    manifest.json        suite spec and resolved models, corpus spec, max_len, bos, dtype
    corpus/              the tokenized corpus and its index table (quanta.lm.corpus)
    columns/<i>.npy      model i's losses, written atomically when the model is done (resume)
    rows/<i>.json        its models.parquet row, written after the .npy by whichever process or
                         worker computed it (so a restarted driver reuses finished remote work)
    losses.npy           [n_tokens, n_models] float32 (or float16), row r = index row r;
                         open with numpy.load(..., mmap_mode="r")
    models.parquet       one row per column: model (the column index), name, revision, step
                         (from a step<N> revision, else -1), label, n_params (non-embedding),
                         mean loss, tokens/s, head ("chunked" | "full": the path that ran)

With ``checkpoints=`` (training dynamics) every column is one (model, revision): ``all`` or
named models of the suite, each over its revisions (optionally only ``revisions=``).
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from quanta._validation import QuantaInputError, check_choice, check_device, check_int
from quanta.executors import Task, check_executor, gpus_for, remote_device, run_tasks, torch_threads
from quanta.lm.corpus import TokenizedCorpus

__all__ = [
    "HEADS",
    "HeadFallbackWarning",
    "column_task",
    "next_token_targets",
    "paper_token_losses",
    "resolve_head",
    "run_losses",
    "token_losses",
]

_OWNER = "quanta lm losses"
KIND = "lm.losses"
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


# --------------------------------------------------------------------------- the run directory


def _check_one_tokenizer(refs: list[Any], tokenizer: Any) -> None:
    """Refuse a suite whose models tokenize differently: the corpus is tokenized once, with the
    first model's tokenizer, so every column must read the same token ids. Checked for local
    models (a tokenizer on disk); hub models of one family (Pythia) share theirs by design."""
    from quanta.lm.suite import load_tokenizer

    vocab = tokenizer.get_vocab()
    seen = {refs[0].source}
    for ref in refs[1:]:
        if ref.source in seen or ref.local_path is None:
            continue
        seen.add(ref.source)
        other = load_tokenizer(ref).get_vocab()
        if other != vocab:
            differ = sum(other.get(t) != i for t, i in vocab.items()) + len(set(other) - set(vocab))
            raise QuantaInputError(
                f"The models of a suite must share one tokenizer (the corpus is tokenized once): "
                f"{ref.label()!r} maps {differ} of its {len(other):,} tokens differently from "
                f"{refs[0].label()!r} ({len(vocab):,} tokens); compute their losses separately."
            )


def _document_length(refs: list[Any], max_len: int | None) -> int:
    """``max_len`` checked against the shortest context of the models (``max_position_embeddings``
    of each distinct model; local configs are read from disk), or that context capped at 1024."""
    from transformers import AutoConfig

    from quanta.lm.suite import where_loaded

    contexts: dict[str, int] = {}
    for ref in refs:
        if ref.name in contexts:
            continue
        where, kwargs = where_loaded(ref)
        try:
            config = AutoConfig.from_pretrained(where, **kwargs)  # kwargs: revision, cache
        except OSError as exc:
            raise QuantaInputError(
                f"Cannot read the config of {ref.label()!r}: {exc}".splitlines()[0]
            ) from None
        context = getattr(config, "max_position_embeddings", None)
        if isinstance(context, int) and context > 1:
            contexts[ref.name] = context
    if not contexts:
        return 1024 if max_len is None else check_int(max_len, "max_len", _OWNER, low=2)
    name, context = min(contexts.items(), key=lambda item: item[1])
    if max_len is None:
        return min(1024, context)
    max_len = check_int(max_len, "max_len", _OWNER, low=2)
    if max_len > context:
        raise QuantaInputError(
            f"max_len {max_len} exceeds the context model {name!r} was built for ({context} "
            f"tokens, its max_position_embeddings); use at most {context}."
        )
    return max_len


def run_losses(
    suite: str,
    corpus: str,
    out: str | Path,
    *,
    checkpoints: str | None = None,
    revisions: str | list[str] | None = None,
    max_docs: int | None = None,
    max_len: int | None = None,
    bos: bool = False,
    text_field: str = "text",
    dtype: str = "float32",
    batch_tokens: int = 8192,
    head: str = "auto",
    device: str = "cpu",
    threads: int | None = None,
    executor: str = "local",
    ray_address: str | None = None,
    slurm_array_parallelism: int | None = None,
    on_model: Callable[[str, int], None] | None = None,
    on_tokens: Callable[[int], None] | None = None,
) -> pd.DataFrame:
    """Per-token losses of every model of ``suite`` on ``corpus`` into ``out`` (resumable per
    model). ``on_model(label, n_tokens)`` announces each model; ``on_tokens(n)`` counts tokens.
    ``head`` is passed to :func:`token_losses`; the path each model took is its row's
    ``head``. ``checkpoints`` / ``revisions`` select checkpoints (training dynamics: one column
    per model × revision; see :func:`quanta.lm.suite.resolve_suite`). Returns the models table.

    ``executor`` (``local``, ``ray``, ``slurm``, ``submitit-local``; see
    :mod:`quanta.executors`) computes the missing columns as one task each: it loads the saved
    corpus and its model, runs with ``threads`` torch threads (default: torch's own locally, 1
    on remote workers), requests that many CPUs and, on CUDA, one GPU, and writes its column
    file; this process tokenizes, writes the tables and resumes as locally, so every executor
    gives the same files. ``on_model``/``on_tokens`` report local progress only.

    Every refusal (unknown suite or model, missing revision, a local checkpoint without
    ``config.json``, a hub model that is neither downloadable nor cached — see
    :func:`quanta.lm.suite.where_loaded` — or an unusable executor) happens before ``out`` is
    created or touched.

    ``max_len`` (tokens per document) defaults to the models' context, at most 1024, and may
    not exceed it: past the positions a model was trained on (a rotary model accepts them
    silently) its losses measure extrapolation, not what it learned."""
    from quanta.config import config_hash
    from quanta.lm.corpus import load_corpus, load_documents, save_corpus, tokenize_documents
    from quanta.lm.suite import (
        load_tokenizer,
        resolve_suite,
        revision_step,
        where_loaded,
    )
    from quanta.store import RunDir, write_parquet

    dtype = check_choice(dtype, "dtype", _OWNER, ["float32", "float16"])
    head = check_choice(head, "head", _OWNER, list(HEADS))
    refs = resolve_suite(suite, checkpoints=checkpoints, revisions=revisions)
    out = Path(out).absolute()  # remote workers may start in another directory
    executor = check_executor(executor, ray_address, owner=_OWNER)
    if slurm_array_parallelism is not None:
        check_int(slurm_array_parallelism, "slurm_array_parallelism", _OWNER, low=1)
    if threads is not None:
        threads = check_int(threads, "threads", _OWNER, low=1)
    if executor in ("local", "submitit-local"):  # ray/slurm workers bring their own GPUs
        check_device(device, "quanta lm losses")
    max_len = _document_length(refs, max_len)
    config: dict[str, Any] = {
        "suite": suite,
        "checkpoints": checkpoints,
        **({"revisions": revisions} if revisions is not None else {}),  # old runs' hash kept
        "models": [{"name": r.name, "source": r.source, "revision": r.revision} for r in refs],
        "corpus": corpus,
        "max_docs": max_docs,
        "max_len": max_len,
        "bos": bos,
        "text_field": text_field,
        "dtype": dtype,
    }
    # Check every model is loadable before claiming the directory (no hub hang, no write): a
    # local one has its config.json, a hub one is downloadable or cached (one metadata request
    # or a cache lookup each), so a model the hub or cache lacks is refused up front, not after
    # hours of the others. Models whose column a previous run finished are not needed again.
    tokenizer = load_tokenizer(refs[0])
    for i, ref in enumerate(refs[1:], start=1):
        if not (out / "columns" / f"{i}.npy").exists():
            where_loaded(ref)
    _check_one_tokenizer(refs, tokenizer)
    run = RunDir(out, KIND, config, config_hash(config))
    tokens = None
    if run.read_manifest() is None:  # a new run: read the corpus before writing anything
        docs, unreadable = load_documents(corpus, max_docs=max_docs, text_field=text_field)
        tokens = tokenize_documents(docs, tokenizer, max_len=max_len, bos=bos)
        tokens.n_skipped_unreadable = unreadable
    status = run.open()
    if status != "complete":
        _cleanup_stale(out)
    t0 = time.perf_counter()
    if (out / "corpus" / "corpus.json").exists():
        tokens = load_corpus(out / "corpus")
    else:
        if tokens is None:  # claimed earlier but interrupted before the corpus was saved
            docs, unreadable = load_documents(corpus, max_docs=max_docs, text_field=text_field)
            tokens = tokenize_documents(docs, tokenizer, max_len=max_len, bos=bos)
            tokens.n_skipped_unreadable = unreadable
        save_corpus(tokens, out / "corpus")
    rows: dict[int, dict[str, Any]] = {}
    models_file = out / "models.parquet"
    known = pd.read_parquet(models_file) if models_file.exists() else pd.DataFrame()
    settings: dict[str, Any] = {"head": head, "batch_tokens": batch_tokens, "dtype": dtype}
    pending = []
    for i in range(len(refs)):
        row = _finished_row(out, i, known)
        if row is None:
            pending.append(i)
        else:
            row.setdefault("step", revision_step(row["revision"] or None))  # older runs
            rows[i] = row

    def finished(i: int, row: dict[str, Any]) -> None:
        rows[i] = row
        write_parquet(models_file, pd.DataFrame([rows[k] for k in sorted(rows)]))

    if executor == "local":  # in this process, so tokens can be reported as they are done
        with torch_threads(threads):
            for i in pending:
                if on_model is not None:
                    on_model(refs[i].label(), tokens.n_predicted)
                row = _column(
                    out, i, refs[i], tokens, **settings, device=device, on_tokens=on_tokens
                )
                finished(i, row)
    else:
        where = remote_device(device)
        # A local model's directory, absolute: remote workers may start in another directory.
        portable = [
            replace(r, source=str(Path(r.source).absolute())) if r.local_path else r for r in refs
        ]
        tasks = [
            Task(
                column_task,
                (str(out), i, portable[i], settings, where),
                threads or 1,
                gpus_for(where),
            )
            for i in pending
        ]
        run_tasks(
            executor,
            tasks,
            ray_address=ray_address,
            folder=out / "submitit",
            slurm_array_parallelism=slurm_array_parallelism,
            on_done=lambda k, row: finished(pending[k], row),
        )
    _assemble(out, len(refs), tokens.n_predicted, dtype)
    run.write_manifest(
        status="complete",
        wall_seconds=time.perf_counter() - t0,
        extra={"n_models": len(refs), "n_tokens": tokens.n_predicted, "n_docs": tokens.n_docs},
    )
    return pd.DataFrame([rows[k] for k in sorted(rows)])


def _finished_row(out: Path, i: int, known: pd.DataFrame) -> dict[str, Any] | None:
    """Column ``i``'s models-table row if its losses are on disk (from ``rows/<i>.json``,
    written after the column, or the models table of runs made before rows were kept)."""
    if not (out / "columns" / f"{i}.npy").exists():
        return None
    sidecar = out / "rows" / f"{i}.json"
    if sidecar.exists():
        return dict(json.loads(sidecar.read_text()))
    if len(known) and (known["model"] == i).any():
        return {str(k): v for k, v in known[known["model"] == i].iloc[0].to_dict().items()}
    return None


def _column(
    out: Path,
    i: int,
    ref: Any,
    tokens: TokenizedCorpus,
    *,
    head: str,
    batch_tokens: int,
    dtype: str,
    device: str,
    on_tokens: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Compute model ``ref``'s losses into ``out/columns/<i>.npy`` and its models-table row into
    ``out/rows/<i>.json`` (each atomically, the row last: a row means a finished column)."""
    from quanta.lm.suite import load_model, non_embedding_params, revision_step
    from quanta.store import atomic_write

    model = load_model(ref, device=device)
    start = time.perf_counter()
    # Resolved here to record it; token_losses checks a "chunked" again (one 64-token
    # forward), which keeps "chunked" an assertion wherever it is passed.
    path = resolve_head(model, tokens, head=head, device=device)
    losses = token_losses(
        model, tokens, batch_tokens=batch_tokens, head=path, device=device, progress=on_tokens
    )
    seconds = time.perf_counter() - start
    with atomic_write(out / "columns" / f"{i}.npy") as fh:
        np.save(fh, losses.astype(dtype))
    row = {
        "model": i,
        "name": ref.name,
        "revision": ref.revision or "",
        "step": revision_step(ref.revision),
        "label": ref.label(),
        "n_params": non_embedding_params(model),
        "mean_loss": float(losses.mean(dtype=np.float64)),
        "seconds": seconds,
        "tokens_per_second": tokens.n_predicted / max(seconds, 1e-9),
        "head": path,
    }
    with atomic_write(out / "rows" / f"{i}.json", "w") as fh:
        json.dump(row, fh)
    return row


def column_task(
    out: str, i: int, ref: Any, settings: dict[str, Any], device: str
) -> dict[str, Any]:
    """One remote column of :func:`run_losses`: the corpus saved in ``out``, model ``ref``,
    losses into ``out/columns/<i>.npy``; returns its models-table row. Importable by workers."""
    from quanta.lm.corpus import load_corpus

    tokens = load_corpus(Path(out) / "corpus")
    return _column(Path(out), i, ref, tokens, **settings, device=device)


def _cleanup_stale(out: Path) -> None:
    """Remove temporary files an interrupted write left (never a finished file)."""
    for tmp in out.rglob(".*.tmp"):
        tmp.unlink(missing_ok=True)


def _assemble(out: Path, n_models: int, n_tokens: int, dtype: str) -> None:
    """Write ``losses.npy`` [n_tokens, n_models] from the per-model columns, atomically and in
    row blocks (memory stays O(block × models))."""
    from quanta.store import atomic_write

    columns = [np.load(out / "columns" / f"{i}.npy", mmap_mode="r") for i in range(n_models)]
    header = {"descr": np.dtype(dtype).str, "fortran_order": False, "shape": (n_tokens, n_models)}
    block = 1 << 18
    with atomic_write(out / "losses.npy") as fh:
        np.lib.format.write_array_header_1_0(fh, header)
        for i in range(0, n_tokens, block):
            part = np.stack([c[i : i + block] for c in columns], axis=1).astype(dtype)
            fh.write(np.ascontiguousarray(part).tobytes())
