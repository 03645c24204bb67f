"""``quanta qdg …``: quanta discovery from gradients (parse → call → write)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from quanta._validation import QuantaInputError
from quanta.cli._common import (
    WAIT_OPT,
    int_list,
    one_line_warnings,
    out,
    progress_bar,
    user_errors,
    writes,
)
from quanta.cli.qdg_compare import qdg_compare

__all__ = ["qdg_app"]

qdg_app = typer.Typer(
    no_args_is_help=True, rich_markup_mode=None, help="QDG: quanta discovery from gradients."
)
qdg_app.command("compare")(user_errors(writes("out_dir")(qdg_compare)))


@qdg_app.command("run")
@user_errors
@writes("out_dir")
def qdg_run(
    losses: Path = typer.Argument(..., help="A 'quanta lm losses' directory."),
    out_dir: Path = typer.Option(Path("runs/qdg"), "--out", help="Output directory."),
    model: str | None = typer.Option(
        None,
        help="A model label or name, or an index by size: 0 = smallest (the paper's), "
        "-1 = largest [0].",
    ),
    models: str | None = typer.Option(
        None,
        help="Several models (comma-separated labels, names or indices): one QDG run "
        "directory each, OUT/<label>, one task each on --executor (not with --model).",
    ),
    executor: str = typer.Option(
        "local",
        help="--models: where each model's task runs: local | ray | slurm | submitit-local.",
    ),
    ray_address: str | None = typer.Option(
        None, help="--executor ray: HOST:PORT of a running Ray cluster."
    ),
    threads: int | None = typer.Option(
        None, help="--models: torch threads (and CPUs requested) per task [torch's; 1 remote]."
    ),
    slurm_array_parallelism: int | None = typer.Option(
        None, help="slurm: at most this many jobs of the array at once."
    ),
    threshold: str = typer.Option(
        "0.1",
        help="Select tokens with loss below this (nats; 0.1 is the paper's), or 'auto': 0.1 if "
        "at least --min-samples tokens pass it, else the smallest threshold that yields them "
        "(recorded).",
    ),
    min_samples: int | None = typer.Option(
        None, help="Fewest samples a run accepts; fewer passing is refused [--n]."
    ),
    induction: bool = typer.Option(True, help="Drop tokens predictable by induction."),
    n: int = typer.Option(2000, help="Number of samples (at most)."),
    every: int | None = typer.Option(None, help="Keep every k-th eligible token [seeded random]."),
    similarity: str = typer.Option(
        "sketch",
        help="sketch: cosines of the gradients' CountSketch projections (--projection-dim), "
        "stored in grads.npy | exact: the exact Gram matrix accumulated over blocks of "
        "--block-params parameters, no gradients stored, each recomputed once per block "
        "(the paper's).",
    ),
    projection_dim: int = typer.Option(
        8192, help="sketch: CountSketch size; 0 = the exact rows, stored (n × dim float32)."
    ),
    block_params: int | None = typer.Option(
        None,
        help="exact: parameters per block; the gradients are recomputed ⌈dim / block⌉ times "
        "[the most whose float32 rows take 4 GiB: 4 GiB / (4 · n)].",
    ),
    param_filter: str | None = typer.Option(
        None, help="Regex of parameter names [all but embeddings, unembedding, layer norms]."
    ),
    affinity: str = typer.Option(
        "angular", help="angular (the paper's) | relu | shift | relu_norm."
    ),
    center: bool = typer.Option(False, "--center", help="Subtract the mean gradient first."),
    knn: int = typer.Option(
        0, help="Sparse affinity over this many nearest neighbours (for 50k+ samples); 0 = dense."
    ),
    ks: str = typer.Option("10,20,50,100,200", help="Cluster counts K, comma-separated."),
    assign: str = typer.Option("cluster_qr", help="cluster_qr | kmeans | discretize."),
    n_init: int = typer.Option(
        10, help="kmeans: restarts per K (the paper: 30; scikit-learn's default 10)."
    ),
    alpha_n: float | None = typer.Option(
        None, help="Mean-loss exponent for the predicted Zipf exponent [from lm analyze]."
    ),
    seed: int = typer.Option(0, help="Seed of selection, projection and clustering."),
    head: str = typer.Option(
        "auto",
        help="Loss whose gradients are taken, as for 'lm losses': auto (the output head on the "
        "last hidden state if it matches the model's own logits, else the model's own forward, "
        "with a warning) | chunked (or fail) | full. The path taken is in grads.json.",
    ),
    random_init: int | None = typer.Option(
        None,
        help="Gradients of an untrained model of --model's architecture (weights drawn with this "
        "seed) on the tokens the trained one selects: the null of 'qdg compare --random-init'.",
    ),
    device: str = typer.Option(
        "cpu", help="Where the model runs and its gradients are taken: cpu | cuda | cuda:1 | …"
    ),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
    wait: bool = WAIT_OPT,
) -> None:
    """Select confident tokens, take their gradients, cluster them for every K and fit the
    Zipf law of cluster sizes."""
    k_list = int_list(ks, "--ks")
    cut = _threshold(threshold)
    if projection_dim < 0:
        raise QuantaInputError(f"--projection-dim must be ≥ 0 (0 = exact); got {projection_dim}.")
    options: dict[str, Any] = {
        "threshold": cut,
        "min_samples": min_samples,
        "induction": induction,
        "n": n,
        "every": every,
        "similarity": similarity,
        "projection_dim": projection_dim or None,
        "block_params": block_params,
        "param_filter": param_filter,
        "transform": affinity,
        "center": center,
        "knn": knn,
        "ks": k_list,
        "assign": assign,
        "n_init": n_init,
        "alpha_n": alpha_n,
        "seed": seed,
        "head": head,
        "random_init": random_init,
    }
    where = {
        "executor": executor,
        "ray_address": ray_address,
        "threads": threads,
        "slurm_array_parallelism": slurm_array_parallelism,
        "device": device,
    }
    if models is not None:
        if model is not None:
            raise QuantaInputError("--models and --model exclude each other; pass one.")
        many = [m.strip() for m in models.split(",") if m.strip()]
        _run_many(losses, out_dir, many, where, quiet, options)
        return
    if (executor, ray_address, threads, slurm_array_parallelism) != ("local", None, None, None):
        raise QuantaInputError(
            "--executor, --ray-address, --threads and --slurm-array-parallelism go with --models."
        )
    result = _run_one(losses, out_dir, "0" if model is None else model, device, quiet, options)
    _print_run(result)
    _print_parameters(out_dir / "grads.json")
    stored = "gram.npy" if similarity == "exact" else "grads.npy"
    out.print(f"{out_dir}/  (samples, {stored}, labels, clusters, rank_frequency, zipf.json, png)")


def _grouped(names: list[str]) -> str:
    """Parameter names with layer indices folded: ``h.*.mlp.c_fc.weight ×2, …``."""
    import re
    from collections import Counter

    counts = Counter(re.sub(r"\.\d+\.", ".*.", name) for name in names)
    return ", ".join(f"{n} ×{c}" if c > 1 else n for n, c in counts.items())


def _print_parameters(grads_json: Path) -> None:
    """Which parameters' gradients were taken, which were left out and why, and the head."""
    import json

    info = json.loads(grads_json.read_text())
    out.print(
        f"gradients: {len(info['params'])} parameter tensors ({info['dim']:,} coordinates), "
        f"loss by the {info.get('head', 'chunked')} head: {_grouped(info['params'])}",
        soft_wrap=True,  # long lists: the terminal wraps them, names stay whole
    )
    by_kind: dict[str, list[str]] = {}
    for name, why in info.get("excluded", {}).items():
        by_kind.setdefault(why, []).append(name)
    for why, names in by_kind.items():
        out.print(f"excluded ({why}): {_grouped(names)}", soft_wrap=True)


