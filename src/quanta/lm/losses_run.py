"""Per-token losses of a model suite into a run directory: resumable per model, one column per
model (× revision), computed here or as one task each on an executor of
:mod:`quanta.executors`. The engine, one model on one corpus, is :mod:`quanta.lm.losses`.

On disk (:func:`run_losses`), ``DIR`` is a quanta run directory::

    manifest.json        suite spec and resolved models, corpus spec, max_len, bos, dtype
    corpus/              the tokenized corpus and its index table (quanta.lm.corpus)
    columns/<i>.npy      model i's losses, written atomically when the model is done (resume)
    rows/<i>.json        its models.parquet row, written after the .npy by whichever process or
                         worker computed it (so a restarted driver reuses finished remote work)
    losses.npy           [n_tokens, n_models] float32 (or float16), row r = index row r;
                         open with numpy.load(..., mmap_mode="r")
    models.parquet       one row per column: model (the column index), name, revision, step
                         and tokens (from the revision's name or the suite's tokens per step,
                         else -1; ModelRef.tokens), label, seed
                         (-1: none), tag, n_params (non-embedding; a suite file's own where it
                         states one), mean loss, tokens/s, head ("chunked" | "full": the path
                         that ran), weights_fingerprint (quanta.lm.fingerprint) and
                         duplicate_of (the label of an earlier column with the same weights,
                         else ""; a DuplicateCheckpointWarning names them all in one line)

With ``checkpoints=`` (training dynamics) every column is one (model, revision): ``all`` or
named models of the suite, each over its revisions (optionally only ``revisions=``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from quanta._validation import QuantaInputError, check_choice, check_device, check_int
from quanta.executors import Task, check_executor, gpus_for, remote_device, run_tasks, torch_threads
from quanta.lm.corpus import TokenizedCorpus
from quanta.lm.losses import _OWNER, HEADS, resolve_head, token_losses
from quanta.lock import locked

__all__ = ["KIND", "column_task", "run_losses"]

KIND = "lm.losses"
#: The finished files of a losses directory (hashed in its manifest, checked on reuse).
FILES = ("losses.npy", "models.parquet", "columns/*.npy", "rows/*.json", "corpus/*")
_CORPUS_FILES = ("corpus.json", "tokens.npy", "offsets.npy", "docs.parquet", "index.parquet")


@locked("out")
def run_losses(
    suite: str,
    corpus: str,
    out: str | Path,
    *,
    checkpoints: str | None = None,
    revisions: str | list[str] | None = None,
    max_docs: int | None = None,
    max_len: int | None = None,
    windows: int = 1,
    bos: bool = False,
    text_field: str = "text",
    decode_errors: str = "strict",
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
    ``head`` is passed to :func:`quanta.lm.losses.token_losses`; the path each model took is
    its row's ``head``. ``checkpoints`` / ``revisions`` select checkpoints (training dynamics:
    one column per model × revision; see :func:`quanta.lm.suite.resolve_suite`). Returns the
    models table.

    ``executor`` (``local``, ``ray``, ``slurm``, ``submitit-local``; see
    :mod:`quanta.executors`) computes the missing columns as one task each: it loads the saved
    corpus and its model, runs with ``threads`` torch threads (default: torch's own locally, 1
    on remote workers), requests that many CPUs and, on CUDA, one GPU, and writes its column
    file; this process tokenizes, writes the tables and resumes as locally, so every executor
    gives the same files. ``on_model``/``on_tokens`` report local progress only.

    Every refusal (unknown suite or model, missing revision, a local checkpoint without
    ``config.json`` or without a tokenizer, a hub model that is neither downloadable nor cached
    — see :func:`quanta.lm.suite.where_loaded` —, a model that is not causal (BERT), models with
    different tokenizers, a suite file mixing context lengths, or an unusable executor)
    happens before ``out`` is created or touched.

    ``max_len`` (tokens per document) defaults to the models' context, at most 1024, and may
    not exceed it: past the positions a model was trained on (a rotary model accepts them
    silently) its losses measure extrapolation, not what it learned. ``windows > 1`` scores up
    to that many consecutive ``max_len``-token windows of each document, each as a document of
    its own (:func:`quanta.lm.corpus.tokenize_documents`)."""
    from quanta.config import config_hash
    from quanta.lm.suite import resolve_suite
    from quanta.store import RunDir

    dtype = check_choice(dtype, "dtype", _OWNER, ["float32", "float16"])
    decode_errors = check_choice(decode_errors, "decode_errors", _OWNER, ["strict", "replace"])
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
    config: dict[str, Any] = {
        "suite": suite,
        "checkpoints": checkpoints,
        **({"revisions": revisions} if revisions is not None else {}),  # old runs' hash kept
        "models": [_model_entry(r) for r in refs],
        "corpus": corpus,
        "max_docs": max_docs,
        "max_len": _check_configs(refs, max_len, same_context=suite.strip().endswith(".toml")),
        "bos": bos,
        "text_field": text_field,
        # Only when not the default, so runs made before the options keep their hash.
        **({"decode_errors": decode_errors} if decode_errors != "strict" else {}),
        **({"windows": check_int(windows, "windows", _OWNER, low=1)} if windows != 1 else {}),
        "dtype": dtype,
    }
    job = _Job(
        out=out,
        refs=refs,
        config=config,
        tokenizer=_check_models(refs, out),
        settings={"head": head, "batch_tokens": batch_tokens, "dtype": dtype},
        device=device,
        threads=threads,
        executor=executor,
        ray_address=ray_address,
        slurm_array_parallelism=slurm_array_parallelism,
    )
    stored = _portable(config, refs, out)
    # Runs made before paths were stored relative keep their hash (an alias).
    old = frozenset({config_hash(config)})
    run = RunDir(out, KIND, stored, config_hash(stored), files=FILES, aliases=old)
    tokens = _open(run, job)
    t0 = time.perf_counter()
    tokens = _saved_corpus(job, tokens)
    # models.parquet is rewritten also when every column was reused (a damaged table was
    # removed on reopening).
    rows = _flag_duplicates(out, _columns(job, tokens, on_model, on_tokens))
    _assemble(out, len(refs), tokens.n_predicted, dtype)
    run.write_manifest(
        status="complete",
        wall_seconds=time.perf_counter() - t0,
        extra={"n_models": len(refs), "n_tokens": tokens.n_predicted, "n_docs": tokens.n_docs},
    )
    return pd.DataFrame([rows[k] for k in sorted(rows)])


