"""A self-contained HTML page for browsing QDG clusters (no network, no JavaScript).

The page names the model (label, non-embedding N) and the selection rule actually used (with
why, when ``--threshold auto`` raised it), then lists the clusters of one K by size: an
overview table (rank, size, one-line description, linked) and a ``<details>`` block per cluster
with its description, top tokens and samples — the context with the predicted token highlighted
and newlines made visible (``↵``). The rank-frequency figure is embedded as a data URI.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from quanta._html import escape, img, show_text
from quanta._validation import QuantaInputError, check_int
from quanta.store import writes_outputs

__all__ = ["write_browser"]

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 70em; color: #222; }
h1 { font-size: 1.4em; } summary { cursor: pointer; padding: .3em 0; }
.size { font-weight: bold; } .top { color: #555; font-family: monospace; }
pre.sample { background: #f6f6f6; padding: .4em .6em; margin: .3em 0; white-space: pre-wrap;
  word-break: break-all; border-left: 3px solid #ccc; }
mark { background: #ffd54f; outline: 1px solid #e0a800; }
.nl { color: #aaa; } img { max-width: 36em; } table { border-collapse: collapse; }
td, th { padding: .1em .6em; text-align: right; } td.desc { text-align: left; }
.desc { font-family: monospace; white-space: pre; }
"""


@writes_outputs("qdg_dir")
def write_browser(qdg_dir: str | Path, *, k: int | None = None, per_cluster: int = 20) -> Path:
    """Write ``QDG_DIR/clusters_K<k>.html`` (default: the largest K) and return its path."""
    qdg_dir = Path(qdg_dir)
    for name in ("samples.parquet", "labels.parquet", "zipf.json"):
        if not (qdg_dir / name).exists():
            raise QuantaInputError(
                f"'{qdg_dir}' holds no finished QDG run (no {name}); run 'quanta qdg run' first."
            )
    per_cluster = check_int(per_cluster, "per_cluster", "quanta qdg report", low=1)
    samples = pd.read_parquet(qdg_dir / "samples.parquet")
    labels = pd.read_parquet(qdg_dir / "labels.parquet")
    ks = sorted(int(c[1:]) for c in labels.columns if c.startswith("K"))
    k = ks[-1] if k is None else k
    if k not in ks:
        raise QuantaInputError(f"K = {k} was not clustered here; available: {ks}.")
    zipf = json.loads((qdg_dir / "zipf.json").read_text())
    lab = labels[f"K{k}"].to_numpy()
    sizes = pd.Series(lab).value_counts()
    # Ties: the lower label first, as the ranks in clusters.parquet.
    sizes = sizes.sort_index().sort_values(ascending=False, kind="stable")
    describe = _descriptions(qdg_dir, k)
    parts = _head(qdg_dir, zipf, k, ks, len(samples))
    overview = [
        f"<tr><td>{rank}</td><td>{size}</td><td>{100 * size / len(lab):.1f}%</td>"
        f'<td class="desc"><a href="#c{cluster}">{escape(describe.get(cluster, ""))}</a>'
        "</td></tr>"
        for rank, (cluster, size) in enumerate(sizes.items(), start=1)
    ]
    parts += [
        "<h2>Clusters by size</h2><p>Description: the most common predicted token(s) with "
        "their share of the cluster, and the most common token before them.</p>",
        '<table class="overview"><tr><th>rank</th><th>size</th><th>share</th>'
        "<th>description</th></tr>" + "".join(overview) + "</table>",
    ]
    for rank, (cluster, size) in enumerate(sizes.items(), start=1):
        members = samples[lab == cluster]
        parts += _cluster(members, rank, cluster, size, describe.get(cluster, ""), per_cluster)
    parts.append("</body></html>")
    from quanta.store import atomic_write

    path = qdg_dir / f"clusters_K{k}.html"
    with atomic_write(path, "w") as fh:
        fh.write("\n".join(parts))
    return path


def _head(qdg_dir: Path, zipf: dict[str, Any], k: int, ks: list[int], n: int) -> list[str]:
    """The page up to the clusters: title, model, selection, the Zipf fit, the figure."""
    fit = zipf["zipf"].get(str(k), {})
    figure = ""
    png = qdg_dir / "rank_frequency.png"
    if png.exists():
        figure = img(png, "rank-frequency of cluster sizes")
    exponent = fit.get("exponent")
    ci = fit.get("ci")
    corrected = fit.get("exponent_corrected")
    fit_text = (
        f"Zipf exponent of cluster sizes (discrete MLE): {exponent:.3f}"
        + (f", bias-corrected {corrected:.3f}" if corrected is not None else "")
        + (f", 95% CI [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")
        if exponent is not None
        else f"Zipf fit: {fit.get('message', 'n/a')}"
    )
    info = zipf.get("model_info") or {}
    model_text = escape(str(zipf.get("model"))) + (
        f", N = {info['n_params']:,} non-embedding parameters" if "n_params" in info else ""
    )
    selection = zipf.get("selection") or {}
    return [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>QDG clusters, K = {k}</title><style>{_STYLE}</style></head><body>",
        f"<h1>QDG clusters of {n:,} tokens ({model_text}), K = {k}</h1>",
        (
            f'<p class="selection">Selected: {escape(selection["reason"])}.</p>'
            if "reason" in selection
            else ""
        ),
        f"<p>{escape(fit_text)}"
        + (
            f"; the quantization model predicts 1 + α_N = {zipf['predicted_exponent']:.3f}"
            if zipf.get("predicted_exponent") is not None
            else ""
        )
        + f". Other K: {', '.join(map(str, ks))} "
        "(<code>quanta qdg report --k K</code>).</p>",
        figure,
    ]


def _cluster(
    members: pd.DataFrame, rank: int, cluster: Any, size: int, description: str, per_cluster: int
) -> list[str]:
    """One cluster's ``<details>`` block (the first three open): its top tokens and samples."""
    top = members["token"].value_counts().head(5)
    top_text = ", ".join(f"{escape(repr(t))}×{c}" for t, c in top.items())
    parts = [
        f'<details class="cluster" id="c{cluster}"{" open" if rank <= 3 else ""}><summary>'
        f'#{rank} <span class="size">{size} samples</span> '
        f'<span class="desc">{escape(description)}</span> · '
        f'<span class="top">{top_text}</span></summary>'
    ]
    for r in members.head(per_cluster).itertuples():
        parts.append(
            f'<pre class="sample" title="doc {r.doc_id}, pos {r.pos}, loss {r.loss:.3f}">'
            f"{show_text(str(r.context))}<mark>{show_text(str(r.token))}</mark></pre>"
        )
    if size > per_cluster:
        parts.append(f"<p>… {size - per_cluster} more</p>")
    parts.append("</details>")
    return parts


def _descriptions(qdg_dir: Path, k: int) -> dict[Any, str]:
    """Cluster → one-line description at ``k`` from ``clusters.parquet`` (empty if the run
    predates descriptions)."""
    path = qdg_dir / "clusters.parquet"
    if not path.exists():
        return {}
    table = pd.read_parquet(path)
    if "description" not in table:
        return {}
    table = table[table["K"] == k]
    return dict(zip(table["cluster"].astype(int), table["description"].astype(str), strict=True))