def _threshold(text: str) -> float | str:
    """``--threshold``: nats, or ``auto``."""
    try:
        return "auto" if text.strip() == "auto" else float(text)
    except ValueError:
        raise QuantaInputError(
            f"--threshold takes nats (a number > 0) or 'auto'; got {text!r}."
        ) from None


def _run_one(
    losses: Path, out_dir: Path, model: str, device: str, quiet: bool, options: dict[str, Any]
) -> dict[str, Any]:
    """``qdg run``: one model, a progress bar over its backward passes."""
    from quanta.lm.losses import HeadFallbackWarning
    from quanta.qdg.run import run_qdg

    progress = progress_bar()
    progress.disable = quiet
    bar = progress.add_task("gradients", total=None)

    def on_gradients(done: int, total: int) -> None:  # shown once work starts: not on refusal
        progress.start()
        progress.update(bar, completed=done, total=total)

    try:
        with one_line_warnings(HeadFallbackWarning):
            return run_qdg(
                losses, out_dir, model=model, **options, device=device, progress=on_gradients
            )
    finally:
        progress.stop()


def _print_run(result: dict[str, Any]) -> None:
    """The Zipf fits of one QDG run, its selection and the quantization model's prediction."""
    info = result["model_info"]
    table = Table(
        title=f"QDG on {result['n_samples']} tokens of {info['label']} "
        f"(N = {info['n_params']:,}; model {info['size_index']} of {info['n_models']} by size)"
    )
    for name in ("K", "Zipf exponent (MLE)", "95% CI", "bias-corrected"):
        table.add_column(name, justify="right")
    for k, fit in result["zipf"].items():
        ok = fit["exponent"] is not None
        ci = fit["ci"]
        table.add_row(
            k,
            f"{fit['exponent']:.3f}" if ok else fit["message"],
            f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "-",
            f"{fit['exponent_corrected']:.3f}" if fit.get("exponent_corrected") else "-",
        )
    out.print(table)
    out.print(f"selection: {result['selection']['reason']}")
    if result.get("predicted_exponent") is not None:
        out.print(
            f"predicted by the quantization model: 1 + α_N = {result['predicted_exponent']:.3f} "
            f"(α_N = {result['alpha_n']:.4f} from the mean-loss fit)"
        )
    if result["envelope_slope"] is not None:
        lo, hi = result["envelope_ranks"]
        out.print(
            f"envelope log-log slope over ranks {lo}–{hi} (the paper's): "
            f"{result['envelope_slope']:.3f}"
        )