def _portable(config: dict[str, Any], refs: list[Any], out: Path) -> dict[str, Any]:
    """``config`` as the directory records it: the suite, local models and corpus as
    :func:`quanta.store.portable_path` stores them (relative inside the run's tree), so the
    tree can be moved or copied and still resume."""
    from quanta.store import portable_path

    models = [
        {**m, "source": portable_path(m["source"], out) if r.local_path else m["source"]}
        for m, r in zip(config["models"], refs, strict=True)
    ]
    suite = ",".join(portable_path(s, out) for s in str(config["suite"]).split(","))
    corpus = portable_path(config["corpus"], out)
    return {**config, "suite": suite, "models": models, "corpus": corpus}


@dataclass(frozen=True)
class _Job:
    """What :func:`run_losses` checked and resolved before ``out`` is touched."""

    out: Path  # absolute
    refs: list[Any]  # quanta.lm.suite.ModelRef, one per column
    config: dict[str, Any]  # the directory's identity (hashed)
    tokenizer: Any  # the first model's: the corpus is tokenized once, with it
    settings: dict[str, Any]  # every column's: head, batch_tokens, dtype
    device: str
    threads: int | None
    executor: str
    ray_address: str | None
    slurm_array_parallelism: int | None


def _check_models(refs: list[Any], out: Path) -> Any:
    """The first model's tokenizer, once every model is known loadable and all share it."""
    from quanta.lm.suite import load_tokenizer, where_loaded

    # Check every model is loadable before claiming the directory (no hub hang, no write): a
    # local one has its config.json, a hub one is downloadable or cached (one metadata request
    # or a cache lookup each), so a model the hub or cache lacks is refused up front, not after
    # hours of the others. Models whose column a previous run finished are not needed again.
    tokenizer = load_tokenizer(refs[0])
    for i, ref in enumerate(refs[1:], start=1):
        if not (out / "columns" / f"{i}.npy").exists():
            where_loaded(ref)
    _check_one_tokenizer(refs, tokenizer)
    return tokenizer


