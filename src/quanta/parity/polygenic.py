"""``quanta parity polygenic RUN``: which combination rule the polygenic samples follow.

Reads a complete ``parity train`` run made with ``--polygenic`` > 0, pairs every polygenic
loss (split ``poly-or`` / ``poly-and``, pair ``(a, b)``) with the same member's monogenic losses
on ``a`` and ``b`` at the same step, and scores the rules of :mod:`quanta.parity.combine` on
those points over every width and step. It also predicts, from the monogenic curves alone,
the mean loss ``L(N)`` of a polygenic-heavy mixture (the evaluated pairs weighted by their
training probability, :meth:`PolygenicMix.pair_weights`) at the last step, per kind and for the
run's OR/AND mix, next to the measured one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from quanta._validation import QuantaInputError, check_int
from quanta.parity.combine import RULES, CombinationFit, fit_rules, predict
from quanta.parity.polytask import KINDS
from quanta.store import writes_outputs

__all__ = ["PolygenicAnalysis", "analyze_polygenic", "polygenic_points", "write_polygenic"]

MIXED = "mixed"  # the run's OR/AND mix, in the L(N) table


@dataclass(frozen=True)
class PolygenicAnalysis:
    """The scored rules and the L(N) table of one run.

    Attributes
    ----------
    source : Path
    config : dict — the run's resolved config.
    pairs : pandas.DataFrame — ``pair, a, b, weight``.
    points : pandas.DataFrame — :data:`quanta.parity.combine.POINT_COLUMNS` plus ``width``.
    fit : CombinationFit
    scaling : pandas.DataFrame — ``kind, width, n_params, series, loss_nats``: at the last step,
        the pair-weighted mean loss measured (``series == "measured"``) and predicted per rule.
    """

    source: Path
    config: dict[str, Any]
    pairs: pd.DataFrame
    points: pd.DataFrame
    fit: CombinationFit
    scaling: pd.DataFrame

    def summary(self) -> dict[str, Any]:
        """A JSON-ready dict: the verdicts, the scores, the pairs and the L(N) table."""
        return {
            "source": str(self.source),
            "polygenic": self.config["polygenic"],
            "polygenic_and": self.config.get("polygenic_and", 0.5),
            "rules": list(RULES),
            "verdicts": self.fit.verdicts.to_dict("records"),
            "scores": self.fit.scores.to_dict("records"),
            "pairs": self.pairs.to_dict("records"),
            "scaling": self.scaling.to_dict("records"),
        }


def _load(source: Path) -> tuple[Any, pd.DataFrame]:
    from quanta.config import build_config
    from quanta.parity.config import ParityConfig
    from quanta.store import read_result

    manifest = read_result(source, ("parity.train",), "'quanta parity train --polygenic P'")
    config = {k: v for k, v in manifest["config"].items()}
    if float(config.get("polygenic", 0.0)) == 0.0:
        raise QuantaInputError(
            f"'{source}' is a run without polygenic samples (polygenic = 0); train one with "
            "'quanta parity train --polygenic P' (P in (0, 1])."
        )
    cfg = build_config(ParityConfig, layers=[(f"the manifest of '{source}'", config)])
    return cfg, pd.read_parquet(source / "curves.parquet")


def polygenic_points(curves: pd.DataFrame, pairs: pd.DataFrame) -> pd.DataFrame:
    """Every polygenic loss next to the same member's monogenic losses on ``a`` and ``b``.

    ``curves`` is a run's curves table; ``pairs`` has ``pair, a, b``. One row per kind × pair ×
    member × step, columns :data:`quanta.parity.combine.POINT_COLUMNS` and ``width``.
    """
    test = curves[(curves["split"] == "test") & (curves["task"] >= 0)]
    mono = test.set_index(["member", "step", "task"])["loss_nats"]
    parts = []
    for kind in KINDS:
        poly = curves[curves["split"] == f"poly-{kind}"].rename(columns={"task": "pair"})
        poly = poly.merge(pairs[["pair", "a", "b"]], on="pair")
        keys = list(zip(poly["member"], poly["step"], strict=True))
        la = mono.reindex([(m, s, a) for (m, s), a in zip(keys, poly["a"], strict=True)])
        lb = mono.reindex([(m, s, b) for (m, s), b in zip(keys, poly["b"], strict=True)])
        parts.append(
            pd.DataFrame(
                {
                    "kind": kind,
                    "pair": poly["pair"].to_numpy(),
                    "member": poly["member"].to_numpy(),
                    "width": poly["width"].to_numpy(),
                    "step": poly["step"].to_numpy(),
                    "loss_a": la.to_numpy(),
                    "loss_b": lb.to_numpy(),
                    "loss_ab": poly["loss_nats"].to_numpy(),
                }
            )
        )
    return pd.concat(parts, ignore_index=True)


def _scaling(
    curves: pd.DataFrame, points: pd.DataFrame, pairs: pd.DataFrame, and_share: float
) -> pd.DataFrame:
    """Pair-weighted mean losses at the last step per member: measured and per rule."""
    last = points[points["step"] == points["step"].max()].merge(pairs[["pair", "weight"]])
    n_params = curves.groupby("member")["n_params"].first()
    rows = []
    for kind in KINDS:
        sub = last[last["kind"] == kind]
        series = {"measured": sub["loss_ab"].to_numpy()}
        for rule in RULES:
            series[rule] = predict(rule, kind, sub["loss_a"].to_numpy(), sub["loss_b"].to_numpy())
        for name, values in series.items():
            frame = sub[["member", "width"]].assign(v=values * sub["weight"].to_numpy())
            for (member, width), total in frame.groupby(["member", "width"])["v"].sum().items():
                rows.append((kind, int(member), int(width), int(n_params[member]), name, total))
    table = pd.DataFrame(
        rows, columns=["kind", "member", "width", "n_params", "series", "loss_nats"]
    )
    # The run's own mix of kinds: (1 - and_share)·OR + and_share·AND.
    wide = table.pivot_table(
        index=["member", "width", "n_params", "series"], columns="kind", values="loss_nats"
    )
    mixed = ((1 - and_share) * wide["or"] + and_share * wide["and"]).rename("loss_nats")
    mixed_rows = mixed.reset_index().assign(kind=MIXED)[table.columns]
    return pd.concat([table, mixed_rows], ignore_index=True)


def analyze_polygenic(
    source: str | Path, *, bootstrap: int = 1000, seed: int = 0
) -> PolygenicAnalysis:
    """Score the combination rules on the polygenic samples of the run at ``source``.

    ``bootstrap`` replicates over pairs (seeded by ``seed``) give the uncertainty of "by how
    much" (:func:`quanta.parity.combine.fit_rules`).
    """
    from quanta.config import config_to_dict

    bootstrap = check_int(bootstrap, "bootstrap", "quanta parity polygenic", low=1)
    source = Path(source)
    cfg, curves = _load(source)
    mix = cfg.make_polygenic()
    pairs = pd.DataFrame(mix.eval_pairs(), columns=["a", "b"]).rename_axis("pair").reset_index()
    pairs["weight"] = mix.pair_weights().numpy()
    points = polygenic_points(curves, pairs)
    if points[["loss_a", "loss_b"]].isna().any().any():
        raise QuantaInputError(
            f"'{source}/curves.parquet' lacks monogenic test losses of the evaluated pairs; "
            "run 'quanta parity train' into it again to recompute it."
        )
    fit = fit_rules(points, bootstrap=bootstrap, seed=seed)
    scaling = _scaling(curves, points, pairs, cfg.polygenic_and)
    config = config_to_dict(cfg) | {"polygenic_and": cfg.polygenic_and}
    return PolygenicAnalysis(source, config, pairs, points, fit, scaling)


@writes_outputs(lambda a: a["out"] if a["out"] is not None else a["analysis"].source / "polygenic")
def write_polygenic(analysis: PolygenicAnalysis, out: str | Path | None = None) -> list[Path]:
    """Write ``polygenic.json``, Parquet tables and ``polygenic.png`` to ``out`` (default
    ``SOURCE/polygenic``), recorded in its ``outputs.json``; returns the written paths (each
    replaced atomically)."""
    from quanta import plots
    from quanta.parity.polyplot import polygenic_figure
    from quanta.store import write_json, write_parquet

    out = Path(out) if out is not None else analysis.source / "polygenic"
    if out.exists() and not out.is_dir():
        raise QuantaInputError(f"Output path '{out}' exists and is not a directory.")
    written = [out / "polygenic.json"]
    write_json(written[0], analysis.summary())
    tables = {
        "points": analysis.points,
        "scores": analysis.fit.scores,
        "verdicts": analysis.fit.verdicts,
        "scaling": analysis.scaling,
    }
    for name, df in tables.items():
        write_parquet(out / f"{name}.parquet", df)
        written.append(out / f"{name}.parquet")
    written.append(plots.save_figure(polygenic_figure(analysis), out / "polygenic.png"))
    return written
