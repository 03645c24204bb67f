"""The main job: every pipeline of the paper in order, into one directory, then one report.

A reproduction is a list of **stages**; each stage is one or more ``quanta`` commands (the
same commands a person would type, shown in the report next to what they produced). Stages are
run in order by the ``run_command`` the caller hands in (``quanta reproduce`` and
``quanta.reproduce`` pass the CLI's in-process runner; this module never imports the CLI); each
underlying command is itself resumable, and a stage that finished is not run again. A stage
that fails is recorded with its message; stages that need it are skipped, the others still
run, and the report marks what is missing.

Directory layout (``quanta reproduce --out DIR``)::

    DIR/manifest.json        kind "reproduce", the preset (a directory holds one preset)
    DIR/stages.json          the preset's plan (stage names, groups, titles, in order) and,
                             per stage run: status, seconds, commands, error message
    DIR/theory/              quanta theory
    DIR/toy/params|data|alpha|alpha_data/   parity train / sweeps, each with analysis/
    DIR/lm/suite|losses/     mini-suite (cpu), per-token losses, losses/analysis/
    DIR/lm/dynamics/         every model × checkpoint (lm losses --checkpoints all), dynamics/
    DIR/qdg/clusters|validate/   QDG run + cluster browser, planted-truth validation
    DIR/qdg/clusters/scale/      quanta across scale (per-cluster curves, learned scale vs rank)
    DIR/qdg/parity|envelope/     appendix D.1 (QDG on a parity net), D.2 (envelope bias)
    DIR/qdg/universality[-runs]/ qdg compare: sizes, seeds/ (a suite size vs its init-seed-1
                                 replica); -runs: what it compares
    DIR/qdg/universality-toy/    qdg compare --parity: two parity seeds and the true subtasks
    DIR/report.html          the report (``quanta report DIR`` re-renders it)
    DIR/logs/<stage>.log     the traceback of a failed stage
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from quanta._stage_runner import StageRunner
from quanta._stages import PlannedStage, read_stages_file
from quanta._validation import QuantaInputError, check_choice, check_device
from quanta.lock import locked
from quanta.presets import DEFAULT_CORPUS, GROUPS, PRESETS, Stage
from quanta.store import RunDir

__all__ = [
    "DEFAULT_CORPUS",
    "DEVICE_COMMANDS",
    "GROUPS",
    "PRESETS",
    "Stage",
    "plan",
    "read_stages",
    "reproduce",
    "resolve_corpus",
    "stage_options",
]

KIND = "reproduce"


def plan(preset: str, only: str | None = None) -> list[Stage]:
    """The stages of ``preset`` selected by ``only`` (groups or stage names, comma-separated)."""
    check_choice(preset, "preset", "quanta reproduce", list(PRESETS))
    stages = list(PRESETS[preset])
    if not only:
        return stages
    names = [s.name for s in stages]
    wanted = [w.strip() for w in only.split(",") if w.strip()]
    if not wanted:
        raise QuantaInputError("--only needs at least one stage or group, e.g. --only toy,lm.")
    for w in wanted:
        check_choice(w, "stage", "quanta reproduce --only", [*GROUPS, *names])
    return [s for s in stages if s.group in wanted or s.name in wanted]


#: The stage commands that run a model, keyed as :func:`reproduce` keys ``extra`` (by their
#: first two words): "lm suite" is ``lm suite train``, and "lm losses" also runs in the
#: lm-dynamics stage. :func:`stage_options` appends ``--device`` to each of them.
DEVICE_COMMANDS = ("parity train", "parity sweep", "lm suite", "lm losses", "qdg run")
#: Executors whose runs do not execute on this machine (their workers bring their own GPUs).
_REMOTE = ("ray", "slurm")


def stage_options(
    preset: str,
    only: str | None = None,
    *,
    executor: str = "local",
    ray_address: str | None = None,
    device: str | None = None,
    decode_errors: str = "strict",
) -> dict[str, list[str]]:
    """The ``extra`` arguments of :func:`reproduce` that run the models of ``preset``'s stages
    (those selected by ``only``) on ``device`` (:data:`DEVICE_COMMANDS`) and its toy sweeps
    (a task per run) and loss columns (a task per model) on ``executor``; ``decode_errors``
    is lm losses' (``"replace"``: bad bytes in the corpus become U+FFFD).

    Everything is checked before a directory is claimed: the executor (a dead Ray address, a
    missing ``sbatch``), and the device where a selected stage runs a model on this machine
    (sweeps and loss columns sent to Ray or SLURM run on workers, which check their own).
    """
    from quanta.executors import EXECUTORS, check_executor

    check_choice(executor, "executor", "quanta reproduce", list(EXECUTORS))
    if ray_address and executor != "ray":
        raise QuantaInputError("--ray-address is used with --executor ray only.")
    check_executor(executor, ray_address, owner="quanta reproduce")
    check_choice(decode_errors, "decode_errors", "quanta reproduce", ["strict", "replace"])
    stages = plan(preset, only)
    extra: dict[str, list[str]] = {}
    if decode_errors != "strict":
        extra["lm losses"] = ["--decode-errors", decode_errors]
    if device:
        for command in DEVICE_COMMANDS:
            extra.setdefault(command, []).extend(["--device", device])
        here = {" ".join(c[:2]) for s in stages for c in s.commands} & set(DEVICE_COMMANDS)
        if executor in _REMOTE:
            here -= {"parity sweep", "lm losses"}
        if here:  # refused before the directory is claimed, not stage by stage
            check_device(device, "quanta reproduce")
    if executor != "local":  # the toy sweeps (one task per run), lm losses (one per column)
        for command in ("parity sweep", "lm losses"):
            extra.setdefault(command, []).extend(["--executor", executor])
            if ray_address:
                extra[command] += ["--ray-address", ray_address]
    return extra


def read_stages(out: str | Path) -> dict[str, dict[str, Any]]:
    """The recorded state of every stage run so far in ``out`` ({} when none)."""
    return read_stages_file(out).stages


def resolve_corpus(
    preset: str, stages: list[Stage], corpus: str | None, decode_errors: str = "strict"
) -> str:
    """The corpus the ``stages`` of ``preset`` read: ``corpus``, else the preset's default.

    Raises
    ------
    QuantaInputError
        A preset without a default corpus (``paper``) whose stages read one, given none; or a
        given corpus that is missing or holds no readable document. Checked before anything
        is written.
    """
    uses = any("{corpus}" in arg for s in stages for c in s.commands for arg in c)
    if not uses or (corpus is None and preset in DEFAULT_CORPUS):
        return corpus if corpus is not None else DEFAULT_CORPUS.get(preset, "")
    if corpus is None:
        raise QuantaInputError(
            f"--preset {preset} needs --corpus: a local shard of the Pile (.jsonl or .jsonl.zst, "
            "e.g. --corpus /data/pile/test.jsonl.zst); its LM numbers are the Pile's, so the "
            "standard-library stand-in is not used. Or leave out the LM stages (--only toy)."
        )
    from quanta.lm.corpus import load_documents

    # Exists and holds a readable document: before minutes of suite training or hours of toy
    # runs, not when the first stage that reads it starts.
    load_documents(corpus, max_docs=1, decode_errors=decode_errors)
    return corpus


@locked("out")
def reproduce(
    out: str | Path,
    preset: str = "cpu",
    *,
    run_command: Callable[[list[str]], None],
    only: str | None = None,
    corpus: str | None = None,
    extra: dict[str, list[str]] | None = None,
    on_stage: Callable[[int, int, Stage, str], None] | None = None,
    report: bool = True,
) -> dict[str, dict[str, Any]]:
    """Run the stages of ``preset`` (those selected by ``only``) into ``out``; write the report.

    Parameters
    ----------
    out : path-like
        The reproduction directory; it holds one preset (another preset is refused).
    preset : {"cpu", "paper", "tiny"}
    run_command : callable
        ``run_command(argv)`` runs one ``quanta`` command (``argv`` without the program name)
        and returns once it finished; it raises ``QuantaInputError`` for a refused input (the
        stage's message), ``KeyboardInterrupt`` to stop the whole job, anything else for a
        crash (recorded with its traceback). The CLI's is
        ``quanta.cli._common.in_process_runner``; ``quanta.reproduce`` passes it for you.
    only : str, optional
        Groups (toy, lm, qdg) or stage names, comma-separated; default: every stage.
    corpus : str, optional
        The corpus of the LM stages (see ``quanta lm losses --corpus``); default the preset's
        (:data:`DEFAULT_CORPUS`: ``stdlib:test``). ``paper`` has no default: its LM stages
        need a local Pile shard, and are refused before anything is written without one.
    extra : dict, optional
        Extra arguments appended to commands, by subcommand (``{"parity sweep": [...]}``),
        e.g. an executor for the toy sweeps.
    on_stage : callable, optional
        ``on_stage(i, n, stage, status)`` with status "start", "reused", "done", "failed",
        "skipped" — the CLI's per-stage display.
    report : bool
        Write ``out/report.html`` at the end (also when stages failed).

    Returns
    -------
    dict
        The state of every stage recorded in ``out`` (see ``read_stages``).
    """
    stages = plan(preset, only)
    # The corpus is checked as lm losses will read it (``--decode-errors`` in its extra).
    losses_args = (extra or {}).get("lm losses", [])
    flag = "--decode-errors"
    errors = losses_args[losses_args.index(flag) + 1] if flag in losses_args[:-1] else "strict"
    corpus = resolve_corpus(preset, stages, corpus, errors)
    out = Path(out)
    run = _claim(out, preset)
    planned = [PlannedStage(s.name, s.group, s.title) for s in PRESETS[preset]]
    job = StageRunner(
        out, preset, corpus, extra or {}, run_command, on_stage, planned, read_stages(out)
    )
    job.save()  # the report reads the plan from here, also before any stage
    started = time.perf_counter()
    for i, stage in enumerate(stages):
        job.run(i, len(stages), stage)
    failed = [n for n, r in job.state.items() if r.get("status") != "done"]
    run.write_manifest(
        status="complete" if not failed else "incomplete",
        wall_seconds=time.perf_counter() - started,
        extra={"stages": {n: r.get("status") for n, r in job.state.items()}},
    )
    if report:
        from quanta.report import write_report

        write_report(out)
    return job.state


def _claim(out: Path, preset: str) -> RunDir:
    """The reproduction directory, opened for ``preset``; one of another preset is refused."""
    run = RunDir(out, KIND, {"preset": preset}, f"preset-{preset}", files=("stages.json",))
    manifest = run.read_manifest()
    if manifest is not None and manifest.get("kind") == KIND:
        held = manifest.get("config", {}).get("preset")
        if held != preset:
            raise QuantaInputError(
                f"'{out}' holds a reproduction with preset {held!r}, not {preset!r}; use "
                f"--preset {held} to continue it or choose another --out directory."
            )
    if run.open() == "complete":  # running again until every stage is checked or rerun
        run.write_manifest(status="running", wall_seconds=0.0, extra={})
    return run
