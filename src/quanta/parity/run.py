"""Run a training config into a run directory: claim, resume, train, write, summarize.

This is the file-facing layer between the pure core (:func:`quanta.parity.train_parity`) and
the CLI. Re-running the same config into the same directory resumes from the last checkpoint,
or reports that the run is complete; it never duplicates rows.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from quanta._tensorfile import load_tree, refuse_pickle, save_tree
from quanta._validation import QuantaInputError, check_device, check_precision
from quanta.config import config_hash, config_to_dict
from quanta.lock import locked
from quanta.parity.config import ParityConfig
from quanta.parity.train import TrainState, summarize, train_parity
from quanta.store import RunDir, write_parquet

__all__ = ["RunOutcome", "load_checkpoint", "open_parity_run", "run_parity", "save_checkpoint"]

KIND = "parity.train"
CURVES = "curves.parquet"
# safetensors + JSON (quanta._tensorfile), never pickle: opening a shared run runs no code.
CHECKPOINT = "checkpoint.safetensors"
MODEL = "model.safetensors"
OLD_CHECKPOINT, OLD_MODEL = "checkpoint.pt", "model.pt"  # pickles of quanta < 0.2: refused


@dataclass
class RunOutcome:
    """What :func:`run_parity` did: ``status`` is ``"trained"``, ``"resumed"`` or
    ``"complete"`` (nothing to do), with the curves and per-member summary either way."""

    status: str
    path: Path
    curves: pd.DataFrame
    summary: pd.DataFrame
    wall_seconds: float
    resumed_from: int = 0


def open_parity_run(cfg: ParityConfig, out: str | Path) -> RunDir:
    """The :class:`RunDir` of ``cfg`` at ``out`` (not yet claimed)."""
    runtime = frozenset(f.name for f in dataclasses.fields(cfg) if f.metadata.get("runtime"))
    return RunDir(Path(out), KIND, config_to_dict(cfg), config_hash(cfg), runtime, (CURVES, MODEL))


@locked("out")
def run_parity(
    cfg: ParityConfig,
    out: str | Path,
    *,
    progress: Callable[[int, dict[str, float]], None] | None = None,
    stop: Callable[[], bool] | None = None,
    on_start: Callable[[int], None] | None = None,
) -> RunOutcome:
    """Train ``cfg`` into directory ``out`` (resuming or skipping as needed).

    ``on_start(step)`` is called once with the step training starts from (0, or the resumed
    step) before any training, so a progress display can start at the right place.
    """
    check_device(cfg.device, "quanta parity train")
    check_precision(cfg.precision, cfg.device, "quanta parity train")
    run = open_parity_run(cfg, out)
    status = run.open()
    if status == "complete":
        curves = pd.read_parquet(run.file(CURVES))
        manifest = run.read_manifest() or {}
        return RunOutcome(
            "complete",
            run.path,
            curves,
            summarize(curves, cfg.learned_threshold),
            float(manifest.get("wall_seconds", 0.0)),
        )
    state: TrainState | None = None
    if status == "resume":
        refuse_pickle(
            run.file(OLD_CHECKPOINT),
            "a checkpoint",
            "delete it to restart this run from step 0, or choose another --out directory",
        )
        if run.file(CHECKPOINT).exists():
            state = load_checkpoint(run.file(CHECKPOINT))
    start = state.step if state is not None else 0
    if on_start is not None:
        on_start(start)
    result = train_parity(
        cfg,
        state=state,
        on_checkpoint=lambda st: save_checkpoint(run.file(CHECKPOINT), st),
        progress=progress,
        stop=stop,
    )
    summary = summarize(result.curves, cfg.learned_threshold)
    write_parquet(run.file(CURVES), result.curves)
    save_tree(
        run.file(MODEL),
        {
            "state_dict": result.model.state_dict(),
            "members": result.members.to_dict("records"),
            "config": run.config,
        },
    )
    extra: dict[str, Any] = {
        "steps_done": cfg.steps,
        "n_rows": len(result.curves),
    }
    run.write_manifest(status="complete", wall_seconds=result.wall_seconds, extra=extra)
    run.file(CHECKPOINT).unlink(missing_ok=True)
    return RunOutcome(
        "resumed" if start else "trained",
        run.path,
        result.curves,
        summary,
        result.wall_seconds,
        resumed_from=start,
    )


def save_checkpoint(path: Path, state: TrainState) -> None:
    """Write ``state`` atomically to ``path`` (safetensors + JSON; see quanta._tensorfile)."""
    save_tree(path, {f.name: getattr(state, f.name) for f in dataclasses.fields(TrainState)})


def load_checkpoint(path: Path) -> TrainState:
    """The :class:`TrainState` saved at ``path`` by :func:`save_checkpoint`, exactly."""
    tree = load_tree(path)
    names = {f.name for f in dataclasses.fields(TrainState)}
    if not isinstance(tree, dict) or set(tree) != names:
        raise QuantaInputError(
            f"'{path}' is not a parity checkpoint; delete it to restart the run from step 0."
        )
    return TrainState(**tree)