def _run_many(
    losses: Path,
    out_dir: Path,
    models: list[str],
    where: dict[str, Any],
    quiet: bool,
    options: dict[str, Any],
) -> None:
    """``qdg run --models``: one run directory per model, a table of their Zipf fits."""
    from quanta.qdg.multi import model_dir_name, run_qdg_models

    progress = progress_bar()
    progress.disable = quiet
    bar = progress.add_task("models", total=len(models))

    def on_done(label: str, result: dict[str, Any]) -> None:  # not on refusal: nothing runs
        progress.start()
        progress.advance(bar)

    try:
        results = run_qdg_models(losses, out_dir, list(models), **where, on_done=on_done, **options)
    finally:
        progress.stop()
    table = Table(title=f"QDG on {len(results)} models ({where['executor']})")
    for name in ("model", "N", "samples", "largest K", "Zipf exponent (MLE)", "envelope"):
        table.add_column(name, justify="right")
    for label, result in results.items():
        k, fit = list(result["zipf"].items())[-1]
        env = result["envelope_slope"]
        table.add_row(
            label,
            f"{result['model_info']['n_params']:,}",
            str(result["n_samples"]),
            k,
            f"{fit['exponent']:.3f}" if fit["exponent"] is not None else fit["message"],
            "-" if env is None else f"{env:.3f}",
        )
    out.print(table)
    names = ", ".join(model_dir_name(label) for label in results)
    out.print(f"{out_dir}/  ({names}: one 'qdg run' directory each)")


