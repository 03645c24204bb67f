"""The ``quanta`` command line: parse → call → write. No logic lives here.

Errors in user input become one line on stderr and exit code 2 (set ``QUANTA_DEBUG=1`` for the
traceback). Config fields are accepted as ``--key value`` options after the subcommand.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from quanta._cli import EXTRA_ARGS, console, out, progress_bar, user_errors
from quanta._validation import QuantaInputError, check_choice
from quanta.cli_lm import lm_app
from quanta.cli_qdg import qdg_app

__all__ = ["app", "main"]

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
app.add_typer(lm_app, name="lm")
app.add_typer(qdg_app, name="qdg")


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
    from quanta.parity.run import CURVES, run_parity

    cfg = _parity_config(ctx, config, preset)
    interrupted = {"flag": False}

    def on_sigint(signum: int, frame: Any) -> None:
        interrupted["flag"] = True

    previous = signal.signal(signal.SIGINT, on_sigint)
    progress = progress_bar("loss {task.fields[loss]:.4f}")
    progress.disable = quiet
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


@parity_app.command("sweep", context_settings=EXTRA_ARGS)
@user_errors
def parity_sweep(
    ctx: typer.Context,
    out_dir: Path = typer.Option(Path("runs/sweep"), "--out", help="Sweep directory."),
    experiment: str = typer.Option(
        "custom", help="params | data | alpha (a built-in sweep) or custom (base + --grid)."
    ),
    preset: str = PRESET_OPT,
    config: Path | None = typer.Option(
        None, "--config", help="TOML with a [base] table of config keys and a [grid] table."
    ),
    grid: list[str] = typer.Option(
        [], "--grid", help="AXIS=V1,V2,... (repeatable); replaces that axis of the preset."
    ),
    executor: str = typer.Option("local", help="local | ray | slurm | submitit-local."),
    ray_address: str | None = typer.Option(None, help="HOST:PORT of a running Ray cluster."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
) -> None:
    """Run a grid of fused training runs; resumable (finished runs are skipped).

    Base config keys are given as --key value (see 'quanta parity train --help'); runtime keys
    (threads, device, …) apply to every run without changing the sweep's identity.
    """
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    from quanta.config import config_fields, load_toml, parse_overrides
    from quanta.parity.config import PRESETS, ParityConfig
    from quanta.sweep import SWEEP_PRESETS, SweepSpec, run_sweep

    check_choice(
        experiment, "experiment", "quanta parity sweep", ["params", "data", "alpha", "custom"]
    )
    check_choice(preset, "preset", "quanta parity sweep", list(PRESETS))
    if experiment == "custom":
        base: dict[str, Any] = dict(PRESETS[preset])
        axes: dict[str, list[Any]] = {}
    else:
        spec0 = SWEEP_PRESETS[(experiment, preset)]
        base, axes = dict(spec0.base), {k: list(v) for k, v in spec0.grid.items()}
    if config is not None:
        data = load_toml(config)
        unknown = set(data) - {"base", "grid"}
        if unknown:
            raise QuantaInputError(
                f"Sweep file '{config}' may hold [base] and [grid] tables "
                f"only. Got {sorted(unknown)!r}."
            )
        base.update(data.get("base", {}))
        axes.update({k: list(v) for k, v in data.get("grid", {}).items()})
    fields = config_fields(ParityConfig)
    runtime: dict[str, Any] = {}
    for key, value in parse_overrides(list(ctx.args)).items():
        is_runtime = key in fields and fields[key][1].metadata.get("runtime")
        (runtime if is_runtime else base)[key] = value
    for item in grid:
        axis, eq, values = item.partition("=")
        if not eq:
            raise QuantaInputError(f"--grid takes AXIS=V1,V2,...; got {item!r}.")
        axes[axis.replace("-", "_")] = [v for v in values.split(",") if v.strip()]
    if not axes:
        axes = {"seed": [base.get("seed", 0)]}  # a single run
    spec = SweepSpec(base, axes, experiment)
    from quanta.config import build_config

    runtime_values = build_config(ParityConfig, layers=[("the command line", runtime)])
    runtime = {k: getattr(runtime_values, k) for k in runtime}
    progress = Progress(
        TextColumn("[bold]{task.description}[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=quiet,
    )
    bar = progress.add_task("runs", total=None)
    steps = progress.add_task("steps of the current run", total=None, visible=False)

    def on_step(step: int, total: int) -> None:
        progress.update(steps, completed=step, total=total, visible=True)

    with progress:
        results = run_sweep(
            spec,
            out_dir,
            executor=executor,
            ray_address=ray_address,
            runtime=runtime,
            on_run_done=lambda d, t: progress.update(bar, completed=d, total=t),
            on_step=on_step,
        )
    out.print(
        f"{out_dir / 'results.parquet'}  ({results['run'].nunique()} runs, {len(results):,} rows)"
    )


@parity_app.command("analyze")
@user_errors
def parity_analyze(
    source: Path = typer.Argument(..., help="A 'parity train' run or 'parity sweep' directory."),
    out_dir: Path | None = typer.Option(
        None, "--out", help="Where to write tables and figures [default: SOURCE/analysis]."
    ),
    threshold: float | None = typer.Option(
        None, help="Learned = subtask test loss below this [default: the runs' setting, 0.1 nats]."
    ),
    units: str = typer.Option("nats", help="Units of --threshold: nats | bits."),
    bootstrap: int = typer.Option(1000, help="Bootstrap replicates for exponent CIs."),
    seed: int = typer.Option(0, help="Seed of the bootstrap."),
) -> None:
    """Fit L vs N / D / S, learned count vs scale and convergence time vs frequency, next to
    the theory; write analysis.json, Parquet tables and PNG figures."""
    from quanta.parity.analyze import analyze, write_analysis

    analysis = analyze(source, threshold=threshold, units=units, bootstrap=bootstrap, seed=seed)
    written = write_analysis(analysis, out_dir)
    table = Table(title=f"loss exponents ({analysis.experiment}; power-law fits, 95% CI)")
    for name in ("axis", "group", "fitted", "95% CI", "theory", "points"):
        table.add_column(name, justify="right")
    exps = analysis.exponents
    for r in exps[exps["fit"] == "power"].to_dict("records"):
        fitted = f"{r['exponent']:.3f}" if r["success"] else f"failed: {r['message']}"
        ci = f"[{r['ci_low']:.3f}, {r['ci_high']:.3f}]" if r["ci_low"] == r["ci_low"] else "-"
        table.add_row(
            r["axis"], r["group"], fitted, ci, f"{r['predicted']:.3f}", str(r["n_points"])
        )
    out.print(table)
    slopes = Table(
        title=f"log-log slopes (learned = loss < {analysis.threshold_nats:.4g} nats, 95% CI)"
    )
    for name in ("quantity", "group", "slope", "95% CI", "theory", "points"):
        slopes.add_column(name, justify="right")
    for r in analysis.slopes.sort_values("quantity", kind="stable").to_dict("records"):
        ok = r["slope"] == r["slope"]
        slopes.add_row(
            r["quantity"],
            r["group"],
            f"{r['slope']:.3f}" if ok else "too few points",
            f"[{r['ci_low']:.3f}, {r['ci_high']:.3f}]" if ok else "-",
            f"{r['predicted']:.3f}",
            str(r["n_points"]),
        )
    out.print(slopes)
    out.print(f"{written[0].parent}/  ({', '.join(p.name for p in written)})")


@app.command("theory")
@user_errors
def theory(
    alpha: str = typer.Option("0.2,0.4,0.8", help="Zipf exponents α > 0, comma-separated."),
    n_quanta: int | None = typer.Option(
        None, help="Number of quanta [default: infinitely many, ζ(α+1) normalization]."
    ),
    tau: float = typer.Option(10.0, help="Occurrences needed to learn a quantum (D and S)."),
    batch_size: int = typer.Option(100, help="Samples per step for L(S)."),
    seeds: int = typer.Option(5, help="Monte-Carlo repetitions averaged per curve."),
    seed: int = typer.Option(0, help="Random seed."),
    out_dir: Path = typer.Option(Path("runs/theory"), "--out", help="Output directory."),
) -> None:
    """Simulate the quantization model: L(N), L(D), L(S) for each α, fitted exponents vs the
    predicted α and α/(α+1); writes theory.parquet, theory.json and theory.png."""
    from quanta import plots
    from quanta.store import write_json, write_parquet
    from quanta.theory import theory_table

    try:
        alphas = [float(a) for a in alpha.split(",") if a.strip()]
    except ValueError:
        raise QuantaInputError(f"--alpha takes numbers like 0.2,0.4; got {alpha!r}.") from None
    if not alphas:
        raise QuantaInputError("--alpha needs at least one value, e.g. --alpha 0.4.")
    curves, exps = theory_table(
        alphas, n_quanta=n_quanta, tau=tau, batch_size=batch_size, seeds=seeds, seed=seed
    )
    write_parquet(out_dir / "theory.parquet", curves)
    write_json(
        out_dir / "theory.json",
        {
            "settings": {
                "n_quanta": n_quanta,
                "tau": tau,
                "batch_size": batch_size,
                "seeds": seeds,
                "seed": seed,
            },
            "exponents": exps.to_dict("records"),
        },
    )
    plots.save_figure(plots.theory_figure(curves, exps), out_dir / "theory.png")
    table = Table(title="quantization model: fitted vs predicted exponents")
    for name in ("α", "kind", "fitted", "predicted", "learned slope", "predicted slope"):
        table.add_column(name, justify="right")
    for r in exps.to_dict("records"):
        table.add_row(
            f"{r['alpha']:g}",
            r["kind"],
            f"{r['fitted']:.4f}",
            f"{r['predicted']:.4f}",
            f"{r['n_learned_slope']:.4f}",
            f"{r['predicted_slope']:.4f}",
        )
    out.print(table)
    out.print(f"{out_dir}/  (theory.parquet, theory.json, theory.png)")


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


@app.command("reproduce")
@user_errors
def reproduce_cmd(
    preset: str = typer.Option("cpu", help="cpu (minutes on 2 cores) | paper (GPUs) | tiny."),
    only: str | None = typer.Option(
        None, help="Groups (toy, lm, qdg) or stage names, comma-separated [every stage]."
    ),
    out_dir: Path = typer.Option(Path("runs/reproduce"), "--out", help="Reproduction directory."),
    corpus: str = typer.Option(
        "stdlib:test", help="Corpus of the LM stages (see 'quanta lm losses --corpus')."
    ),
    executor: str = typer.Option(
        "local", help="Executor of the toy sweeps: local | ray | slurm | submitit-local."
    ),
    ray_address: str | None = typer.Option(None, help="HOST:PORT of a running Ray cluster."),
    device: str | None = typer.Option(
        None, help="torch device of toy training and LM losses [the preset's: cpu; paper: cuda]."
    ),
) -> None:
    """Run every pipeline of the paper in order (theory, toy sweeps, LM suite → losses →
    analysis, QDG → clusters → validation) and write DIR/report.html.

    Resumable: finished stages are reused, and each stage's own command resumes where it
    stopped. A failing stage is reported by name; the others still run and the report marks
    what is missing (exit code 1).
    """
    import time

    from quanta.pipeline import plan, reproduce

    check_choice(
        executor, "executor", "quanta reproduce", ["local", "ray", "slurm", "submitit-local"]
    )
    if ray_address and executor != "ray":
        raise QuantaInputError("--ray-address is used with --executor ray only.")
    stages = plan(preset, only)
    extra: dict[str, list[str]] = {}
    if device:
        for command in ("parity train", "parity sweep", "lm losses"):
            extra[command] = ["--device", device]
    if executor != "local":
        extra.setdefault("parity sweep", []).extend(["--executor", executor])
        if ray_address:
            extra["parity sweep"] += ["--ray-address", ray_address]
    t0 = {"stage": time.perf_counter()}
    failed: list[str] = []

    def on_stage(i: int, n: int, stage: Any, status: str) -> None:
        head = f"[{i + 1}/{n}] {stage.name}"
        if status == "start":
            t0["stage"] = time.perf_counter()
            console.rule(f"[bold]{head}[/]: {stage.title}", align="left")
        elif status == "done":
            console.print(f"{head} done in {time.perf_counter() - t0['stage']:,.1f} s")
        elif status == "reused":
            console.print(f"{head} reused (finished earlier in '{out_dir}')")
        else:
            failed.append(stage.name)

    try:
        state = reproduce(out_dir, preset, only=only, corpus=corpus, extra=extra, on_stage=on_stage)
    except KeyboardInterrupt:
        console.print(
            f"interrupted; finished stages are kept in '{out_dir}'. Run the same command again "
            "to resume.",
            soft_wrap=True,
        )
        raise typer.Exit(130) from None
    table = Table(title=f"quanta reproduce --preset {preset}")
    for name in ("stage", "status", "seconds"):
        table.add_column(name, justify="right")
    for stage in stages:
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


@app.command("report")
@user_errors
def report_cmd(
    source: Path = typer.Argument(..., help="A 'quanta reproduce' directory."),
) -> None:
    """Re-render SOURCE/report.html from what the directory holds (one self-contained page)."""
    from quanta.report import write_report

    out.print(str(write_report(source)))


def main() -> None:
    """Console-script entry point."""
    app(prog_name="quanta")


if __name__ == "__main__":  # pragma: no cover
    main()
