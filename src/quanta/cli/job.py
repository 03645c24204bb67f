"""``quanta reproduce`` and ``quanta report``: the main job and its page (parse → call → write).

``reproduce`` hands the pipeline a runner of this CLI's own commands (in-process, user errors as
exceptions), so the pipeline runs what a person would type without importing the CLI.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from quanta._validation import QuantaInputError
from quanta.cli._common import (
    WAIT_OPT,
    console,
    in_process_runner,
    interrupt_exit,
    out,
    user_errors,
    writes,
)

__all__ = ["job_app"]

# Merged into the root app (no group name): ``quanta reproduce``, ``quanta report``.
job_app = typer.Typer(rich_markup_mode=None)


@job_app.command("reproduce")
@user_errors
@writes("out_dir")
def reproduce_cmd(
    ctx: typer.Context,
    preset: str = typer.Option(
        "cpu", help="cpu (minutes on 2 cores) | cpu-long (about 45 min) | paper (GPUs) | tiny."
    ),
    only: str | None = typer.Option(
        None, help="Groups (toy, lm, qdg) or stage names, comma-separated [every stage]."
    ),
    out_dir: Path = typer.Option(Path("runs/reproduce"), "--out", help="Reproduction directory."),
    corpus: str | None = typer.Option(
        None,
        help="Corpus of the LM stages (see 'quanta lm losses --corpus') [cpu, tiny: stdlib:test; "
        "paper: required, a local Pile shard .jsonl or .jsonl.zst].",
    ),
    executor: str = typer.Option(
        "local",
        help="Executor of the toy sweeps (a task per run) and of lm losses (a task per model "
        "column): local | ray | slurm | submitit-local.",
    ),
    ray_address: str | None = typer.Option(None, help="HOST:PORT of a running Ray cluster."),
    device: str | None = typer.Option(
        None,
        help="torch device of every stage that runs a model: parity train and sweeps, lm suite "
        "train, lm losses (also of lm-dynamics), qdg run [the preset's: cpu; paper: cuda].",
    ),
    decode_errors: str = typer.Option(
        "strict",
        help="Invalid UTF-8 or a lone surrogate in --corpus: strict (refused, naming "
        "FILE:LINE) | replace (each becomes U+FFFD; see 'quanta lm losses').",
    ),
    wait: bool = WAIT_OPT,
) -> None:
    """Run every pipeline of the paper in order (theory, toy sweeps, LM suite → losses →
    analysis, QDG → clusters → validation) and write DIR/report.html.

    Resumable: finished stages are reused, and each stage's own command resumes where it
    stopped. A failing stage is reported by name; the others still run and the report marks
    what is missing (exit code 1).
    """
    from quanta.pipeline import plan, reproduce, stage_options

    extra = stage_options(
        preset,
        only,
        executor=executor,
        ray_address=ray_address,
        device=device,
        decode_errors=decode_errors,
    )
    failed: list[str] = []
    try:
        state = reproduce(
            out_dir,
            preset,
            run_command=in_process_runner(ctx.find_root().command),
            only=only,
            corpus=corpus,
            extra=extra,
            on_stage=_stage_display(out_dir, failed),
        )
    except KeyboardInterrupt as exc:
        raise interrupt_exit(exc, f"finished stages are kept in '{out_dir}'") from None
    table = Table(title=f"quanta reproduce --preset {preset}")
    for name in ("stage", "status", "seconds"):
        table.add_column(name, justify="right")
    for stage in plan(preset, only):
        r = state.get(stage.name, {})
        table.add_row(stage.name, str(r.get("status")), f"{float(r.get('seconds', 0.0)):,.1f}")
    out.print(table)
    out.print(f"{out_dir / 'report.html'}")
    if failed:
        for name in failed:
            status = state[name]["status"]
            label = "[bold red]error:[/]" if status == "failed" else "[yellow]note:[/]"
            console.print(
                f"{label} stage {name} {status}: {state[name].get('message', '')}",
                highlight=False,
                soft_wrap=True,
            )
        console.print(
            "The report marks what is missing; fix the cause and run the same command "
            "again to finish."
        )
        raise typer.Exit(1)


def _stage_display(out_dir: Path, failed: list[str]) -> Callable[[int, int, Any, str], None]:
    """The pipeline's ``on_stage``: a rule per stage started, its time when done; the names of
    stages that failed or were skipped are appended to ``failed``."""
    started = {"stage": time.perf_counter()}

    def on_stage(i: int, n: int, stage: Any, status: str) -> None:
        head = f"[{i + 1}/{n}] {stage.name}"
        if status == "start":
            started["stage"] = time.perf_counter()
            console.rule(f"[bold]{head}[/]: {stage.title}", align="left")
        elif status == "done":
            console.print(f"{head} done in {time.perf_counter() - started['stage']:,.1f} s")
        elif status == "reused":
            console.print(f"{head} reused (finished earlier in '{out_dir}')")
        else:
            failed.append(stage.name)

    return on_stage


@job_app.command("report")
@user_errors
@writes("source")
def report_cmd(
    source: Path = typer.Argument(..., help="A 'quanta reproduce' directory."),
) -> None:
    """Re-render SOURCE/report.html from what the directory holds (one self-contained page).
    A damaged finished file (see 'quanta verify') is named in one warning line each."""
    from rich.markup import escape

    from quanta._stages import STAGES_FILE
    from quanta.integrity import verify_tree
    from quanta.report import write_report

    if (source / STAGES_FILE).is_file():  # a reproduction (else write_report says why not)
        for d in verify_tree(source)[2]:
            if d.path.name != "report.html":  # rewritten now
                console.print(
                    f"[bold yellow]warning:[/] {escape(d.line())}; the report shows what is "
                    "there. Rerun the 'quanta reproduce' that made the directory to recompute it.",
                    highlight=False,
                    soft_wrap=True,
                )
    out.print(str(write_report(source)))


@job_app.command("verify")
@user_errors
def verify_cmd(
    directory: Path = typer.Argument(..., help="A run directory (any, or a reproduction)."),
) -> None:
    """Check every directory under DIRECTORY that records its files (a run's manifest.json, the
    outputs.json of analyses, figures and reports): each finished file's size and content hash
    against the record. One line per damaged or missing file; exit 0 clean, 1 damaged."""
    from quanta.integrity import verify_tree

    if not directory.is_dir():
        raise QuantaInputError(f"'{directory}' is not a directory.")
    runs, checked, damaged = verify_tree(directory)
    if runs == 0:
        raise QuantaInputError(
            f"'{directory}' holds no quanta run directory (no manifest.json or outputs.json)."
        )
    for d in damaged:
        out.print(f"damaged: {d.line()}", highlight=False, markup=False)
    dirs = f"{runs} director{'y' if runs == 1 else 'ies'}"
    if damaged:
        console.print(f"{len(damaged)} of {checked} recorded files damaged ({dirs}).")
        raise typer.Exit(1)
    out.print(f"'{directory}': {checked} files in {dirs}, all as recorded.", markup=False)