@qdg_app.command("validate")
@user_errors
@writes("out_dir")
def qdg_validate(
    source: str = typer.Option("toy", help="toy (appendix-D vectors) | parity (a trained MLP)."),
    out_dir: Path = typer.Option(Path("runs/qdg-validate"), "--out", help="Output directory."),
    samples: int = typer.Option(3000, help="toy: number of samples."),
    subtasks: int = typer.Option(100, help="toy: number of subtasks (Zipf frequencies)."),
    alpha: float = typer.Option(0.5, help="toy: Zipf α of the subtask frequencies."),
    dims: str = typer.Option("1000", help="toy: dimensions d, comma-separated (a sweep)."),
    sigmas: str = typer.Option("2.0", help="toy: noise σ, comma-separated (a sweep)."),
    parity_samples: int = typer.Option(600, help="parity: samples from the Zipf mixture."),
    center: bool = typer.Option(False, "--center", help="Subtract the mean vector first."),
    seed: int = typer.Option(0, help="Seed."),
) -> None:
    """Planted truth: cluster samples whose true quantum is known and score every affinity ×
    label assigner (ARI, NMI, purity; recovered vs true Zipf exponent)."""
    from quanta._validation import check_choice
    from quanta.qdg.validate import planted_truth, write_planted_truth

    check_choice(source, "source", "quanta qdg validate", ["toy", "parity"])  # before --dims
    try:
        d_list = [int(v) for v in dims.split(",") if v.strip()]
        s_list = [float(v) for v in sigmas.split(",") if v.strip()]
    except ValueError:
        raise QuantaInputError(
            f"--dims / --sigmas take numbers; got {dims!r}, {sigmas!r}."
        ) from None
    table = planted_truth(
        source,
        samples=samples,
        subtasks=subtasks,
        alpha=alpha,
        dims=d_list,
        sigmas=s_list,
        parity_samples=parity_samples,
        center=center,
        seed=seed,
    )
    write_planted_truth(table, out_dir)
    view = Table(title=f"QDG on planted truth ({source})")
    cols = [c for c in ("d", "sigma") if c in table] + [
        "affinity",
        "assign",
        "K",
        "ari",
        "nmi",
        "purity",
        "zipf_recovered",
        "zipf_true",
    ]
    for c in cols:
        view.add_column(c, justify="right")
    for r in table[cols].to_dict("records"):
        view.add_row(*(f"{v:.3f}" if isinstance(v, float) else str(v) for v in r.values()))
    out.print(view)
    mean = table.groupby(["affinity", "assign"])["ari"].mean().sort_values(ascending=False)
    aff, how = mean.index[0]
    out.print(
        f"best on average: {aff} + {how} (mean ARI {float(mean.iloc[0]):.3f}); "
        f"{out_dir / 'validate.parquet'}"
    )


@qdg_app.command("report")
@user_errors
@writes("qdg_dir")
def qdg_report(
    qdg_dir: Path = typer.Argument(..., help="A 'quanta qdg run' directory."),
    k: int | None = typer.Option(None, "--k", help="Which K [the largest clustered]."),
    per_cluster: int = typer.Option(20, help="Samples shown per cluster."),
) -> None:
    """Write a self-contained HTML page to browse the clusters of one K (offline)."""
    from quanta.qdg.browser import write_browser

    out.print(str(write_browser(qdg_dir, k=k, per_cluster=per_cluster)))


@qdg_app.command("export")
@user_errors
@writes(lambda kw: kw["out_dir"] or kw["qdg_dir"] / "export")
def qdg_export(
    qdg_dir: Path = typer.Argument(..., help="A 'quanta qdg run' directory."),
    format: str = typer.Option(
        ...,
        "--format",
        help="feature-circuits (saprmarks/feature-circuits cluster JSON: {cluster: {id: "
        "{context: [tokens], answer}}}) | parquet (one row per sample × K, with token text).",
    ),
    ks: str | None = typer.Option(None, "--ks", help="Only these K, comma-separated [all]."),
    out_dir: Path | None = typer.Option(
        None, "--out", help="Folder [default: QDG_DIR/export, QDG_DIR/export/feature-circuits]."
    ),
    context: int = typer.Option(40, help="Tokens of context before each predicted token."),
) -> None:
    """Write the clusters in a format other tools read."""
    from quanta.qdg.export import export_clusters

    written = export_clusters(
        qdg_dir,
        format=format,
        ks=list(int_list(ks, "--ks")) if ks is not None else None,
        out=out_dir,
        context_tokens=context,
    )
    out.print(f"{len(written)} file(s) in {written[0].parent}/")


