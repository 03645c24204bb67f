"""``quanta parity …``: the toy world — train, sweep, analyze, capacity, domino, describe (parse →
call → write).

Config fields are accepted as ``--key value`` options after the subcommand; ``--help`` lists
each key with its type and default.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from quanta._validation import check_choice
from quanta.cli._common import (
    EXTRA_ARGS,
    WAIT_OPT,
    Terminated,
    config_keys_command,
    console,
    interrupt_exit,
    out,
    progress_bar,
    user_errors,
    writes,
)

__all__ = ["parity_app"]

parity_app = typer.Typer(
    no_args_is_help=True, rich_markup_mode=None, help="The toy world: multitask sparse parity."
)


def _parity_config_source() -> tuple[type, dict[str, dict[str, Any]]]:
    from quanta.parity.config import PRESETS, ParityConfig

    return ParityConfig, PRESETS


# ``parity train`` and ``parity describe`` take ParityConfig keys; their help lists them.
ParityConfigCommand = config_keys_command(_parity_config_source)


def _parity_config(ctx: typer.Context, config: Path | None, preset: str) -> Any:
    from quanta.config import build_config, load_toml, parse_overrides
    from quanta.parity.config import PRESETS, ParityConfig

    check_choice(preset, "preset", "quanta parity", list(PRESETS))
    layers: list[tuple[str, dict[str, Any]]] = [(f"preset {preset!r}", PRESETS[preset])]
    if config is not None:
        layers.append((f"config file '{config}'", load_toml(config)))
    layers.append(("the command line", dict(parse_overrides(list(ctx.args)))))
    return build_config(ParityConfig, layers=layers)


CONFIG_OPT = typer.Option(None, "--config", help="TOML file of config keys.")
PRESET_OPT = typer.Option("cpu", "--preset", help="cpu (minutes on 2 cores) or paper (GPU).")


@parity_app.command("train", cls=ParityConfigCommand, context_settings=EXTRA_ARGS)
@user_errors
@writes("out_dir")
def parity_train(
    ctx: typer.Context,
    out_dir: Path = typer.Option(Path("runs/parity"), "--out", help="Run directory."),
    config: Path | None = CONFIG_OPT,
    preset: str = PRESET_OPT,
    figures: bool = typer.Option(True, help="Write figures/subtask_curves.png."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
    wait: bool = WAIT_OPT,
) -> None:
    """Train widths × init seeds as one fused network; write curves.parquet and a summary.

    Re-running the same command resumes an interrupted run (Ctrl-C checkpoints first) or
    reports that it is complete.
    """
    from quanta.parity.run import CURVES, run_parity

    cfg = _parity_config(ctx, config, preset)
    interrupted: dict[str, int] = {}  # the signal that asked to stop, if one did

    def on_signal(signum: int, frame: Any) -> None:  # stop at the next step boundary
        interrupted.setdefault("signum", signum)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
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
            stop=lambda: bool(interrupted),
            progress=lambda s, info: progress.update(bar, completed=s, loss=info["loss"]),
        )
    except KeyboardInterrupt as exc:
        progress.stop()
        term = interrupted.get("signum") == signal.SIGTERM or isinstance(exc, Terminated)
        cause = Terminated(str(exc)) if term else exc
        raise interrupt_exit(cause, f"{exc}; the checkpoint is in '{out_dir}'") from None
    finally:
        progress.stop()
        for s, handler in previous.items():
            signal.signal(s, handler)
    if outcome.status == "complete":
        console.print(f"'{out_dir}' already holds this run, complete; nothing to do.")
    elif outcome.resumed_from:
        console.print(f"resumed from step {outcome.resumed_from}.")
    if figures:
        from quanta.plots import save_figure, subtask_figure
        from quanta.store import record_outputs

        figure = out_dir / "figures" / "subtask_curves.png"
        record_outputs(out_dir, [save_figure(subtask_figure(outcome.curves), figure)])
    _print_summary(outcome.summary, cfg.learned_threshold, cfg.n_tasks)
    out.print(
        f"{out_dir / CURVES}  ({len(outcome.curves):,} rows, "
        f"{outcome.wall_seconds:.1f} s of training)"
    )


@parity_app.command("sweep", context_settings=EXTRA_ARGS)
@user_errors
@writes("out_dir")
def parity_sweep(
    ctx: typer.Context,
    out_dir: Path = typer.Option(Path("runs/sweep"), "--out", help="Sweep directory."),
    experiment: str = typer.Option(
        "custom",
        help="params | data | alpha | alpha-data (a built-in sweep) or custom (base + --grid).",
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
    wait: bool = WAIT_OPT,
) -> None:
    """Run a grid of fused training runs; resumable (finished runs are skipped).

    Base config keys are given as --key value (see 'quanta parity train --help'); runtime keys
    (threads, device, …) apply to every run without changing the sweep's identity.
    """
    from quanta.sweep import run_sweep, sweep_spec

    spec, runtime = sweep_spec(experiment, preset, sweep_file=config, args=ctx.args, grid=grid)
    progress = progress_bar()
    progress.disable = quiet
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
@writes(lambda kw: kw["out_dir"] or kw["source"] / "analysis")
def parity_analyze(
    source: Path = typer.Argument(..., help="A 'parity train' run or 'parity sweep' directory."),
    out_dir: Path | None = typer.Option(
        None, "--out", help="Where to write tables and figures [default: SOURCE/analysis]."
    ),
    threshold: float | None = typer.Option(
        None, help="Learned = subtask test loss below this [default: the runs' setting, 0.1 nats]."
    ),
    units: str = typer.Option("nats", help="Units of --threshold: nats | bits."),
    convergence_threshold: float = typer.Option(
        0.1, help="Converged = first step with test loss below this (the paper's 0.1 bits)."
    ),
    convergence_units: str = typer.Option(
        "bits", help="Units of --convergence-threshold: bits | nats."
    ),
    bootstrap: int = typer.Option(1000, help="Bootstrap replicates for exponent CIs."),
    seed: int = typer.Option(0, help="Seed of the bootstrap."),
) -> None:
    """Fit L vs N / D / S, learned count vs scale and convergence time vs frequency, next to
    the theory; write analysis.json, Parquet tables and PNG figures."""
    from quanta.parity.analyze import analyze, write_analysis

    analysis = analyze(
        source,
        threshold=threshold,
        units=units,
        convergence_threshold=convergence_threshold,
        convergence_units=convergence_units,
        bootstrap=bootstrap,
        seed=seed,
    )
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
    learned, converged = (analysis.thresholds[k]["label"] for k in ("learned", "convergence"))
    slopes = Table(title=f"log-log slopes (learned = {learned}, converged = {converged}; 95% CI)")
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


@parity_app.command("polygenic")
@user_errors
@writes(lambda kw: kw["out_dir"] or kw["source"] / "polygenic")
def parity_polygenic(
    source: Path = typer.Argument(..., help="A 'parity train --polygenic P' run directory."),
    out_dir: Path | None = typer.Option(
        None, "--out", help="Where to write tables and the figure [default: SOURCE/polygenic]."
    ),
    bootstrap: int = typer.Option(1000, help="Bootstrap replicates over pairs."),
    seed: int = typer.Option(0, help="Seed of the bootstrap."),
) -> None:
    """Score the combination rules (additive, one-at-a-time, independent, bottleneck) on the
    polygenic samples over every width and step; write polygenic.json, Parquet and a PNG."""
    from quanta.parity.polygenic import analyze_polygenic, write_polygenic

    analysis = analyze_polygenic(source, bootstrap=bootstrap, seed=seed)
    written = write_polygenic(analysis, out_dir)
    table = Table(title="combination rules on polygenic samples (RMSE, nats; ΔAIC)")
    for name in ("kind", "rule", "RMSE", "RMSE informative", "ΔAIC", "points"):
        table.add_column(name, justify="right")
    for r in analysis.fit.scores.to_dict("records"):
        table.add_row(
            r["kind"],
            r["rule"],
            f"{r['rmse_nats']:.4f}",
            f"{r['rmse_informative_nats']:.4f}",
            f"{r['delta_aic']:.1f}",
            str(r["n_points"]),
        )
    out.print(table)
    for v in analysis.fit.verdicts.to_dict("records"):
        out.print(
            f"{v['kind']}: best {v['best']}, runner-up {v['runner_up']} with "
            f"{v['rmse_ratio']:.3f}x its RMSE (95% CI [{v['ratio_ci_low']:.3f}, "
            f"{v['ratio_ci_high']:.3f}] over {v['n_pairs']} pairs)"
        )
    out.print(f"{written[0].parent}/  ({', '.join(p.name for p in written)})")


@parity_app.command("capacity")
@user_errors
@writes(lambda kw: kw["out_dir"] or kw["source"] / "capacity")
def parity_capacity(
    source: Path = typer.Argument(..., help="A 'parity train' run (e.g. with --k-per-task)."),
    out_dir: Path | None = typer.Option(
        None, "--out", help="Where to write capacity.json [default: SOURCE/capacity]."
    ),
    threshold: float = typer.Option(0.1, help="Learned = subtask test loss below this, nats."),
    wait: bool = WAIT_OPT,
) -> None:
    """Quanta of unequal capacity: learning order vs frequency and cost, and the unlearned mass
    per width vs the knapsack prediction (unequal vs equal costs)."""
    from quanta.parity.capacity import run_capacity

    result = run_capacity(source, out_dir, threshold=threshold)
    o, pred = result["order"], result["prediction"]
    n = {k: _num(v) for k, v in o.items() if not isinstance(v, str)}
    out.print(
        f"order at width {o['width']} ({o['n_learned']} learned, {o['n_censored']} never): "
        f"Spearman vs frequency {n['spearman_p']}, vs cost {n['spearman_cost']}; "
        f"log t = {n['a']} log p + {n['b']} log c (R² {n['r2_joint']}; p alone "
        f"{n['r2_p']}, c alone {n['r2_cost']}): {o['verdict']}"
    )
    for name in ("unequal", "equal"):
        r = pred[name]
        out.print(
            f"knapsack, {name} costs: C = {r['C']:.3g}, rmse of unlearned mass {_num(r['rmse'])}"
        )
    out.print(
        f"{(out_dir or source / 'capacity')}/  (capacity.json, capacity.parquet, capacity.png)"
    )


@parity_app.command("domino")
@user_errors
@writes("out_dir")
def parity_domino(
    sources: list[Path] = typer.Argument(..., help="'parity train' runs and 'parity sweep' dirs."),
    out_dir: Path = typer.Option(Path("runs/domino"), "--out", help="Output directory."),
    threshold: float = typer.Option(0.1, help="Learned = subtask test loss below this, nats."),
    wait: bool = WAIT_OPT,
) -> None:
    """Size beyond capacity: per width, when each subtask is learned against its frequency
    (slope vs p_i, out-of-order pairs, width slope at fixed p_i), at matched steps and at the
    end, next to α_N vs α of α-sweeps."""
    from quanta.parity.domino import run_domino

    result = run_domino(sources, out_dir, threshold=threshold)
    table = Table(title="domino: learned step t_i vs p_i (optimization only: slope -1, width 0)")
    for name in ("source", "α", "slope t vs p", "out of order", "width slope", "α_N"):
        table.add_column(name, justify="right")
    alpha_n = {(r["source"], r["alpha"]): r["alpha_N"] for r in result["alpha"]}
    for r in result["summary"]:
        an = alpha_n.get((r["source"], r["alpha"]))
        table.add_row(
            Path(r["source"]).name,
            f"{r['alpha']:g}",
            *(_num(r[k]) for k in ("t_vs_p_slope", "out_of_order", "width_slope")),
            _num(an),
        )
    out.print(table)
    out.print(f"{out_dir}/  (domino.json, domino.parquet, domino.png)")


def _num(v: Any) -> str:
    return "-" if v is None or v != v else f"{v:.3f}"


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


@parity_app.command("describe", cls=ParityConfigCommand, context_settings=EXTRA_ARGS)
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
        subset = ",".join(str(j) for j in task.subsets[i].tolist() if j >= 0)  # -1 pads k_i
        table.add_row(str(i), subset, f"{probs[i]:.4g}", f"{probs[i] * cfg.batch_size:.4g}")
    out.print(table)
    members = Table(title="members")
    for name in ("member", "width", "seed", "params P"):
        members.add_column(name, justify="right")
    for row in members_table(cfg).itertuples(index=False):
        members.add_row(*(f"{v:,}" for v in row))
    out.print(members)
    mix = cfg.make_polygenic()
    if mix is not None:
        pairs = Table(
            title=f"evaluated polygenic pairs ({cfg.polygenic:g} of samples polygenic, "
            f"{cfg.polygenic_and:g} of them AND; weight: share among these pairs)"
        )
        for name in ("pair", "a", "b", "weight"):
            pairs.add_column(name, justify="right")
        for i, ((a, b), w) in enumerate(zip(mix.eval_pairs(), mix.pair_weights(), strict=True)):
            pairs.add_row(str(i), str(a), str(b), f"{float(w):.4f}")
        out.print(pairs)
