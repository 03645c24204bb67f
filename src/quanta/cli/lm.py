"""``quanta lm …``: model suites, per-token losses and their analysis (parse → call → write)."""

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
    float_list,
    one_line_warnings,
    out,
    progress_bar,
    user_errors,
    writes,
)

__all__ = ["lm_app"]

lm_app = typer.Typer(
    no_args_is_help=True,
    rich_markup_mode=None,
    help="Language models: suites, per-token losses, scaling decomposition.",
)
suite_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="Model suites.")
lm_app.add_typer(suite_app, name="suite")


def _sizes(text: str) -> tuple[tuple[int, int], ...]:
    """``--sizes 64x2,128x4`` → ``((64, 2), (128, 4))``; one error line otherwise."""
    try:
        pairs = [part.strip().lower().split("x") for part in text.split(",") if part.strip()]
        return tuple((int(h), int(n)) for h, n in pairs)
    except ValueError:
        raise QuantaInputError(
            f"--sizes takes HIDDENxLAYERS pairs like 64x2,128x4; got {text!r}."
        ) from None


@suite_app.command("train")
@user_errors
@writes("out_dir")
def suite_train(
    out_dir: Path = typer.Option(Path("runs/suite"), "--out", help="Suite directory."),
    preset: str = typer.Option(
        "cpu", help="tiny (seconds) | cpu (minutes on 2 cores) | cpu-long (< 1 h) | gpu."
    ),
    corpus: str | None = typer.Option(None, help="Training corpus [default: stdlib:train]."),
    max_docs: int | None = typer.Option(None, help="Use at most this many documents."),
    steps: int | None = typer.Option(None, help="Optimizer steps per model."),
    batch_size: int | None = typer.Option(None, help="Sequences per step."),
    context: int | None = typer.Option(None, help="Tokens per training sequence."),
    vocab_size: int | None = typer.Option(None, help="BPE vocabulary size."),
    seed: int | None = typer.Option(
        None, help="Seed of the data order (and of the init unless --init-seed is given)."
    ),
    init_seed: int | None = typer.Option(
        None, help="Seed of the init alone: replicas of one data order [--seed]."
    ),
    sizes: str | None = typer.Option(
        None, help="Models to train as HIDDENxLAYERS, comma-separated (e.g. 64x2) [the preset's]."
    ),
    lrs: str | None = typer.Option(
        None, help="Peak learning rate per size, comma-separated (one per size of the preset)."
    ),
    precision: str | None = typer.Option(
        None, help="bf16 (bfloat16 autocast, float32 master weights) | f32."
    ),
    threads: int | None = typer.Option(
        None, help="torch CPU threads per model (0 = all cores, divided among --workers)."
    ),
    workers: int | None = typer.Option(
        None,
        help="Sizes trained at once, each in its own process of --threads (or cores // N) "
        "threads, largest first (capped at the number of sizes); the same checkpoints as 1 "
        "process at the same threads per model [1].",
    ),
    device: str | None = typer.Option(None, help="torch device [default: cpu]."),
    engine: str | None = typer.Option(
        None, help="fast (quanta.lm.neox) | hf (GPTNeoXForCausalLM); same checkpoints [fast]."
    ),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
    wait: bool = WAIT_OPT,
) -> None:
    """Train a Pythia-style GPT-NeoX suite (≥ 4 sizes, same data order, log-spaced
    checkpoints saved as step<N> folders) on a corpus with its own BPE tokenizer."""
    from quanta.lm.minisuite import build_suite_config, train_minisuite

    cfg = build_suite_config(
        preset,
        corpus=corpus,
        max_docs=max_docs,
        steps=steps,
        batch_size=batch_size,
        context=context,
        vocab_size=vocab_size,
        seed=seed,
        init_seed=init_seed,
        sizes=None if sizes is None else _sizes(sizes),
        lrs=float_list(lrs, "--lrs") if lrs is not None else None,
        precision=precision,
        threads=threads,
        workers=workers,
        device=device,
        engine=engine,
    )
    progress = progress_bar("loss {task.fields[loss]:.3f}")
    progress.disable = quiet
    bars: dict[str, Any] = {}

    def on_step(name: str, step: int, total: int, loss: float) -> None:
        if name not in bars:
            bars[name] = progress.add_task(name, total=total, loss=float("nan"))
        progress.update(bars[name], completed=step, loss=loss)

    with progress:
        models = train_minisuite(cfg, out_dir, progress=on_step)
    table = Table(title=f"suite at {out_dir} ({len(models)} models)")
    for name in ("model", "non-embedding N", "total params", "final train loss", "checkpoints"):
        table.add_column(name, justify="right")
    for r in models.to_dict("records"):
        table.add_row(
            r["name"],
            f"{r['n_params']:,}",
            f"{r['n_params_total']:,}",
            f"{r['final_train_loss']:.4f}",
            ",".join(r["revisions"]),
        )
    out.print(table)