def _tokenized(job: _Job) -> TokenizedCorpus:
    """The job's corpus, read and tokenized (documents that cannot be read are counted)."""
    from quanta.lm.corpus import load_documents, tokenize_documents

    c = job.config
    docs, unreadable = load_documents(
        c["corpus"],
        max_docs=c["max_docs"],
        text_field=c["text_field"],
        decode_errors=c.get("decode_errors", "strict"),
    )
    tokens = tokenize_documents(
        docs, job.tokenizer, max_len=c["max_len"], bos=c["bos"], windows=c.get("windows", 1)
    )
    tokens.n_skipped_unreadable = unreadable
    return tokens


def _open(run: Any, job: _Job) -> TokenizedCorpus | None:
    """Claim (or reopen) the directory; a new run reads its corpus first, so an unreadable one
    is refused before anything is written. Temporary files that processes no longer running
    left go; those of a live process (a worker still writing) stay."""
    from quanta.store import cleanup_temporary

    tokens = _tokenized(job) if run.read_manifest() is None else None
    if run.open() != "complete":
        cleanup_temporary(job.out)
    return tokens


def _saved_corpus(job: _Job, tokens: TokenizedCorpus | None) -> TokenizedCorpus:
    """The corpus saved in the directory, saved first where it is not yet."""
    from quanta.lm.corpus import load_corpus, save_corpus

    if all((job.out / "corpus" / name).exists() for name in _CORPUS_FILES):
        return load_corpus(job.out / "corpus")
    if tokens is None:  # claimed earlier but interrupted before the corpus was saved
        tokens = _tokenized(job)
    save_corpus(tokens, job.out / "corpus")
    return tokens


def _columns(
    job: _Job,
    tokens: TokenizedCorpus,
    on_model: Callable[[str, int], None] | None,
    on_tokens: Callable[[int], None] | None,
) -> dict[int, dict[str, Any]]:
    """Every column's models-table row: finished ones reused, the others computed here or as
    one task each; ``models.parquet`` rewritten as each finishes."""
    from quanta.store import write_parquet

    out, refs = job.out, job.refs
    rows = _finished_rows(out, len(refs))
    pending = [i for i in range(len(refs)) if i not in rows]

    def finished(i: int, row: dict[str, Any]) -> None:
        rows[i] = row
        write_parquet(out / "models.parquet", pd.DataFrame([rows[k] for k in sorted(rows)]))

    if job.executor == "local":  # in this process, so tokens can be reported as they are done
        with torch_threads(job.threads):
            for i in pending:
                if on_model is not None:
                    on_model(refs[i].label(), tokens.n_predicted)
                row = _column(
                    out, i, refs[i], tokens, **job.settings, device=job.device, on_tokens=on_tokens
                )
                finished(i, row)
        return rows
    where = remote_device(job.device)
    # A local model's directory, absolute: remote workers may start in another directory.
    portable = [
        replace(r, source=str(Path(r.source).absolute())) if r.local_path else r for r in refs
    ]
    tasks = [
        Task(
            column_task,
            (str(out), i, portable[i], job.settings, where),
            job.threads or 1,
            gpus_for(where),
        )
        for i in pending
    ]
    run_tasks(
        job.executor,
        tasks,
        ray_address=job.ray_address,
        folder=out / "submitit",
        slurm_array_parallelism=job.slurm_array_parallelism,
        on_done=lambda k, row: finished(pending[k], row),
    )
    return rows


