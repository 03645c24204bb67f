"""``quanta theory``: simulate the quantization model (parse → call → write)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from quanta._validation import QuantaInputError
from quanta.cli._common import out, user_errors, writes

__all__ = ["theory_app"]

# Merged into the root app (no group name): ``quanta theory``.
theory_app = typer.Typer(rich_markup_mode=None)


@theory_app.command("theory")
@user_errors
@writes("out_dir")
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
    from quanta.theory import theory_table, write_theory

    try:
        alphas = [float(a) for a in alpha.split(",") if a.strip()]
    except ValueError:
        raise QuantaInputError(f"--alpha takes numbers like 0.2,0.4; got {alpha!r}.") from None
    if not alphas:
        raise QuantaInputError("--alpha needs at least one value, e.g. --alpha 0.4.")
    curves, exps = theory_table(
        alphas, n_quanta=n_quanta, tau=tau, batch_size=batch_size, seeds=seeds, seed=seed
    )
    settings = {"n_quanta": n_quanta, "tau": tau, "batch_size": batch_size, "seeds": seeds}
    write_theory(curves, exps, {**settings, "seed": seed}, out_dir)
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