@suite_app.command("show")
@user_errors
def suite_show(
    name: str | None = typer.Argument(
        None, help="A hub suite (pythia, polypythia-160m, …) or a suite file (.toml) [all]."
    ),
) -> None:
    """The suites --suite accepts by name (one line each: models, N range, revisions), or the
    models of one: hub ids (or sources), non-embedding N, seeds, labels, revisions."""
    from quanta.lm.suite import SUITES, suite_table

    if name is None:
        table = Table(title="hub suites (quanta lm suite show NAME for one)")
        for column in ("suite", "models", "non-embedding N", "axis", "revisions"):
            table.add_column(column, justify="left" if column == "revisions" else "right")
        for suite in SUITES.values():
            n = suite.models.values()
            table.add_row(
                suite.name,
                str(len(suite.members)),
                f"{min(n):,} … {max(n):,}" if min(n) != max(n) else f"{min(n):,}",
                suite.axis,
                f"default {suite.final}; {suite.revisions_text}",
            )
        out.print(table)
        return
    if name.endswith(".toml"):
        _show_user_suite(name)
        return
    models = suite_table(name)  # an unknown name: one line with the closest suggested
    table = Table(title=f"--suite {name}: {SUITES[name].description}")
    for column in ("hub id", "non-embedding N", "seed", "label"):
        table.add_column(column, justify="right")
    for r in models.to_dict("records"):
        seed = "" if r["seed"] is None or r["seed"] != r["seed"] else str(int(r["seed"]))
        table.add_row(r["hub_id"], f"{r['n_params']:,}", seed, r["label"])
    out.print(table)
    out.print(
        f"default revision {SUITES[name].final}; revisions: {models['revisions'].iloc[0]}",
        soft_wrap=True,
    )


def _show_user_suite(path: str) -> None:
    """The models of a suite file, as ``--suite`` would use them."""
    from quanta.lm.suite import resolve_suite

    table = Table(title=f"--suite {path}")
    for column in ("model", "source", "non-embedding N", "seed", "label"):
        table.add_column(column, justify="right")
    for ref in resolve_suite(path):
        n = f"{ref.n_params:,}" if ref.n_params is not None else "counted when loaded"
        seed = "" if ref.seed is None else str(ref.seed)
        table.add_row(ref.label(), ref.source, n, seed, ref.tag)
    out.print(table)


