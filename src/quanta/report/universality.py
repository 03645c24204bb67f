"""Testing the hypothesis, test 1: universality of quanta (qdg-universality,
qdg-universality-toy). Do models of other sizes, init seeds or data orders find the clusters QDG
found, on the same tokens? Per comparison and K: ARI, NMI and the share of each side's clusters
found in the other, each beside its permutation null, its random-init null (an untrained model
of the same architecture on the same tokens, where the stage ran one) and its ceiling (one model
clustered twice); a figure of ARI vs K; the best-matched clusters with their descriptions; and a
reading computed from those numbers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from quanta.report import toolkit as tk
from quanta.report.context import RunContext

__all__ = ["universality", "universality_reading"]

_FIGURE = "figures/universality.png"
_LM, _TOY = "qdg-universality", "qdg-universality-toy"


@dataclass(frozen=True)
class _Comparison:
    """One comparison of the stages: its name, its ``universality.json`` directory, which of
    the file's pairs it is, its stage, and what is compared."""

    name: str
    where: str
    pair: int
    stage: str
    what: str


_COMPARISONS = (
    _Comparison("sizes", "qdg/universality", 0, _LM, "the second-largest vs the largest model"),
    _Comparison("seeds", "qdg/universality/seeds", 0, _LM, "init seed 0 vs 1, same data order"),
    _Comparison(
        "data order", "qdg/universality/data-order", 0, _LM, "data order 0 vs 1, same init"
    ),
    _Comparison("toy seeds", "qdg/universality-toy", 0, _TOY, "parity net, init seed 0 vs 1"),
    _Comparison("toy vs truth", "qdg/universality-toy", 1, _TOY, "parity net vs true subtasks"),
)


def universality(ctx: RunContext) -> tk.Section:
    title = "Test 1: universality of quanta"
    return tk.Section(title, _blocks(ctx), "universality", level=3, nav="universality")


def _loaded(ctx: RunContext) -> list[tuple[_Comparison, dict[str, Any], dict[str, Any]]]:
    """The comparisons whose file is there: ``(comparison, file, pair)``."""
    found = []
    for c in _COMPARISONS:
        data = ctx.json(f"{c.where}/universality.json")
        if data is not None and len(data.get("pairs", [])) > c.pair:
            found.append((c, data, data["pairs"][c.pair]))
    return found


def _blocks(ctx: RunContext) -> list[str]:
    from quanta import plots
    from quanta.qdg.compare_plots import universality_figure

    misses = [m for m in (ctx.missing(s) for s in (_LM, _TOY)) if m]
    loaded = _loaded(ctx)
    if not loaded:
        return [_intro(), *(misses or [tk.unreadable("qdg/universality/universality.json")])]
    panels = [(f"{c.name}: {c.what}", pair["per_k"]) for c, _, pair in loaded]
    plots.save_figure(universality_figure(panels), ctx.out / _FIGURE)
    readings = [universality_reading(c.name, p["per_k"]) for c, _, p in loaded]
    dirs = sorted({c.where for c, _, _ in loaded if (ctx.out / c.where / "manifest.json").exists()})
    return [
        _intro(),
        *misses,
        ctx.figure(
            _FIGURE, "ARI vs K: measured, permutation null (band: 95%), random-init null, ceiling"
        ),
        _table(loaded),
        tk.para(tk.bold("Reading:")),
        tk.bullets(readings),
        *_matched(ctx, loaded),
        ctx.provenance([_LM, _TOY], dirs),
    ]


def _intro() -> tk.Html:
    return tk.para(
        "The hypothesis says quanta are universal: any model trained on the same data should "
        "break the task into the same pieces. QDG clusters each model's per-token gradients; "
        "two models are compared on the tokens both selected, per K, by the adjusted Rand index "
        "(ARI), normalized mutual information (NMI) and the share of each side's clusters found "
        "in the other (matched one-to-one, Jaccard ≥ 0.5). Each number is read against its ",
        tk.bold("permutation null"),
        " (one side's labels shuffled, sizes kept: chance), its ",
        tk.bold("random-init null"),
        " (an untrained model of the same architecture on the same tokens: what the tokens and "
        "the architecture give before any learning) and its ",
        tk.bold("ceiling"),
        " (each model re-clustered on 80% subsamples: how well one model agrees with itself). "
        "Cells read: measured (permutation null / random-init null / ceiling); “of the way” "
        "places the ARI between a null (0) and the ceiling (1).",
    )


def _cell(row: dict[str, Any], metric: str) -> str:
    init, ceiling = row.get("random_init"), row.get("ceiling")
    parts = [
        tk.num(row["null"][metric]["mean"], 2),
        "–" if init is None else tk.num(init[metric], 2),
        "–" if ceiling is None else tk.num(ceiling[metric], 2),
    ]
    return f"{tk.num(row['observed'][metric], 2)} ({' / '.join(parts)})"


def _way(row: dict[str, Any], key: str) -> str:
    value = (row.get(key) or {}).get("ari")
    return "–" if value is None else f"{value:.0%}"


