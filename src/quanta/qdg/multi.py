"""QDG over several models or checkpoints of one losses directory: one ordinary
``quanta qdg run`` directory per model, each computed by one task on an executor of
:mod:`quanta.executors` (local, Ray, SLURM array, submitit-local). Layout::

    OUT/<model_dir_name(label)>/   what ``run_qdg(losses, OUT/<name>, model=label, …)`` writes
    OUT/submitit/                  submitit's job scripts and logs (slurm, submitit-local)
"""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from quanta._validation import QuantaInputError, check_device, check_int
from quanta.executors import Task, check_executor, gpus_for, remote_device, run_tasks, torch_threads
from quanta.lock import locked
from quanta.qdg.run import _OWNER, _claim, _prepare, _Settings, pick_model, run_qdg

__all__ = ["model_dir_name", "qdg_task", "run_qdg_models"]


@locked("out")
def run_qdg_models(
    losses_dir: str | Path,
    out: str | Path,
    models: list[int | str],
    *,
    executor: str = "local",
    ray_address: str | None = None,
    threads: int | None = None,
    slurm_array_parallelism: int | None = None,
    device: str = "cpu",
    on_done: Callable[[str, dict[str, Any]], None] | None = None,
    **options: Any,
) -> dict[str, dict[str, Any]]:
    """:func:`run_qdg` for each of ``models`` (labels, names or size indices), one task each on
    ``executor`` (see :mod:`quanta.executors`), into ``out/<model_dir_name(label)>/``.

    Each directory is exactly what ``run_qdg(losses_dir, out / name, model=label, …)`` writes,
    whatever the executor (the task calls it with the same arguments). A finished directory
    is reused, not recomputed; an interrupted one resumes. Every refusal — an option, a model
    the losses directory lacks, the same model twice, a directory holding another run, an
    unusable executor or device — comes before anything is written. A task runs with
    ``threads`` torch threads (default: torch's own locally, 1 on remote workers) and asks for
    that many CPUs and, on CUDA, one GPU. ``on_done(label, result)`` reports each model's
    result as it finishes (finished ones first). ``options`` are :func:`run_qdg`'s keywords
    (not ``model``, ``device``, ``progress``).

    Returns
    -------
    dict
        Model label → :func:`run_qdg`'s result (``zipf.json``), in the order of ``models``.
    """
    if not models:
        raise QuantaInputError("--models needs at least one model (label, name or index).")
    executor = check_executor(executor, ray_address, owner=_OWNER)
    if threads is not None:
        threads = check_int(threads, "threads", _OWNER, low=1)
    if slurm_array_parallelism is not None:
        check_int(slurm_array_parallelism, "slurm_array_parallelism", _OWNER, low=1)
    if executor in ("local", "submitit-local"):  # ray/slurm workers bring their own GPUs
        check_device(device, _OWNER)
    # Absolute: remote workers may start in another directory (and the config hashes it).
    losses_dir, out = Path(losses_dir).resolve(), Path(out).absolute()
    targets = _targets(losses_dir, out, models)
    keywords = _keywords(options)
    if out.exists() and not out.is_dir():
        raise QuantaInputError(f"Output path '{out}' exists and is not a directory.")
    results = _finished(losses_dir, targets, keywords, device)
    pending = [label for label in targets if label not in results]
    for label in results:
        if on_done is not None:
            on_done(label, results[label])

    def finished(label: str, result: dict[str, Any]) -> None:
        results[label] = result
        if on_done is not None:
            on_done(label, result)

    jobs = [(str(losses_dir), str(targets[label]), label, options) for label in pending]
    if executor == "local":
        with torch_threads(threads):
            for label, job in zip(pending, jobs, strict=True):
                finished(label, qdg_task(*job, device))
    else:
        where = remote_device(device)
        run_tasks(
            executor,
            [Task(qdg_task, (*job, where), threads or 1, gpus_for(where)) for job in jobs],
            ray_address=ray_address,
            folder=out / "submitit",
            slurm_array_parallelism=slurm_array_parallelism,
            on_done=lambda k, result: finished(pending[k], result),
        )
    return {label: results[label] for label in targets}


def _targets(losses_dir: Path, out: Path, models: list[int | str]) -> dict[str, Path]:
    """Model label → its directory under ``out``, in the order of ``models``; the same model
    (or directory name) twice is refused."""
    from quanta.lm.curves import load_losses

    table = load_losses(losses_dir)[1]
    targets: dict[str, Path] = {}
    for label in [str(pick_model(table, m)["label"]) for m in models]:
        target = out / model_dir_name(label)
        if label in targets or target in targets.values():
            raise QuantaInputError(
                f"--models names {label!r} twice (or two models share its directory name "
                f"'{target.name}'); give each model once."
            )
        targets[label] = target
    return targets


def _keywords(options: dict[str, Any]) -> dict[str, Any]:
    """:func:`run_qdg`'s keywords (but ``model``, ``device``, ``progress``): its defaults with
    ``options`` over them; an unknown option is refused."""
    keywords = {
        k: p.default
        for k, p in inspect.signature(run_qdg).parameters.items()
        if p.kind is p.KEYWORD_ONLY and k not in ("model", "device", "progress")
    }
    if set(options) - set(keywords):
        raise TypeError(
            f"run_qdg_models got unknown options {sorted(set(options) - set(keywords))}"
        )
    return {**keywords, **options}


def _finished(
    losses_dir: Path, targets: dict[str, Path], keywords: dict[str, Any], device: str
) -> dict[str, dict[str, Any]]:
    """The results of the models whose directory is complete; every model's settings and
    directory checked (no model loaded, nothing written but into a missing or empty one)."""
    from quanta.lm.suite import where_loaded

    results: dict[str, dict[str, Any]] = {}
    for label, target in targets.items():
        # Remote devices are the workers' (checked above where they are this machine's).
        prep = _prepare(losses_dir, _Settings(**{**keywords, "model": label, "device": "cpu"}))
        where_loaded(prep.ref)  # loadable (local config.json, hub or cache); not loaded here
        run = _claim(target, prep, device)
        # open() writes only into a missing or empty directory; elsewhere it just checks, and
        # refuses another run, another config or foreign files before anything is written.
        claimed = target.exists() and (
            not target.is_dir() or run.read_manifest() is not None or any(target.iterdir())
        )
        if claimed and run.open() == "complete":
            results[label] = json.loads((target / "zipf.json").read_text())
    return results


def qdg_task(
    losses_dir: str, out: str, model: str, options: dict[str, Any], device: str
) -> dict[str, Any]:
    """One model of :func:`run_qdg_models`: ``run_qdg`` into ``out``, without progress.
    Importable by remote workers."""
    return run_qdg(losses_dir, out, model=model, device=device, progress=None, **options)


def model_dir_name(label: str) -> str:
    """A directory name for a model label: characters other than letters, digits and
    ``. _ - @ =`` become ``_`` (a hub id's ``/`` included); no leading dot.

    >>> model_dir_name("EleutherAI/pythia-70m@step143000")
    'EleutherAI_pythia-70m@step143000'
    >>> model_dir_name("../x y")
    'x_y'
    """
    name = re.sub(r"[^A-Za-z0-9._@=-]+", "_", label).lstrip("._")
    return name or "model"
