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
    seed: int = typer.Option(0, help="Seed of the null and the ceiling."),
) -> None:
    """Do QDG runs of different models on the same tokens find the same clusters? ARI, NMI
    and the share of clusters found in the other run (one-to-one on Jaccard), per K, each
    beside its null (labels permuted) and its ceiling (a run re-clustered on subsamples)."""
    from quanta.qdg.compare import compare_runs

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
    )
    print_universality(result)
    out.print(f"{out_dir}/  (universality.json, matched_clusters.parquet)")


def _cell(observed: float, null: dict[str, float], ceiling: float | None) -> str:
    top = "-" if ceiling is None else f"{ceiling:.2f}"
    spread = f"[{null['low']:.2f}, {null['high']:.2f}]"
    return f"{observed:.2f} (null {null['mean']:.2f} {spread}, ceil {top})"


def print_universality(result: dict[str, Any]) -> None:
    """One table per pair of runs: per K, each metric beside its null and ceiling."""
    names = {r["path"]: r["model"] for r in result["runs"]}
    for pair in result["pairs"]:
        table = Table(
            title=f"{names[pair['a']]} ({pair['a']}) vs {names[pair['b']]} ({pair['b']}) on "
            f"{result['n_tokens']} tokens; found = Jaccard ≥ {result['threshold_jaccard']:g}"
        )
        for name in ("K", "ARI", "NMI", "found of a", "found of b"):
            table.add_column(name, justify="right")
        for row in pair["per_k"]:
            ceiling = row["ceiling"] or {}
            table.add_row(
                str(row["K"]),
                *(
                    _cell(row["observed"][m], row["null"][m], ceiling.get(m))
                    for m in ("ari", "nmi", "share_a", "share_b")
                ),
            )
        out.print(table)
