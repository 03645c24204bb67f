"""Running the stages of a reproduction one by one: each stage's commands through the
caller's runner, its record (status, seconds, commands, error) kept in ``stages.json`` after
every change. The machinery of :func:`quanta.pipeline.reproduce`, which owns the presets."""

from __future__ import annotations

import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quanta._stages import PlannedStage, write_stages_file
from quanta._validation import QuantaInputError
from quanta.store import atomic_write

if TYPE_CHECKING:
    from quanta.integrity import Damage
    from quanta.pipeline import Stage

__all__ = ["StageRunner"]


@dataclass
class StageRunner:
    """The stages of one :func:`quanta.pipeline.reproduce` call into ``out``: where, what,
    and the record of every stage so far (``state``, saved to ``stages.json`` on each change).
    See that function for ``run_command``, ``extra`` and ``on_stage``."""

    out: Path
    preset: str
    corpus: str
    extra: dict[str, list[str]]
    run_command: Callable[[list[str]], None]
    on_stage: Callable[[int, int, Stage, str], None] | None
    planned: list[PlannedStage]  # the preset's plan, in order
    state: dict[str, dict[str, Any]] = field(default_factory=dict)  # name → record
    # Directories found intact in this job: stages sharing an input hash it once.
    verified: set[Path] = field(default_factory=set)

    def save(self) -> None:
        write_stages_file(self.out, plan=self.planned, stages=self.state)

    def run(self, i: int, n_stages: int, stage: Stage) -> None:
        """Stage ``i`` of ``n_stages``: reused if done, skipped if a stage it needs is not, else
        run."""

        def tell(status: str) -> None:
            if self.on_stage:
                self.on_stage(i, n_stages, stage, status)

        old = self.state.get(stage.name, {})
        if old.get("status") == "done" and (self.out / stage.marker).exists():
            damaged = self.damaged(stage)
            if not damaged:
                tell("reused")
                return
            for d in damaged:  # its commands find the same damage, and recompute the files
                print(f"{d.line()}; running stage {stage.name} again.", file=sys.stderr)
        missing = {n: self.state.get(n, {}).get("status", "not run") for n in stage.needs}
        missing = {n: st for n, st in missing.items() if st != "done"}
        if missing:
            what = ", ".join(f"{n} ({st})" for n, st in missing.items())
            message = (
                f"needs stage {what}; finish it first (e.g. 'quanta reproduce --preset "
                f"{self.preset} --only {','.join(missing)}')"
            )
            self.state[stage.name] = {"status": "skipped", "message": message, "seconds": 0.0}
            self.save()
            tell("skipped")
            return
        commands = [[a.format(out=self.out, corpus=self.corpus) for a in c] for c in stage.commands]
        for argv in commands:
            argv.extend(self.extra.get(" ".join(argv[:2]), []))
        tell("start")
        record = self.execute(stage, commands)
        self.state[stage.name] = record
        self.save()
        tell(record["status"])

    def damaged(self, stage: Stage) -> list[Damage]:
        """The damaged files (:mod:`quanta.integrity`) of the run directories under those the
        stage's commands name."""
        from quanta.integrity import verify_tree

        dirs = {
            self.out / a.format(out="", corpus="").lstrip("/")
            for c in stage.commands
            for a in c
            if a.startswith("{out}")
        }
        found: list[Damage] = []
        for d in sorted(p for p in dirs - self.verified if p.is_dir()):
            damaged = verify_tree(d)[2]
            found += damaged
            if not damaged:
                self.verified.add(d)
        return found

    def execute(self, stage: Stage, commands: list[list[str]]) -> dict[str, Any]:
        """Run the stage's commands: its record, status "done" or "failed" (the message, and
        the traceback in ``logs/<stage>.log``); an interruption is recorded, then re-raised."""
        t0 = time.perf_counter()
        record: dict[str, Any] = {"commands": [" ".join(["quanta", *a]) for a in commands]}
        try:
            for argv in commands:
                self.run_command(argv)
        except KeyboardInterrupt:
            record.update(status="interrupted", seconds=time.perf_counter() - t0)
            self.state[stage.name] = record
            self.save()
            raise
        except Exception as exc:
            message = (
                str(exc)
                if isinstance(exc, QuantaInputError | OSError)
                else (f"{type(exc).__name__}: {exc}")
            )
            record.update(status="failed", message=message, seconds=time.perf_counter() - t0)
            log = self.out / "logs" / f"{stage.name}.log"
            with atomic_write(log, "w") as fh:
                fh.write(traceback.format_exc())
            record["log"] = str(log.relative_to(self.out))
            return record
        record.update(status="done", seconds=time.perf_counter() - t0)
        return record
