"""The sizes of a mini-suite trained concurrently in spawned worker processes
(``MiniSuiteConfig.workers``), so that small models, which a second torch thread barely
speeds up (per-op overhead, docs/BENCHMARKS.md), use both cores by training two at once.

Scheduling is longest-processing-time first: the sizes go to one shared queue largest first
(by training FLOPs), and each worker takes the next when it finishes one. A worker trains a
size exactly as :func:`quanta.lm.minisuite.train_minisuite` does in-process (the same
``_Trainer``, batches and checkpoints; same numbers at the same threads per model) and sends
its progress, its ``suite.json`` row and its losses to the parent, which alone writes
``suite.json`` and ``train_log.parquet``. So an interrupted run keeps only the models the
parent recorded; a worker's checkpoints of an unrecorded model are retrained on resume.
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing as mp
import os
import pickle
import queue
import signal
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["cores", "lpt_order", "train_in_workers"]

_POLL_S = 0.5  # how often the parent checks that its workers are alive while it waits
_STOP_S = 10.0  # how long it waits for a stopped worker to exit


def cores() -> int:
    """CPU cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def lpt_order(indices: Sequence[int], cost: Callable[[int], float]) -> list[int]:
    """``indices`` of the sizes, largest ``cost(index)`` (training FLOPs per token; every size
    runs the same steps) first; ties keep the size order."""
    return sorted(indices, key=lambda i: -cost(i))


def train_in_workers(
    cfg: Any,
    todo: Sequence[int],
    chunks: np.ndarray,
    batches: np.ndarray,
    out: Path,
    *,
    trainer: type,
    cost: Callable[[int], float],
    tokenizer: Any,
    progress: Callable[[str, int, int, float], None] | None,
    finished: Callable[[dict[str, Any], list[float]], None],
) -> None:
    """Train the sizes ``todo`` (indices of ``cfg.sizes``) in ``min(cfg.workers, len(todo))``
    spawned processes of ``cfg.threads`` (or cores // workers) torch threads each, each size
    by ``trainer(cfg, index, vocab)`` (:class:`quanta.lm.minisuite._Trainer`, passed in so
    that this module does not import its caller), largest ``cost(index)`` first.

    ``finished(row, losses)`` is called in this process as each model completes;
    ``progress`` after each of its steps. A worker's error is raised here (same type and
    message), a worker that dies without one as ``ChildProcessError`` (an ``OSError``: one line
    at the CLI); on any exit the workers are stopped before this returns."""
    workers = min(cfg.workers, len(todo))
    threads = cfg.threads or max(1, cores() // workers)
    job = dataclasses.replace(cfg, threads=threads, workers=1)
    ctx = mp.get_context("spawn")  # fork would copy torch's thread pools and locks
    with tempfile.TemporaryDirectory(prefix="quanta-suite-") as tmp:
        # Only the chunks the batches use, memory-mapped by every worker (not pickled to each).
        used, local = np.unique(batches, return_inverse=True)
        data = Path(tmp) / "chunks.npy"
        np.save(data, chunks[used])
        tasks: Any = ctx.Queue()
        results: Any = ctx.Queue()
        for index in lpt_order(todo, cost):
            tasks.put(index)
        for _ in range(workers):
            tasks.put(None)  # one stop per worker, after the work
        # The parent's tokenizer itself (pickled), not one reloaded from disk: the copies saved
        # beside the checkpoints are then the same bytes as in one process.
        batches = local.reshape(batches.shape)
        args = (job, trainer, str(out), tokenizer, str(data), batches, tasks, results, os.getpid())
        procs = [ctx.Process(target=_work, args=args, daemon=True) for _ in range(workers)]
        try:
            for p in procs:
                p.start()
            _collect(results, procs, set(todo), progress, finished)
        finally:  # Ctrl-C, an error, or done: no worker outlives the call
            for p in procs:
                if p.is_alive():
                    p.terminate()
            for p in procs:
                with contextlib.suppress(AssertionError):  # never started
                    p.join(_STOP_S)
            for q in (tasks, results):
                q.cancel_join_thread()  # a terminated worker's unread messages are dropped
                q.close()


def _collect(
    results: Any,
    procs: list[Any],
    remaining: set[int],
    progress: Callable[[str, int, int, float], None] | None,
    finished: Callable[[dict[str, Any], list[float]], None],
) -> None:
    """Read the workers' messages until every size in ``remaining`` is finished."""
    while remaining:
        # Every turn, not only when the queue is quiet: the others may keep it busy for long.
        dead = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
        if dead:  # killed (out of memory, a signal) or orphaned: its size would never come
            raise ChildProcessError(
                f"A mini-suite worker exited with status {dead[0]} before {len(remaining)} "
                "size(s) were trained; rerun the same command to resume."
            )
        try:
            message = results.get(timeout=_POLL_S)
        except queue.Empty:
            if all(p.exitcode is not None for p in procs):
                raise ChildProcessError(
                    f"The mini-suite workers exited before {len(remaining)} size(s) were "
                    "trained; rerun the same command to resume."
                ) from None
            continue
        kind = message[0]
        if kind == "step":
            if progress is not None:
                progress(*message[1:])
        elif kind == "done":
            _, index, row, losses = message
            finished(row, losses)
            remaining.discard(index)
        else:
            raise _unpickle_error(message[2])


def _work(
    cfg: Any,
    trainer_cls: type,
    out: str,
    tokenizer: Any,
    data: str,
    batches: np.ndarray,
    tasks: Any,
    results: Any,
    parent: int,
) -> None:
    """A worker: train the sizes it takes from ``tasks`` until it takes ``None``."""
    # The parent owns Ctrl-C (the terminal sends it to the whole group): it stops us.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # the parent's display owns the terminal
    torch.set_num_threads(cfg.threads)
    chunks = np.asarray(np.load(data, mmap_mode="r"))  # a plain view of the map

    def report(name: str, step: int, total: int, loss: float) -> None:
        if os.getppid() != parent:  # orphaned (the parent was killed): stop
            raise SystemExit(1)
        results.put(("step", name, step, total, loss))

    while (index := tasks.get()) is not None:
        try:
            trainer = trainer_cls(cfg, index, len(tokenizer))
            losses = trainer.train(chunks, batches, Path(out), tokenizer, report)
            results.put(("done", index, trainer.row(losses), losses))
        except Exception as exc:
            results.put(("error", index, _pickle_error(exc)))
            return


def _pickle_error(exc: Exception) -> bytes:
    """``exc`` as bytes the parent can raise again; one that does not survive pickling (or
    comes back different) becomes a RuntimeError with its type and message."""
    try:
        blob = pickle.dumps(exc)
        back = pickle.loads(blob)
        if type(back) is type(exc) and str(back) == str(exc):
            return blob
    except Exception:  # any failure to round-trip means: send the text instead
        pass
    return pickle.dumps(RuntimeError(f"{type(exc).__name__}: {exc}"))


def _unpickle_error(blob: bytes) -> BaseException:
    error = pickle.loads(blob)  # bytes from our own worker
    return error if isinstance(error, BaseException) else RuntimeError(str(error))
