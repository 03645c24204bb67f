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
    DIR/toy/params|data|alpha/   parity train / sweeps, each with analysis/
    DIR/lm/suite|losses/     mini-suite (cpu), per-token losses, losses/analysis/
    DIR/lm/dynamics/         every model × checkpoint (lm losses --checkpoints all), dynamics/
    DIR/qdg/clusters|validate/   QDG run + cluster browser, planted-truth validation
    DIR/qdg/clusters/scale/      quanta across scale (per-cluster curves, learned scale vs rank)
    DIR/report.html          the report (``quanta report DIR`` re-renders it)
    DIR/logs/<stage>.log     the traceback of a failed stage
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quanta._stages import PlannedStage, read_stages_file, write_stages_file
from quanta._validation import QuantaInputError, check_choice
from quanta.store import RunDir, atomic_write

__all__ = ["GROUPS", "PRESETS", "Stage", "plan", "read_stages", "reproduce"]

KIND = "reproduce"


@dataclass(frozen=True)
class Stage:
    """One step of a reproduction.

    ``commands`` are ``quanta`` argument lists with ``{out}`` (the reproduction directory) and
    ``{corpus}`` placeholders; ``needs`` names earlier stages whose output this one reads;
    ``marker`` is a file (relative to the directory) that exists once the stage is done.
    """

    name: str
    group: str
    title: str
    commands: tuple[tuple[str, ...], ...]
    marker: str
    needs: tuple[str, ...] = ()


def _cmd(text: str) -> tuple[str, ...]:
    return tuple(text.split())


_THEORY = Stage(
    "theory",
    "toy",
    "quantization-model simulation",
    (_cmd("theory --alpha 0.2,0.4,0.8 --out {out}/theory"),),
    "theory/theory.json",
)


def _toy(train: str, data: str, alpha: str) -> tuple[Stage, ...]:
    return (
        Stage(
            "toy-params",
            "toy",
            "parameter and step scaling (one fused run of every width)",
            (_cmd(f"parity train --out {{out}}/toy/params {train}"), _cmd(_ANALYZE % "params")),
            "toy/params/analysis/analysis.json",
        ),
        Stage(
            "toy-data",
            "toy",
            "data scaling (a sweep over D, early stopping)",
            (
                _cmd(f"parity sweep --experiment data --out {{out}}/toy/data {data}"),
                _cmd(_ANALYZE % "data"),
            ),
            "toy/data/analysis/analysis.json",
        ),
        Stage(
            "toy-alpha",
            "toy",
            "exponents across α (a sweep over the Zipf exponent)",
            (
                _cmd(f"parity sweep --experiment alpha --out {{out}}/toy/alpha {alpha}"),
                _cmd(_ANALYZE % "alpha"),
            ),
            "toy/alpha/analysis/analysis.json",
        ),
    )


_ANALYZE = "parity analyze {out}/toy/%s"


def _lm(
    suite: str | None, losses: str, analyze: str = "", dynamics: str | None = None
) -> tuple[Stage, ...]:
    """The LM stages; ``dynamics`` (arguments of its ``lm losses``) adds the training-dynamics
    stage: every model of the mini-suite at every saved checkpoint."""
    stages = []
    needs: tuple[str, ...] = ()
    suite_arg = "pythia"
    if suite is not None:
        stages.append(
            Stage(
                "lm-suite",
                "lm",
                "train a GPT-NeoX mini-suite (offline stand-in for Pythia)",
                (_cmd(f"lm suite train --out {{out}}/lm/suite {suite}"),),
                "lm/suite/suite.json",
            )
        )
        needs, suite_arg = ("lm-suite",), "{out}/lm/suite"
    stages.append(
        Stage(
            "lm-losses",
            "lm",
            "per-token losses of every model",
            (
                _cmd(
                    f"lm losses --suite {suite_arg} --corpus {{corpus}} --out {{out}}/lm/losses "
                    + losses
                ),
            ),
            "lm/losses/losses.npy",
            needs=needs,
        )
    )
    stages.append(
        Stage(
            "lm-analyze",
            "lm",
            "mean loss vs N, p(L), monogenic / polygenic tokens",
            (_cmd(f"lm analyze {{out}}/lm/losses {analyze}"),),
            "lm/losses/analysis/analysis.json",
            needs=("lm-losses",),
        )
    )
    if suite is not None and dynamics is not None:
        stages.append(
            Stage(
                "lm-dynamics",
                "lm",
                "training dynamics: every model at its checkpoints; tokens learned abruptly",
                (
                    _cmd(
                        "lm losses --suite {out}/lm/suite --checkpoints all --corpus {corpus} "
                        "--out {out}/lm/dynamics " + dynamics
                    ),
                    _cmd("lm dynamics {out}/lm/dynamics"),
                ),
                "lm/dynamics/dynamics/analysis.json",
                needs=("lm-suite",),
            )
        )
    return tuple(stages)