@lm_app.command("losses")
@user_errors
@writes("out_dir")
def lm_losses(
    suite: str = typer.Option(
        ...,
        help="pythia-v0 (the paper's) | pythia (today's) | any hub suite of 'quanta lm suite "
        "show' | a suite file (.toml) | a suite directory | comma-separated model dirs or hub "
        "ids org/name[@rev].",
    ),
    corpus: str = typer.Option(
        "stdlib:test", help="stdlib[:train|:test], text file, directory, .jsonl[.zst], HF dataset."
    ),
    out_dir: Path = typer.Option(Path("runs/losses"), "--out", help="Output directory."),
    checkpoints: str | None = typer.Option(
        None,
        help="Training dynamics: 'all' or model names (comma-separated), each over its saved "
        "checkpoints (Pythia: step1000 … step143000); one column per model × revision.",
    ),
    revisions: str | None = typer.Option(
        None, help="With --checkpoints: only these revisions, e.g. step1000,step8000."
    ),
    max_docs: int | None = typer.Option(None, help="At most this many documents."),
    max_len: int | None = typer.Option(
        None,
        help="Truncate documents to this many tokens [default: the models' context, at most "
        "1024; more is refused].",
    ),
    windows: int = typer.Option(
        1,
        help="Score up to this many consecutive --max-len windows of each document, each read "
        "from its own start as a document of its own (1: the first window only, the paper's way).",
    ),
    bos: bool = typer.Option(False, "--bos", help="Prepend BOS (the paper: no BOS)."),
    text_field: str = typer.Option("text", help="JSON / dataset field holding the text."),
    decode_errors: str = typer.Option(
        "strict",
        help="Invalid UTF-8 or a lone surrogate in the corpus: strict (refused, naming "
        "FILE:LINE) | replace (each becomes U+FFFD).",
    ),
    dtype: str = typer.Option("float32", help="Stored loss dtype: float32 | float16."),
    batch_tokens: int = typer.Option(8192, help="Padded tokens per forward batch."),
    head: str = typer.Option(
        "auto",
        help="Output head: auto (chunked if it matches the model's own logits, else full with a "
        "warning) | chunked (or fail) | full. The path each model took is in models.parquet.",
    ),
    device: str = typer.Option("cpu", help="torch device."),
    threads: int | None = typer.Option(
        None, help="torch CPU threads per model [default: torch's locally, 1 per remote task]."
    ),
    executor: str = typer.Option(
        "local", help="local | ray | slurm | submitit-local: one task per model column."
    ),
    ray_address: str | None = typer.Option(None, help="HOST:PORT of a running Ray cluster."),
    slurm_array_parallelism: int | None = typer.Option(
        None, help="At most this many SLURM array jobs at once [no limit]."
    ),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
    wait: bool = WAIT_OPT,
) -> None:
    """Per-token losses (nats) of every model of a suite on a corpus: losses.npy
    [n_tokens, n_models] + the token index table; resumable per model. Remote executors run
    one task per model column, each asking for --threads CPUs and, on CUDA, one GPU."""
    from quanta.lm.fingerprint import DuplicateCheckpointWarning
    from quanta.lm.losses import HeadFallbackWarning
    from quanta.lm.losses_run import run_losses

    progress = progress_bar("{task.fields[tps]}")
    progress.disable = quiet
    on_model, on_tokens = _token_bars(progress)

    with progress, one_line_warnings(HeadFallbackWarning, DuplicateCheckpointWarning):
        models = run_losses(
            suite,
            corpus,
            out_dir,
            checkpoints=checkpoints,
            revisions=revisions,
            max_docs=max_docs,
            max_len=max_len,
            windows=windows,
            bos=bos,
            text_field=text_field,
            decode_errors=decode_errors,
            dtype=dtype,
            batch_tokens=batch_tokens,
            head=head,
            device=device,
            threads=threads,
            executor=executor,
            ray_address=ray_address,
            slurm_array_parallelism=slurm_array_parallelism,
            on_model=on_model,
            on_tokens=on_tokens,
        )
    table = Table(title=f"per-token losses in {out_dir}")
    for name in ("model", "non-embedding N", "mean loss (nats)", "tokens/s", "head"):
        table.add_column(name, justify="right")
    for r in models.to_dict("records"):
        table.add_row(
            r["label"],
            f"{r['n_params']:,}",
            f"{r['mean_loss']:.4f}",
            f"{r['tokens_per_second']:,.0f}",
            str(r.get("head", "")),
        )
    out.print(table)


def _token_bars(progress: Any) -> tuple[Callable[[str, int], None], Callable[[int], None]]:
    """``run_losses``'s ``on_model`` and ``on_tokens``: one bar per model, with its tokens/s."""
    state: dict[str, Any] = {}

    def on_model(label: str, n_tokens: int) -> None:
        state["bar"] = progress.add_task(label, total=n_tokens, tps="")
        state["t0"] = time.perf_counter()
        state["done"] = 0

    def on_tokens(n: int) -> None:
        state["done"] += n
        rate = state["done"] / max(time.perf_counter() - state["t0"], 1e-9)
        progress.update(state["bar"], advance=n, tps=f"{rate:,.0f} tok/s")

    return on_model, on_tokens