def _table(loaded: list[tuple[_Comparison, dict[str, Any], dict[str, Any]]]) -> tk.Html:
    header = [
        "comparison",
        "K",
        "tokens",
        "ARI",
        "NMI",
        "found of a",
        "found of b",
        "of the way (perm. / init)",
    ]
    rows = [
        [
            c.name,
            str(row["K"]),
            f"{data['n_tokens']:,}",
            *(_cell(row, m) for m in ("ari", "nmi", "share_a", "share_b")),
            f"{_way(row, 'normalized')} / {_way(row, 'normalized_init')}",
        ]
        for c, data, pair in loaded
        for row in pair["per_k"]
    ]
    return tk.table(header, rows, range(1, 8))


def universality_reading(name: str, per_k: list[dict[str, Any]]) -> str:
    """One honest sentence on one comparison's ARI over K: against the permutation null's 95%
    range, the random-init null and the ceiling (the stricter null decides the verdict).

    >>> row = {"K": 10, "observed": {"ari": 0.5}, "null": {"ari": {"mean": 0.0, "high": 0.01}},
    ...        "ceiling": {"ari": 0.8}, "normalized": {"ari": 0.625},
    ...        "random_init": {"ari": 0.2}, "normalized_init": {"ari": 0.5}}
    >>> text = universality_reading("seeds", [row])
    >>> "62% of the way from it to the ceiling" in text, "gives 0.20, 50% of the way" in text
    (True, True)
    >>> text.split(" — ")[1].split(":")[0]
    'partly shared'
    """
    ari = [r["observed"]["ari"] for r in per_k]
    ks = [r["K"] for r in per_k]
    span = (
        f"{min(ari):.2f}–{max(ari):.2f} over K = {ks[0]}–{ks[-1]}"
        if len(ks) > 1
        else (f"{ari[0]:.2f} at K = {ks[0]}")
    )
    inside = sum(r["observed"]["ari"] <= r["null"]["ari"]["high"] for r in per_k)
    text = f"{name}: ARI {span}, "
    if inside:
        return text + (
            f"inside the permutation null’s 95% range at {inside} of {len(per_k)} K: no "
            "agreement beyond chance there."
        )
    text += "above the permutation null’s 95% range at every K"
    way = _mean([(r.get("normalized") or {}).get("ari") for r in per_k])
    text += _way_text(way, "from it to the ceiling")
    init = [r["random_init"]["ari"] for r in per_k if r.get("random_init")]
    if init:
        below = sum(r["observed"]["ari"] <= r["random_init"]["ari"] for r in per_k)
        if below == len(per_k):
            return text + (
                f"; but an untrained model of the same architecture agrees as much (ARI "
                f"{_range(init)}): the agreement is the inputs’ and the architecture’s, not "
                "learned quanta."
            )
        way = _mean([(r.get("normalized_init") or {}).get("ari") for r in per_k])
        text += f"; the random-init null gives {_range(init)}" + _way_text(way, "from it")
        if below:
            text += f" (at or below it at {below} of {len(per_k)} K)"
    return text + _verdict(way, bool(init))


def _way_text(way: float | None, what: str) -> str:
    if way is None:
        return ""
    if way >= 1:  # the ceiling is estimated from subsamples: noisy with few tokens
        return f", at or above the ceiling ({way:.0%} of the way {what})"
    return f", {way:.0%} of the way {what}"


def _verdict(way: float | None, strict: bool) -> str:
    if way is None:
        return " (no ceiling to scale by)."
    null = "chance and an untrained model" if strict else "chance"
    if way >= 0.8:
        return " — about as alike as one model clustered twice: universal at this scale."
    if way >= 0.4:
        return f" — partly shared: well above {null}, well below one model agreeing with itself."
    return f" — weakly shared: above {null}, far below one model agreeing with itself."


def _mean(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return sum(kept) / len(kept) if kept else None


def _range(values: list[float]) -> str:
    lo, hi = min(values), max(values)
    return f"{lo:.2f}" if abs(hi - lo) < 0.005 else f"{lo:.2f}–{hi:.2f}"


def _matched(
    ctx: RunContext, loaded: list[tuple[_Comparison, dict[str, Any], dict[str, Any]]], top: int = 5
) -> list[str]:
    """Per LM comparison, its best-matched clusters at the middle K compared, described."""
    blocks: list[str] = []
    for c, data, _ in loaded:
        table = ctx.table(f"{c.where}/matched_clusters.parquet")
        if table is None or "description_a" not in table:
            continue
        k = data["ks"][len(data["ks"]) // 2]
        best = table[table["K"] == k].sort_values("jaccard", ascending=False).head(top)
        rows = [
            [
                f"{r.size_a} / {r.size_b}",
                tk.num(r.jaccard, 2),
                "yes" if r.found else "no",
                str(r.description_a),
                str(r.description_b),
            ]
            for r in best.itertuples()
        ]
        header = ["sizes (a / b)", "Jaccard", "found", "cluster of a", "cluster of b"]
        blocks += [
            tk.para(
                tk.bold(f"{c.name}"),
                f" ({c.what}): the {len(rows)} best-matched of its K = {k} clusters.",
            ),
            tk.table(header, rows, {0, 1}),
        ]
    return blocks