def _qdg(run: str, validate: str, report: str = "") -> tuple[Stage, ...]:
    return (
        Stage(
            "qdg-clusters",
            "qdg",
            "QDG: gradients → similarity → spectral clusters → Zipf fit; cluster browser",
            (
                _cmd(f"qdg run {{out}}/lm/losses --out {{out}}/qdg/clusters {run}"),
                _cmd(f"qdg report {{out}}/qdg/clusters {report}"),
            ),
            "qdg/clusters/zipf.json",
            needs=("lm-losses", "lm-analyze"),
        ),
        Stage(
            "qdg-scale",
            "qdg",
            "quanta across scale: each cluster's loss vs N (and step), learned scale vs rank",
            (
                _cmd(
                    "qdg scale {out}/qdg/clusters --losses {out}/lm/losses "
                    "--toy {out}/toy/params/analysis"
                ),
            ),
            "qdg/clusters/scale/scale.json",
            needs=("qdg-clusters",),
        ),
        Stage(
            "qdg-validate",
            "qdg",
            "QDG on planted truth (appendix-D toy vectors)",
            (_cmd(f"qdg validate --out {{out}}/qdg/validate {validate}"),),
            "qdg/validate/validate.parquet",
        ),
    )


_TINY = "--n-tasks 8 --n-bits 10 --k 2 --lr 3e-3 --batch-size 500 --test-per-task 100"
PRESETS: dict[str, tuple[Stage, ...]] = {
    # Minutes on 2 CPU cores: `make demo`.
    "cpu": (
        _THEORY,
        *_toy(
            "--preset cpu",
            "--preset cpu --widths 128 --steps 4000 "
            "--grid n_train=4000,8000,16000,32000,64000,128000",
            "--preset cpu --widths 8,16,32,64,128 --steps 4000",
        ),
        *_lm("--preset cpu", "--max-docs 100", dynamics="--max-docs 20"),
        # The largest model; the paper's 0.1 nats unless fewer than 1000 tokens pass it, then
        # the smallest threshold that yields 1000 (recorded in zipf.json and shown).
        *_qdg(
            "--model -1 --threshold auto --min-samples 1000 --n 1000 --ks 10,20,50,100",
            "--samples 1000 --subtasks 30 --dims 100,1000 --sigmas 0.5,2.0",
        ),
    ),
    # PAPER.md's configurations: GPUs (the toy presets set device cuda), Pythia from the hub and
    # a corpus given with --corpus (the paper: the Pile test set as .jsonl.zst).
    "paper": (
        _THEORY,
        *_toy("--preset paper", "--preset paper", "--preset paper"),
        *_lm(None, "--max-docs 20000 --device cuda", "--fit-models 0,1,2,3,4,5"),
        # PAPER.md §4: exact cosines (the Gram matrix over blocks of 1M parameters: 40 GB of
        # float32 rows for 10,000 tokens, 19 gradient passes for Pythia-70m's 18.9M dims),
        # k-means with 30 restarts, the authors' 30 K values.
        *_qdg(
            "--threshold 0.1 --every 50 --n 10000 --similarity exact --block-params 1000000 "
            "--assign kmeans --n-init 30 --device cuda --ks 10,20,30,40,50,60,70,80,90,100,"
            "125,150,175,200,225,250,275,300,350,400,500,600,700,800,900,1000,1100,1200,1400,1500",
            "--samples 10000 --subtasks 1000 --dims 1000 --sigmas 2.0",
            "--k 400",
        ),
    ),
    # Seconds per stage: a smoke test of the whole chain (used by the tests).
    "tiny": (
        _THEORY,
        *_toy(
            f"{_TINY} --widths 8,16,32,64 --steps 1500 --eval-points 20",
            f"{_TINY} --widths 32 --steps 1000 --eval-points 15 --grid n_train=300,1000,3000,10000",
            f"{_TINY} --widths 8,16,32 --steps 1000 --eval-points 15 --grid alpha=0.3,0.8",
        ),
        *_lm("--preset tiny", "--max-docs 8", dynamics="--max-docs 8"),
        *_qdg(
            "--model -1 --threshold auto --n 60 --ks 3,6",  # tiny models: always raised
            "--samples 300 --subtasks 10 --dims 50 --sigmas 0.2",
        ),
    ),
}
GROUPS = ("toy", "lm", "qdg")


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