def _finished_rows(out: Path, n_models: int) -> dict[int, dict[str, Any]]:
    """The models-table rows of the columns already on disk."""
    from quanta.lm.suite import revision_step

    models_file = out / "models.parquet"
    known = pd.read_parquet(models_file) if models_file.exists() else pd.DataFrame()
    rows: dict[int, dict[str, Any]] = {}
    for i in range(n_models):
        row = _finished_row(out, i, known)
        if row is not None:
            row.setdefault("step", revision_step(row["revision"] or None))  # older runs
            rows[i] = row
    return rows


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


def _model_entry(ref: Any) -> dict[str, Any]:
    """Column ``ref`` in the run's configuration (its identity): name, source, revision, and
    the seed, tag and stated size where the suite gives them (absent otherwise, so the
    configuration hash of older runs is unchanged)."""
    entry: dict[str, Any] = {"name": ref.name, "source": ref.source, "revision": ref.revision}
    extra = {"seed": ref.seed, "tag": ref.tag or None, "n_params": ref.n_params}
    return {**entry, **{k: v for k, v in extra.items() if v is not None}}


def _check_configs(refs: list[Any], max_len: int | None, *, same_context: bool) -> int:
    """The document length, once every distinct model's config is read (local ones from disk,
    hub ones through the cache or one request each) and known to be a causal LM.

    ``max_len`` is checked against the shortest context (``max_position_embeddings``) of the
    models, or defaults to it capped at 1024; with ``same_context`` (a user suite file) models
    of different contexts are refused."""
    found: list[tuple[str, int]] = []  # (model name, context) of every distinct model
    seen: set[str] = set()
    for ref in refs:
        key = str(ref.local_path or ref.source)
        if key in seen:
            continue
        seen.add(key)
        config = _read_config(ref)
        _check_causal(ref, config)
        context = getattr(config, "max_position_embeddings", None)
        if isinstance(context, int) and context > 1:
            found.append((ref.name, context))
    if same_context and len({c for _, c in found}) > 1:
        (short, n_short), (long, n_long) = min(found, key=_second), max(found, key=_second)
        raise QuantaInputError(
            f"The models of a suite file must share one context length: {short!r} reads "
            f"{n_short} tokens, {long!r} {n_long} (max_position_embeddings); list models of one "
            "context per file."
        )
    contexts: dict[str, int] = {}
    for name, context in found:
        contexts[name] = min(context, contexts.get(name, context))
    return _document_length(contexts, max_len)


def _second(item: tuple[str, int]) -> int:
    return item[1]


def _read_config(ref: Any) -> Any:
    from transformers import AutoConfig

    from quanta.lm.suite import where_loaded

    where, kwargs = where_loaded(ref)
    try:
        return AutoConfig.from_pretrained(where, **kwargs)  # kwargs: revision, cache
    except (OSError, ValueError) as exc:
        raise QuantaInputError(
            f"Cannot read the config of {ref.label()!r}: {exc}".splitlines()[0]
        ) from None