@lm_app.command("analyze")
@user_errors
@writes(lambda kw: kw["out_dir"] or kw["source"] / "analysis")
def lm_analyze(
    source: Path = typer.Argument(..., help="A 'quanta lm losses' directory."),
    out_dir: Path | None = typer.Option(None, "--out", help="[default: SOURCE/analysis]"),
    fit_models: str | None = typer.Option(
        None, help="Models (positions by size, comma-separated) in the mean-loss fit [all]."
    ),
    hi: float = typer.Option(5.0, help="Monogenic: loss above this (nats) for smaller models."),
    lo: float = typer.Option(0.3, help="Monogenic: loss below this (nats) from then on."),
    poly_slope: float = typer.Option(-0.3, help="Polygenic: slope of loss vs ln N below this."),
    poly_r2: float = typer.Option(0.98, help="Polygenic: R² of that line above this."),
    bootstrap: int = typer.Option(1000, help="Bootstrap replicates for the exponent CI."),
    seed: int = typer.Option(0, help="Seed of the bootstrap and of the example picks."),
) -> None:
    """Mean loss vs N with a power-law fit, p(L) and L·p(L), monogenic/polygenic tokens with
    examples in context; writes analysis.json, Parquet tables and PNG figures."""
    from quanta.lm.curves import analyze_losses, write_lm_analysis

    chosen = None
    if fit_models:
        try:
            chosen = [int(v) for v in fit_models.split(",") if v.strip()]
        except ValueError:
            raise QuantaInputError(
                f"--fit-models takes model positions like 0,1,2; got {fit_models!r}."
            ) from None
    analysis = analyze_losses(
        source,
        fit_models=chosen,
        hi=hi,
        lo=lo,
        poly_slope=poly_slope,
        poly_r2=poly_r2,
        bootstrap=bootstrap,
        seed=seed,
    )
    written = write_lm_analysis(analysis, out_dir)
    table = Table(title=f"models by {'size' if analysis.axis == 'N' else 'step'}")
    for name in ("model", "scale", "mean loss", "tokens < 0.1 nats", "monogenic here"):
        table.add_column(name, justify="right")
    for r in analysis.models.to_dict("records"):
        table.add_row(
            r["label"],
            f"{r['scale']:,.0f}",
            f"{r['mean_loss']:.4f}",
            f"{r['frac_below_0.1']:.1%}",
            f"{r.get('frac_monogenic_here', 0.0):.2%}",
        )
    out.print(table)
    s = analysis.summary()
    fit = s["fit"]
    if fit is None:
        out.print("mean-loss fit: needs ≥ 2 distinct scales")
    elif fit["success"]:
        ci = fit["alpha_ci"]
        ci_text = f" [{ci[0]:.4f}, {ci[1]:.4f}] 95% CI" if ci else ""
        r2 = f", R² {fit['r2_loglog']:.4f} in log-log" if fit.get("r2_loglog") is not None else ""
        out.print(f"mean loss ∝ {analysis.axis}^-α: α = {fit['alpha']:.4f}{ci_text}{r2}")
    else:
        out.print(f"mean-loss fit failed: {fit['message']}")
    out.print(
        f"{s['n_tokens']:,} tokens: {s['n_monogenic']:,} monogenic, {s['n_polygenic']:,} polygenic"
    )
    out.print(f"{written[0].parent}/  ({', '.join(p.name for p in written)})")