def read_stages(out: str | Path) -> dict[str, dict[str, Any]]:
    """The recorded state of every stage run so far in ``out`` ({} when none)."""
    return read_stages_file(out).stages


def _format(command: tuple[str, ...], out: Path, corpus: str) -> list[str]:
    return [a.format(out=out, corpus=corpus) for a in command]


def reproduce(
    out: str | Path,
    preset: str = "cpu",
    *,
    run_command: Callable[[list[str]], None],
    only: str | None = None,
    corpus: str = "stdlib:test",
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
    corpus : str
        The corpus of the LM stages (see ``quanta lm losses --corpus``).
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
    out = Path(out)
    run = RunDir(out, KIND, {"preset": preset}, f"preset-{preset}")
    manifest = run.read_manifest()
    if manifest is not None and manifest.get("kind") == KIND:
        held = manifest.get("config", {}).get("preset")
        if held != preset:
            raise QuantaInputError(
                f"'{out}' holds a reproduction with preset {held!r}, not {preset!r}; use "
                f"--preset {held} to continue it or choose another --out directory."
            )
    run.open()
    state = read_stages(out)
    planned = [PlannedStage(s.name, s.group, s.title) for s in PRESETS[preset]]
    _save(out, planned, state)  # the report reads the plan from here, also before any stage
    started = time.perf_counter()
    for i, stage in enumerate(stages):
        old = state.get(stage.name, {})
        if old.get("status") == "done" and (out / stage.marker).exists():
            if on_stage:
                on_stage(i, len(stages), stage, "reused")
            continue
        missing = {n: state.get(n, {}).get("status", "not run") for n in stage.needs}
        missing = {n: st for n, st in missing.items() if st != "done"}
        if missing:
            what = ", ".join(f"{n} ({st})" for n, st in missing.items())
            message = (
                f"needs stage {what}; finish it first (e.g. 'quanta reproduce --preset "
                f"{preset} --only {','.join(missing)}')"
            )
            state[stage.name] = {"status": "skipped", "message": message, "seconds": 0.0}
            _save(out, planned, state)
            if on_stage:
                on_stage(i, len(stages), stage, "skipped")
            continue
        commands = [_format(c, out, corpus) for c in stage.commands]
        for argv in commands:
            key = " ".join(argv[:2])
            argv.extend((extra or {}).get(key, []))
        if on_stage:
            on_stage(i, len(stages), stage, "start")
        t0 = time.perf_counter()
        record: dict[str, Any] = {"commands": [" ".join(["quanta", *a]) for a in commands]}
        try:
            for argv in commands:
                run_command(argv)
        except KeyboardInterrupt:
            record.update(status="interrupted", seconds=time.perf_counter() - t0)
            state[stage.name] = record
            _save(out, planned, state)
            raise
        except Exception as exc:
            message = (
                str(exc)
                if isinstance(exc, QuantaInputError | OSError)
                else (f"{type(exc).__name__}: {exc}")
            )
            record.update(status="failed", message=message, seconds=time.perf_counter() - t0)
            log = out / "logs" / f"{stage.name}.log"
            with atomic_write(log, "w") as fh:
                fh.write(traceback.format_exc())
            record["log"] = str(log.relative_to(out))
            state[stage.name] = record
            _save(out, planned, state)
            if on_stage:
                on_stage(i, len(stages), stage, "failed")
            continue
        record.update(status="done", seconds=time.perf_counter() - t0)
        state[stage.name] = record
        _save(out, planned, state)
        if on_stage:
            on_stage(i, len(stages), stage, "done")
    failed = [n for n, r in state.items() if r.get("status") != "done"]
    run.write_manifest(
        status="complete" if not failed else "incomplete",
        wall_seconds=time.perf_counter() - started,
        extra={"stages": {n: r.get("status") for n, r in state.items()}},
    )
    if report:
        from quanta.report import write_report

        write_report(out)
    return state


def _save(out: Path, plan: list[PlannedStage], state: dict[str, dict[str, Any]]) -> None:
    write_stages_file(out, plan=plan, stages=state)