@qdg_app.command("scale")
@user_errors
@writes(lambda kw: kw["out_dir"] or kw["qdg_dir"] / "scale")
def qdg_scale(
    qdg_dir: Path = typer.Argument(..., help="A 'quanta qdg run' directory."),
    losses: Path = typer.Option(
        ..., help="A 'quanta lm losses' directory with the QDG run's model (sizes, checkpoints)."
    ),
    k: int | None = typer.Option(None, "--k", help="Which K [the largest clustered]."),
    threshold: float | None = typer.Option(
        None, help="Absolute 'learned' threshold in nats [halfway in log-loss, per cluster]."
    ),
    min_drop: float = typer.Option(0.1, help="Clusters falling less (nats) are 'no drop'."),
    bootstrap: int = typer.Option(1000, help="Bootstrap resamples of clusters for the CIs."),
    seed: int = typer.Option(0, help="Seed of the bootstrap."),
    toy: Path | None = typer.Option(
        None, help="A 'parity analyze' output: its convergence-vs-p_i slope is shown beside."
    ),
    out_dir: Path | None = typer.Option(None, "--out", help="Output directory [QDG_DIR/scale]."),
) -> None:
    """Quanta across scale: each cluster's mean loss for every model size (and checkpoint),
    the scale at which it is learned, and the log-log slope of that scale vs its rank."""
    from quanta.qdg.scale import cluster_scaling, write_cluster_scaling

    result = cluster_scaling(
        qdg_dir,
        losses,
        k=k,
        threshold=threshold,
        min_drop=min_drop,
        bootstrap=bootstrap,
        seed=seed,
        toy=toy,
    )
    target = out_dir if out_dir is not None else qdg_dir / "scale"
    write_cluster_scaling(result, target)
    s = result.summary
    table = Table(
        title=f"Quanta across scale: {s['n_clusters']} clusters (K = {s['K']}) of "
        f"{s['n_samples']} tokens of {s['qdg_model']}"
    )
    cols = ["scale", "vs", "slope", "95% CI", "predicted", "fitted", "censored (first/never/flat)"]
    for name in cols:
        table.add_column(name, justify="right")
    for r in result.slopes.to_dict("records"):
        ok = r["slope"] == r["slope"]
        table.add_row(
            r["group"],
            r["versus"],
            f"{r['slope']:.3f}" if ok else r["message"],
            f"[{r['ci_low']:.3f}, {r['ci_high']:.3f}]" if r["ci_low"] == r["ci_low"] else "-",
            f"{r['predicted']:.3f}" if r["predicted"] == r["predicted"] else "-",
            str(r["n_points"]),
            f"{r['n_at_first']}/{r['n_never']}/{r['n_no_drop']}",
        )
    out.print(table)
    for t in s["toy"] or []:
        out.print(
            f"toy world ({t['group']}): convergence step vs p_i slope {t['slope']:.3f} "
            f"[{t['ci_low']:.3f}, {t['ci_high']:.3f}], predicted {t['predicted']:g}"
        )
    if toy is not None and not s["toy"]:
        out.print(f"note: no toy convergence slope in '{toy}' (run 'quanta parity analyze')")
    out.print(f"{target}/  (scale.json, curves, learned, slopes .parquet, curves_*/learned_*.png)")


@qdg_app.command("parity")
@user_errors
@writes("out_dir")
def qdg_parity(
    run_dir: Path = typer.Argument(..., help="A finished 'quanta parity train' run."),
    out_dir: Path = typer.Option(Path("runs/qdg-parity"), "--out", help="Output directory."),
    width: int = typer.Option(500, help="Use the member nearest this width (the paper: 500)."),
    n: int = typer.Option(1000, help="Samples drawn from the task's Zipf mixture."),
    threshold: float = typer.Option(0.1, help="Keep samples with loss below this (nats)."),
    ks: str = typer.Option("10,20,50,100", help="Cluster counts K, comma-separated."),
    affinity: str = typer.Option(
        "angular", help="angular (the paper's) | relu | shift | relu_norm."
    ),
    assign: str = typer.Option("kmeans", help="kmeans (the paper's) | cluster_qr | discretize."),
    n_init: int = typer.Option(10, help="k-means restarts (the paper: 30)."),
    device: str = typer.Option("cpu", help="Torch device of the gradients: cpu | cuda[:i]."),
    seed: int = typer.Option(0, help="Seed of the samples and the clustering."),
) -> None:
    """Appendix D.1: QDG on a trained sparse-parity net, clusters vs the true subtasks
    (rank-frequency of both, ARI/NMI/purity per K)."""
    from quanta.qdg.toyqdg import parity_qdg, write_parity_qdg

    result = parity_qdg(
        run_dir,
        width=width,
        n_samples=n,
        threshold=threshold,
        ks=int_list(ks, "--ks"),
        transform=affinity,
        assign=assign,
        n_init=n_init,
        device=device,
        seed=seed,
    )
    written = write_parity_qdg(result, out_dir)
    s = result.settings
    table = Table(
        title=f"QDG on member width {s['width']} of '{run_dir}': {s['n_selected']} of "
        f"{s['n_drawn']} samples below {s['threshold_nats']:g} nats, "
        f"{s['n_subtasks_present']} subtasks present"
    )
    for name in ("K", "ARI", "NMI", "purity", "Zipf recovered", "Zipf of true counts"):
        table.add_column(name, justify="right")
    for r in result.scores.to_dict("records"):
        zr, zt = r["zipf_recovered"], r["zipf_true"]
        table.add_row(
            str(r["K"]),
            f"{r['ari']:.3f}",
            f"{r['nmi']:.3f}",
            f"{r['purity']:.3f}",
            "-" if zr is None else f"{zr:.3f}",
            "-" if zt is None else f"{zt:.3f}",
        )
    out.print(table)
    out.print(f"{out_dir}/  ({', '.join(p.name for p in written)})")