def _check_causal(ref: Any, config: Any) -> None:
    """Refuse a model that does not predict each token from the ones before it: a model type
    transformers has no causal-LM class for, or an encoder family (BERT, RoBERTa, …) whose
    config is not a decoder's (its causal-LM class would attend to the future tokens)."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    kind = getattr(config, "model_type", "")
    encoder = kind in MODEL_FOR_MASKED_LM_MAPPING_NAMES and not getattr(config, "is_decoder", False)
    if kind not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES or encoder:
        why = "an encoder (attends to later tokens)" if encoder else "no causal-LM class"
        raise QuantaInputError(
            f"{ref.label()!r} is not a causal language model ({kind or 'no model_type'}: "
            f"{why}); per-token losses need a decoder that predicts each token from the ones "
            "before it (GPT-2, GPT-NeoX, Llama, …)."
        )


def _document_length(contexts: dict[str, int], max_len: int | None) -> int:
    """``max_len`` checked against the shortest of ``contexts`` (label → context), or that
    context capped at 1024."""
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


def _flag_duplicates(out: Path, rows: dict[int, dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """Every row's ``duplicate_of`` (:func:`quanta.lm.fingerprint.duplicate_checkpoints`),
    ``models.parquet`` rewritten with it, and one :class:`DuplicateCheckpointWarning` naming
    every duplicate."""
    import warnings

    from quanta.lm.fingerprint import (
        DuplicateCheckpointWarning,
        duplicate_checkpoints,
        duplicate_message,
    )
    from quanta.store import write_parquet

    order = sorted(rows)
    labels = [rows[i]["label"] for i in order]
    duplicates = duplicate_checkpoints(
        [rows[i].get("weights_fingerprint", "") for i in order], labels
    )
    for i, dup in zip(order, duplicates, strict=True):
        rows[i] = {**rows[i], "duplicate_of": dup}
    write_parquet(out / "models.parquet", pd.DataFrame([rows[i] for i in order]))
    message = duplicate_message(labels, duplicates)
    if message is not None:
        warnings.warn(message, DuplicateCheckpointWarning, stacklevel=3)
    return rows


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
    from quanta.lm.fingerprint import weights_fingerprint
    from quanta.lm.registry import parse_revision
    from quanta.lm.suite import load_model, non_embedding_params

    model = load_model(ref, device=device)
    fingerprint = weights_fingerprint(model)
    start = time.perf_counter()
    # Resolved here to record it; token_losses checks a "chunked" again (one 64-token
    # forward), which keeps "chunked" an assertion wherever it is passed.
    path = resolve_head(model, tokens, head=head, device=device)
    losses = token_losses(
        model, tokens, batch_tokens=batch_tokens, head=path, device=device, progress=on_tokens
    )
    seconds = time.perf_counter() - start
    step, trained = parse_revision(ref.revision)[0], ref.tokens()
    row = {
        "model": i,
        "name": ref.name,
        "revision": ref.revision or "",
        "step": -1 if step is None else step,
        "tokens": -1 if trained is None else trained,
        "label": ref.label(),
        "seed": -1 if ref.seed is None else ref.seed,
        "tag": ref.tag,
        "n_params": ref.n_params or non_embedding_params(model),
        "mean_loss": float(losses.mean(dtype=np.float64)),
        "seconds": seconds,
        "tokens_per_second": tokens.n_predicted / max(seconds, 1e-9),
        "head": path,
        "weights_fingerprint": fingerprint,
    }
    _write_column(out, i, losses.astype(dtype), row)
    return row


def _write_column(out: Path, i: int, losses: np.ndarray, row: dict[str, Any]) -> None:
    """Column ``i``'s losses, then its row (each atomically: a row means a finished column)."""
    from quanta.store import atomic_write

    with atomic_write(out / "columns" / f"{i}.npy") as fh:
        np.save(fh, losses)
    with atomic_write(out / "rows" / f"{i}.json", "w") as fh:
        json.dump(row, fh)


def column_task(
    out: str, i: int, ref: Any, settings: dict[str, Any], device: str
) -> dict[str, Any]:
    """One remote column of :func:`run_losses`: the corpus saved in ``out``, model ``ref``,
    losses into ``out/columns/<i>.npy``; returns its models-table row. Importable by workers."""
    from quanta.lm.corpus import load_corpus

    tokens = load_corpus(Path(out) / "corpus")
    return _column(Path(out), i, ref, tokens, **settings, device=device)


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
