"""``quanta qdg compare``: the universality of quanta across QDG runs (parse → call → write)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from quanta.cli._common import int_list, out

__all__ = ["print_universality", "qdg_compare"]


def qdg_compare(
    runs: list[Path] = typer.Argument(..., help="Two or more 'quanta qdg run' directories."),
    out_dir: Path = typer.Option(Path("runs/qdg-compare"), "--out", help="Output directory."),
    ks: str | None = typer.Option(None, help="Cluster counts K, comma-separated [all common]."),
    intersect: bool = typer.Option(
        False, "--intersect", help="Compare on the tokens every run holds (e.g. across sizes)."
    ),
    threshold: float = typer.Option(0.5, help="Jaccard at which a matched cluster is found."),
    permutations: int = typer.Option(100, help="Label permutations of the null."),
    replicas: int = typer.Option(5, help="Re-clusterings of each run for its ceiling."),
    fraction: float = typer.Option(0.8, help="Share of a run's samples per ceiling replica."),
    seed: int = typer.Option(0, help="Seed of the null and the ceiling (parity: and samples)."),
    random_init: list[Path] | None = typer.Option(
        None,
        "--random-init",
        help="A 'qdg run --random-init' directory (repeatable): an untrained model on a run's "
        "tokens, the second null.",
    ),
    parity: bool = typer.Option(
        False,
        "--parity",
        help="RUNS are 'parity train' runs: two init seeds of one run (or one member of each "
        "of two runs) against each other and the true subtasks.",
    ),
    width: int = typer.Option(500, help="parity: the members nearest this width."),
    n: int = typer.Option(1000, help="parity: samples drawn from the task's Zipf mixture."),
    loss_below: float = typer.Option(0.1, help="parity: keep samples below this loss (nats)."),
    affinity: str = typer.Option("angular", help="parity: angular | relu | shift | relu_norm."),
    assign: str = typer.Option("kmeans", help="parity: kmeans | cluster_qr | discretize."),
    n_init: int = typer.Option(10, help="parity: k-means restarts."),
    device: str = typer.Option("cpu", help="parity: torch device of the gradients."),
) -> None:
    """Do QDG runs of different models on the same tokens find the same clusters? ARI, NMI
    and the share of clusters found in the other run (one-to-one on Jaccard), per K, each
    beside its null (labels permuted) and its ceiling (a run re-clustered on subsamples)."""
    from quanta._validation import QuantaInputError
    from quanta.qdg.compare import compare_runs

    if parity and random_init:
        raise QuantaInputError(
            "--random-init goes with LM runs; --parity compares parity nets with the truth."
        )
    if parity:
        _compare_parity(
            runs,
            out_dir,
            ks,
            threshold,
            permutations,
            replicas,
            fraction,
            seed,
            width=width,
            n=n,
            loss_below=loss_below,
            affinity=affinity,
            assign=assign,
            n_init=n_init,
            device=device,
        )
        return
    result = compare_runs(
        runs,
        out_dir,
        ks=None if ks is None else int_list(ks, "--ks"),
        intersect=intersect,
        threshold=threshold,
        n_permutations=permutations,
        replicas=replicas,
        fraction=fraction,
        seed=seed,
        random_init=random_init or (),
    )
    print_universality(result)
    out.print(f"{out_dir}/  (universality.json, matched_clusters.parquet)")


def _compare_parity(
    runs: list[Path],
    out_dir: Path,
    ks: str | None,
    threshold: float,
    permutations: int,
    replicas: int,
    fraction: float,
    seed: int,
    **qdg: Any,
) -> None:
    """``--parity``: two parity nets against each other and the true subtasks."""
    from quanta.qdg.compare_toy import ToyOptions, parity_universality, write_parity_universality

    options = ToyOptions(
        width=qdg["width"],
        n_samples=qdg["n"],
        threshold=qdg["loss_below"],
        ks=int_list(ks or "10,20,50", "--ks"),
        transform=qdg["affinity"],
        assign=qdg["assign"],
        n_init=qdg["n_init"],
        jaccard=threshold,
        n_permutations=permutations,
        replicas=replicas,
        fraction=fraction,
        device=qdg["device"],
        seed=seed,
    )
    result = parity_universality(runs, options)
    write_parity_universality(result, out_dir)
    print_universality(result)
    out.print(f"{out_dir}/  (universality.json)")


def _cell(
    observed: float, null: dict[str, float], ceiling: float | None, init: float | None
) -> str:
    top = "-" if ceiling is None else f"{ceiling:.2f}"
    spread = f"[{null['low']:.2f}, {null['high']:.2f}]"
    untrained = "" if init is None else f", init {init:.2f}"
    return f"{observed:.2f} (null {null['mean']:.2f} {spread}{untrained}, ceil {top})"


def print_universality(result: dict[str, Any]) -> None:
    """One table per pair of runs: per K, each metric beside its null (permutation; and
    random-init, ``init``, where given) and ceiling."""
    names = {
        r["path"]: r["model"] if r["model"] == r["path"] else f"{r['model']} ({r['path']})"
        for r in result["runs"]
    }
    for pair in result["pairs"]:
        table = Table(
            title=f"{names[pair['a']]} vs {names[pair['b']]} on "
            f"{result['n_tokens']} tokens; found = Jaccard ≥ {result['threshold_jaccard']:g}"
        )
        for name in ("K", "ARI", "NMI", "found of a", "found of b"):
            table.add_column(name, justify="right")
        for row in pair["per_k"]:
            ceiling, init = row["ceiling"] or {}, row.get("random_init") or {}
            table.add_row(
                str(row["K"]),
                *(
                    _cell(row["observed"][m], row["null"][m], ceiling.get(m), init.get(m))
                    for m in ("ari", "nmi", "share_a", "share_b")
                ),
            )
        out.print(table)