@qdg_app.command("envelope")
@user_errors
@writes("out_dir")
def qdg_envelope(
    out_dir: Path = typer.Option(Path("runs/qdg-envelope"), "--out", help="Output directory."),
    samples: int = typer.Option(2000, help="Planted samples."),
    subtasks: int = typer.Option(200, help="Planted quanta (Zipf frequencies)."),
    alpha: float = typer.Option(0.5, help="Planted Zipf α: sizes ∝ rank^-(α+1)."),
    d: int = typer.Option(1000, help="Dimension of the vectors."),
    sigma: float = typer.Option(2.0, help="Noise-to-signal norm ratio."),
    ks: str = typer.Option("10,20,30,50,75,100,150,200", help="Cluster counts K."),
    affinities: str = typer.Option("angular,relu_norm", help="Affinities, comma-separated."),
    assign: str = typer.Option("kmeans", help="kmeans (the paper's) | cluster_qr | discretize."),
    n_init: int = typer.Option(10, help="k-means restarts (the paper: 30)."),
    ranks: str = typer.Option("11,200", help="Rank window of the OLS fit, LOW,HIGH."),
    seed: int = typer.Option(0, help="Seed of the planted samples and the clustering."),
) -> None:
    """Appendix D.2: how far the envelope slope (the paper's Zipf estimate) departs from a
    planted exponent, as K grows, for each affinity."""
    from quanta.qdg.envelope import envelope_bias, write_envelope_bias

    window = int_list(ranks, "--ranks")
    if len(window) != 2:
        raise QuantaInputError(f"--ranks takes LOW,HIGH like 11,200; got {ranks!r}.")
    result = envelope_bias(
        n_samples=samples,
        n_subtasks=subtasks,
        d=d,
        sigma=sigma,
        alpha=alpha,
        ks=int_list(ks, "--ks"),
        transforms=tuple(a.strip() for a in affinities.split(",") if a.strip()),
        assign=assign,
        n_init=n_init,
        ranks=(window[0], window[1]),
        seed=seed,
    )
    written = write_envelope_bias(result, out_dir)
    s = result.settings
    table = Table(
        title=f"Envelope slope vs planted −(α+1) = {s['true_slope']:.3f} ({s['n_samples']} "
        f"samples, {s['n_subtasks_present']} quanta present, d = {s['d']}, σ = {s['sigma']:g})"
    )
    for name in ("affinity", "K_max", "ranks", "envelope", "single K", "true sizes", "bias"):
        table.add_column(name, justify="right")
    for r in result.slopes.to_dict("records"):
        table.add_row(
            r["affinity"],
            str(r["K_max"]),
            f"{r['rank_low']}–{r['rank_high']}",
            f"{r['envelope_slope']:.3f}",
            f"{r['single_slope']:.3f}",
            f"{r['truth_window_slope']:.3f}",
            f"{r['bias']:+.3f}",
        )
    out.print(table)
    out.print(f"{out_dir}/  ({', '.join(p.name for p in written)})")
