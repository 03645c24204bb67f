"""The ``quanta`` command line: parse → call → write. No logic lives here.

Errors in user input become one line on stderr and exit code 2 (set ``QUANTA_DEBUG=1`` for the
traceback). Config fields are accepted as ``--key value`` options after the subcommand.
"""

from __future__ import annotations

import functools
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from quanta._validation import QuantaInputError, check_choice

__all__ = ["app", "main"]

F = TypeVar("F", bound=Callable[..., Any])

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode=None,
    help="quanta: the science of neural scaling (the Quantization Model).",
)
parity_app = typer.Typer(
    no_args_is_help=True, rich_markup_mode=None, help="The toy world: multitask sparse parity."
)
app.add_typer(parity_app, name="parity")

console = Console(stderr=True)
out = Console()
EXTRA_ARGS = {"allow_extra_args": True, "ignore_unknown_options": True}


def fail(message: str) -> typer.Exit:
    """Print one error line and return the exit-2 exception to raise."""
    console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(2)


def user_errors(fn: F) -> F:
    """Turn user-input errors raised inside ``fn`` into one line and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (QuantaInputError, ValueError, TypeError, OSError) as exc:
            if os.environ.get("QUANTA_DEBUG"):
                raise
            raise fail(str(exc)) from None

    return wrapper  # type: ignore[return-value]


def _config_epilog(cls: type, presets: dict[str, dict[str, Any]]) -> str:
    from quanta.config import config_fields

    lines = ["Config keys (as --key value, or in a TOML file given with --config):", ""]
    for name, (_tp, f) in config_fields(cls).items():
        default = f.default
        if isinstance(default, tuple):
            default = ",".join(map(str, default))
        tag = " [runtime]" if f.metadata.get("runtime") else ""
        lines.append(
            f"  --{name.replace('_', '-')}  (default {default}){tag}: {f.metadata.get('help', '')}"
        )
    lines += [
        "",
        "Presets: " + ", ".join(presets) + ". Precedence: defaults < preset < "
        "--config file < command line.",
    ]
    return "\n".join(lines)


def _parity_config(ctx: typer.Context, config: Path | None, preset: str) -> Any:
    from quanta.config import build_config, load_toml, parse_overrides
    from quanta.parity.config import PRESETS, ParityConfig

    check_choice(preset, "preset", "quanta parity", list(PRESETS))
    layers: list[tuple[str, dict[str, Any]]] = [(f"preset {preset!r}", PRESETS[preset])]
    if config is not None:
        layers.append((f"config file '{config}'", load_toml(config)))
    layers.append(("the command line", dict(parse_overrides(list(ctx.args)))))
    return build_config(ParityConfig, layers=layers)


def _parity_epilog() -> str:
    from quanta.parity.config import PRESETS, ParityConfig

    return _config_epilog(ParityConfig, PRESETS)


CONFIG_OPT = typer.Option(None, "--config", help="TOML file of config keys.")
PRESET_OPT = typer.Option("cpu", "--preset", help="cpu (minutes on 2 cores) or paper (GPU).")


@parity_app.command("train", context_settings=EXTRA_ARGS, epilog=_parity_epilog())
@user_errors
def parity_train(
    ctx: typer.Context,
    out_dir: Path = typer.Option(Path("runs/parity"), "--out", help="Run directory."),
    config: Path | None = CONFIG_OPT,
    preset: str = PRESET_OPT,
    figures: bool = typer.Option(True, help="Write figures/subtask_curves.png."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
) -> None:
    """Train widths × init seeds as one fused network; write curves.parquet and a summary.

    Re-running the same command resumes an interrupted run (Ctrl-C checkpoints first) or
    reports that it is complete.
    """
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from quanta.parity.run import CURVES, run_parity

    cfg = _parity_config(ctx, config, preset)
    interrupted = {"flag": False}

    def on_sigint(signum: int, frame: Any) -> None:
        interrupted["flag"] = True

    previous = signal.signal(signal.SIGINT, on_sigint)
    columns = (
        TextColumn("[bold]train[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    progress = Progress(*columns, console=console, disable=quiet)
    bar = progress.add_task("train", total=cfg.steps, loss=float("nan"))

    def on_start(step: int) -> None:  # only once the directory is claimed: no bar on refusal
        progress.update(bar, completed=step)
        progress.start()

    try:
        outcome = run_parity(
            cfg,
            out_dir,
            on_start=on_start,
            stop=lambda: interrupted["flag"],
            progress=lambda s, info: progress.update(bar, completed=s, loss=info["loss"]),
        )
    except KeyboardInterrupt as exc:
        progress.stop()
        console.print(
            f"interrupted ({exc}); the checkpoint is in '{out_dir}'. Run the same "
            "command again to resume."
        )
        raise typer.Exit(130) from None
    finally:
        progress.stop()
        signal.signal(signal.SIGINT, previous)
    if outcome.status == "complete":
        console.print(f"'{out_dir}' already holds this run, complete; nothing to do.")
    elif outcome.resumed_from:
        console.print(f"resumed from step {outcome.resumed_from}.")
    if figures:
        from quanta.plots import save_figure, subtask_figure

        save_figure(subtask_figure(outcome.curves), out_dir / "figures" / "subtask_curves.png")
    _print_summary(outcome.summary, cfg.learned_threshold, cfg.n_tasks)
    out.print(
        f"{out_dir / CURVES}  ({len(outcome.curves):,} rows, "
        f"{outcome.wall_seconds:.1f} s of training)"
    )


def _print_summary(summary: Any, threshold: float, n_tasks: int) -> None:
    table = Table(title=f"members (learned = test loss < {threshold:g} nats, of {n_tasks})")
    cols = [
        ("width", "width"),
        ("seed", "seed"),
        ("n_params", "params"),
        ("final_loss_nats", "loss (nats)"),
        ("final_accuracy", "accuracy"),
        ("n_learned", "learned"),
    ]
    if "early_stop_step" in summary.columns:
        cols += [
            ("early_stop_step", "best val step"),
            ("early_stop_test_loss_nats", "test loss there"),
        ]
    for _, title in cols:
        table.add_column(title, justify="right")
    for row in summary[[k for k, _ in cols]].to_dict("records"):
        table.add_row(*(f"{v:.4f}" if isinstance(v, float) else f"{v:,}" for v in row.values()))
    out.print(table)


@parity_app.command("describe", context_settings=EXTRA_ARGS, epilog=_parity_epilog())
@user_errors
def parity_describe(
    ctx: typer.Context,
    config: Path | None = CONFIG_OPT,
    preset: str = PRESET_OPT,
    show_all: bool = typer.Option(False, "--all", help="List every subtask."),
) -> None:
    """Print the task: subtask frequencies, parity subsets, members and their sizes."""
    import numpy as np

    from quanta.parity.train import members_table

    cfg = _parity_config(ctx, config, preset)
    task = cfg.make_task()
    probs = task.probs.numpy()
    out.print(repr(task))
    entropy = float(-(probs * np.log(probs)).sum())
    out.print(
        f"entropy of the subtask distribution: {entropy:.4f} nats; expected samples of "
        f"the rarest subtask per batch: {probs[-1] * cfg.batch_size:.3g}"
    )
    table = Table(title="subtasks")
    for name in ("task", "subset S_i", "p_i", "per batch"):
        table.add_column(name, justify="right")
    n = task.n_tasks
    shown = range(n) if show_all or n <= 16 else [*range(10), None, *range(n - 3, n)]
    for i in shown:
        if i is None:
            table.add_row("…", "…", "…", "…")
            continue
        subset = ",".join(map(str, task.subsets[i].tolist()))
        table.add_row(str(i), subset, f"{probs[i]:.4g}", f"{probs[i] * cfg.batch_size:.4g}")
    out.print(table)
    members = Table(title="members")
    for name in ("member", "width", "seed", "params P"):
        members.add_column(name, justify="right")
    for row in members_table(cfg).itertuples(index=False):
        members.add_row(*(f"{v:,}" for v in row))
    out.print(members)


def main() -> None:
    """Console-script entry point."""
    app(prog_name="quanta")


if __name__ == "__main__":  # pragma: no cover
    main()
