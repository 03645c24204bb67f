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
import torch

from quanta._validation import check_device
from quanta.config import config_hash, config_to_dict
from quanta.parity.config import ParityConfig
from quanta.parity.train import TrainState, summarize, train_parity
from quanta.store import RunDir, save_torch, with_checkpoints, write_parquet

__all__ = ["RunOutcome", "open_parity_run", "run_parity"]

KIND = "parity.train"
CURVES = "curves.parquet"
CHECKPOINT = "checkpoint.pt"
MODEL = "model.pt"


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
    if status == "resume" and run.file(CHECKPOINT).exists():
        state = torch.load(run.file(CHECKPOINT), weights_only=False)
    start = state.step if state is not None else 0
    if on_start is not None:
        on_start(start)
    result = train_parity(
        cfg,
        state=state,
        on_checkpoint=with_checkpoints(run, CHECKPOINT),
        progress=progress,
        stop=stop,
    )
    summary = summarize(result.curves, cfg.learned_threshold)
    write_parquet(run.file(CURVES), result.curves)
    save_torch(
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