@lm_app.command("dynamics")
@user_errors
@writes(lambda kw: kw["out_dir"] or kw["source"] / "dynamics")
def lm_dynamics(
    source: Path = typer.Argument(..., help="A 'quanta lm losses --checkpoints' directory."),
    out_dir: Path | None = typer.Option(None, "--out", help="[default: SOURCE/dynamics]"),
    model: str | None = typer.Option(
        None, help="The model analyzed along its steps [default: the largest]."
    ),
    hi: float = typer.Option(5.0, help="Abrupt: loss above this (nats) at earlier checkpoints."),
    lo: float = typer.Option(0.3, help="Abrupt: loss below this (nats) from then on."),
    gradual_slope: float = typer.Option(
        -0.3, help="Gradual: slope of loss vs ln(step) below this (nats per e-fold)."
    ),
    gradual_r2: float = typer.Option(0.98, help="Gradual: R² of that line above this."),
    bootstrap: int = typer.Option(200, help="Bootstrap replicates of the mean loss vs step fit."),
    seed: int = typer.Option(0, help="Seed of the bootstrap and of the example picks."),
) -> None:
    """Training dynamics: mean loss vs step per model; p(L), L·p(L) and per-token curves of one
    model across its checkpoints, tokens learned abruptly or gradually in time; writes
    analysis.json, Parquet tables and PNG figures."""
    from quanta.lm.dynamics import analyze_dynamics, write_dynamics

    analysis = analyze_dynamics(
        source,
        model=model,
        hi=hi,
        lo=lo,
        gradual_slope=gradual_slope,
        gradual_r2=gradual_r2,
        bootstrap=bootstrap,
        seed=seed,
    )
    written = write_dynamics(analysis, out_dir)
    s = analysis.summary()
    wide = analysis.models.pivot_table(index="step", columns="name", values="mean_loss", sort=True)[
        list(dict.fromkeys(analysis.models["name"]))
    ]
    table = Table(title="mean loss (nats) by step and model")
    table.add_column("step", justify="right")
    for name in wide.columns:
        table.add_column(str(name), justify="right")
    for step, row in wide.iterrows():
        table.add_row(f"{step:,}", *("" if v != v else f"{v:.4f}" for v in row))
    out.print(table)
    by_step = ", ".join(f"{k}: {v}" for k, v in s["abrupt_by_step"].items() if v)
    out.print(
        f"{s['model']} over {len(s['steps'])} checkpoints, {s['n_tokens']:,} tokens: "
        f"{s['n_abrupt']:,} learned abruptly"
        + (f" (by step {by_step})" if by_step else "")
        + f", {s['n_gradual']:,} gradually"
    )
    out.print(f"{written[0].parent}/  ({', '.join(p.name for p in written)})")


@lm_app.command("show")
@user_errors
def lm_show(
    source: Path = typer.Argument(..., help="A 'quanta lm losses' directory (analyzed)."),
    kind: str = typer.Option("monogenic", help="monogenic | polygenic | any."),
    n: int = typer.Option(5, help="How many tokens."),
    context: int = typer.Option(30, help="Tokens of context before each."),
    seed: int = typer.Option(0, help="Seed of the pick."),
) -> None:
    """Print tokens in context, the predicted token highlighted, with their losses by model."""
    import numpy as np
    import pandas as pd
    from rich.markup import escape

    from quanta._validation import check_choice
    from quanta.lm.curves import load_losses, token_context

    check_choice(kind, "kind", "quanta lm show", ["monogenic", "polygenic", "any"])
    tokens_file = source / "analysis" / "tokens.parquet"
    _, models, losses = load_losses(source)
    if kind != "any" and not tokens_file.exists():
        raise QuantaInputError(f"Run 'quanta lm analyze {source}' first (no {tokens_file}).")
    if kind == "any":
        rows = np.arange(losses.shape[0])
    else:
        flags = pd.read_parquet(tokens_file, columns=[kind])[kind].to_numpy()
        rows = np.flatnonzero(flags)
    if len(rows) == 0:
        out.print(f"no {kind} tokens in {source}")
        return
    pick = np.sort(np.random.default_rng(seed).choice(rows, size=min(n, len(rows)), replace=False))
    order = np.argsort(models["n_params"].to_numpy(), kind="stable")
    for r in token_context(source, pick.tolist(), context_tokens=context).to_dict("records"):
        row_losses = np.asarray(losses[r["row"]])[order]
        out.print(
            f"[dim]{escape(r['doc'])} pos {r['pos']}[/]  losses: "
            + " ".join(f"{v:.2f}" for v in row_losses)
        )
        out.print(escape(r["context"]) + f"[reverse]{escape(r['token'])}[/]", highlight=False)
        out.print()
