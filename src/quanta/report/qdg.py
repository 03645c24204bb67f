"""Section 6, QDG — quanta discovery from gradients: the Zipf fits of the language model's
clusters (qdg-clusters), the largest clusters, the planted-truth validation (qdg-validate) and,
as its subsection, appendix D (qdg-parity, qdg-envelope; in :mod:`.appendix_d`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from quanta.report import toolkit as tk
from quanta.report.context import RunContext

__all__ = ["qdg"]

_DIR = "qdg/clusters"


def qdg(ctx: RunContext) -> tk.Section:
    title = "6. QDG: quanta discovery from gradients"
    blocks = [
        *_zipf_blocks(ctx),
        tk.heading(3, "Planted-truth validation (appendix D)"),
        _validation(ctx),
        ctx.provenance(["qdg-clusters", "qdg-validate"], [_DIR]),
    ]
    return tk.Section(title, blocks, "qdg", nav="QDG")


def _browsers(ctx: RunContext) -> list[Path]:
    """The cluster browsers beside the clusters, by K."""
    return sorted(
        (ctx.out / _DIR).glob("clusters_K*.html"),
        key=lambda p: int(p.stem.removeprefix("clusters_K") or 0),
    )


def _zipf_blocks(ctx: RunContext) -> list[str]:
    miss = ctx.missing("qdg-clusters")
    zipf = ctx.json(f"{_DIR}/zipf.json")
    if miss or zipf is None:
        return [miss or tk.unreadable(f"{_DIR}/zipf.json")]
    rows = [
        [
            k,
            tk.num(f.get("exponent")),
            tk.ci(*(f.get("ci") or (None, None))),
            tk.num(f.get("exponent_corrected")),
            str(f.get("n_clusters", "—")),
        ]
        for k, f in sorted(zipf["zipf"].items(), key=lambda kv: int(kv[0]))
    ]
    browsers = _browsers(ctx)
    link = tk.Html("")
    if browsers:
        rel = browsers[-1].relative_to(ctx.out).as_posix()
        link = tk.para(
            tk.bold("Cluster browser:"),
            " ",
            tk.link(rel, browsers[-1].name),
            " (every cluster, tokens in context).",
        )
    shown_k = (
        int(browsers[-1].stem.removeprefix("clusters_K"))
        if browsers
        else max(map(int, zipf["zipf"]), default=0)
    )
    return [
        _zipf_summary(zipf),
        link,
        ctx.figure(f"{_DIR}/rank_frequency.png", "cluster size vs rank, every K"),
        tk.table(
            ["K", "Zipf exponent", "95% CI", "bias-corrected", "clusters"], rows, {1, 2, 3, 4}
        ),
        _largest_clusters(ctx, shown_k, zipf["n_samples"]),
    ]


def _zipf_summary(zipf: dict[str, Any]) -> tk.Html:
    info = zipf.get("model_info") or {}
    selection = zipf.get("selection") or {}
    pred, env = zipf.get("predicted_exponent"), zipf.get("envelope_slope")
    return tk.para(
        f"{zipf['n_samples']:,} confident tokens of ",
        tk.esc(zipf["model"]),
        f" (N = {info['n_params']:,} non-embedding parameters)" if info else "",
        tk.text("; selected: ", tk.esc(selection["reason"])) if selection else "",
        "; per-token gradients → cosine similarity → spectral clustering for every K → "
        "Zipf law of cluster sizes (discrete MLE; bias-corrected by parametric bootstrap). ",
        f"The quantization model predicts exponent 1 + α_N = {tk.num(pred)}. "
        if pred is not None
        else "",
        f"The paper's envelope log-log slope over ranks {zipf['envelope_ranks'][0]}–"
        f"{zipf['envelope_ranks'][1]}: {tk.num(env)}."
        if env is not None
        else "Too few clusters for the paper's envelope fit.",
    )


def _largest_clusters(ctx: RunContext, k: int, n_samples: int, top: int = 10) -> tk.Html:
    """The ``top`` largest clusters at ``k``: rank, size, share and one-line description."""
    table = ctx.table(f"{_DIR}/clusters.parquet")
    if table is None or "description" not in table:
        return tk.Html("")
    largest = table[table["K"] == k].sort_values("rank").head(top)
    rows = [
        [
            str(r["rank"]),
            str(r["size"]),
            f"{100 * r['size'] / max(n_samples, 1):.1f}%",
            tk.code(r["description"], keep_spaces=True),
        ]
        for r in largest.to_dict("records")
    ]
    return tk.join(
        tk.heading(3, f"The {len(rows)} largest clusters at K = {k}"),
        tk.para(
            "Description: the most common predicted token(s) with their share of the cluster, "
            "and the most common token before them."
        ),
        tk.table(["rank", "size", "share", "description"], rows, {0, 1, 2}),
    )


def _validation(ctx: RunContext) -> tk.Html:
    """Planted-truth scores: mean over the (d, σ) settings per method, then every setting."""
    miss = ctx.missing("qdg-validate")
    table = ctx.table("qdg/validate/validate.parquet")
    if miss or table is None:
        return miss or tk.unreadable("qdg/validate/validate.parquet")
    scores = ["ari", "nmi", "purity"]
    mean = (
        table.groupby(["affinity", "assign"], sort=False)[scores]
        .mean()
        .reset_index()
        .sort_values("ari", ascending=False)
    )
    per = table.assign(
        setting=[f"d={d}, σ={s}" for d, s in zip(table["d"], table["sigma"], strict=True)]
    )
    n_settings = len(table.groupby(["d", "sigma"]))
    return tk.join(
        tk.para(
            "Samples with known quanta (Zipf frequencies, random unit vectors plus noise), "
            "clustered by every affinity × label assigner; scores averaged over "
            f"{n_settings} (d, σ) settings. The paper's method is angular + k-means."
        ),
        tk.frame_table(
            mean,
            {
                "affinity": "affinity",
                "assign": "assign",
                "ari": "mean ARI",
                "nmi": "mean NMI",
                "purity": "mean purity",
            },
        ),
        tk.frame_table(
            per,
            {
                "setting": "setting",
                "affinity": "affinity",
                "assign": "assign",
                "ari": "ARI",
                "zipf_recovered": "Zipf recovered",
                "zipf_true": "Zipf true",
            },
        ),
    )
