"""QDG clusters in the formats other tools read (``quanta qdg export``).

``feature-circuits`` — the cluster files of saprmarks/feature-circuits, whose
``load_examples_nopair(dataset, num_examples, model)`` takes a path or a dict
``{context_id: {"context": [token strings], "answer": str}}`` for one cluster, joins the
context's tokens (``"".join``), tokenizes it, and keeps examples whose answer is one token::

    OUT/K<k>.json               {cluster: {context_id: {context, answer}}}
    OUT/K<k>/cluster_<c>.json   one cluster, loadable by path

(``OUT`` defaults to ``QDG_DIR/export/feature-circuits``.)
Clusters are keyed by their label (``cluster`` of ``clusters.parquet``), in order of size.
Each sample's context is the up to ``context_tokens`` tokens before the predicted one, each
decoded alone; the answer is the predicted token decoded.

``parquet`` — one tidy table, ``OUT/clusters.parquet``, one row per sample × K: ``K, cluster,
rank, cluster_size, sample, doc_id, pos, token_id, token, previous, context`` (the decoded
text), ``context_tokens`` (the list above) and ``loss`` (nats); ``OUT`` defaults to
``QDG_DIR/export``.

Every refusal (not a finished QDG run, an unknown format, a K not clustered) comes before
anything is written; files are written atomically.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from quanta._validation import QuantaInputError, check_choice, check_int
from quanta.store import writes_outputs

__all__ = ["FORMATS", "cluster_examples", "export_clusters"]

FORMATS = ("feature-circuits", "parquet")
_OWNER = "quanta qdg export"


@writes_outputs(lambda a: a["out"] if a["out"] is not None else Path(a["qdg_dir"]) / "export")
def export_clusters(
    qdg_dir: str | Path,
    *,
    format: str,
    ks: list[int] | None = None,
    out: str | Path | None = None,
    context_tokens: int = 40,
) -> list[Path]:
    """Write the clusters of ``qdg_dir`` (every K, or ``ks``) as ``format`` into the folder
    ``out`` (default ``QDG_DIR/export``, and its ``feature-circuits/``); returns the files
    written."""
    qdg_dir = Path(qdg_dir)
    format = check_choice(format, "format", _OWNER, list(FORMATS))
    context_tokens = check_int(context_tokens, "context_tokens", _OWNER, low=1)
    table = cluster_examples(qdg_dir, ks=ks, context_tokens=context_tokens)
    if format == "parquet":
        from quanta.store import write_parquet

        target = Path(out) if out is not None else qdg_dir / "export"
        write_parquet(target / "clusters.parquet", table)
        return [target / "clusters.parquet"]
    target = Path(out) if out is not None else qdg_dir / "export" / "feature-circuits"
    return _write_feature_circuits(table, target)


def cluster_examples(
    qdg_dir: str | Path, *, ks: list[int] | None = None, context_tokens: int = 40
) -> pd.DataFrame:
    """The tidy table of the module docstring: every sample of every K (or ``ks``) with its
    cluster, rank by size, predicted token and context as text and as tokens."""
    qdg_dir = Path(qdg_dir)
    for name in ("samples.parquet", "labels.parquet", "manifest.json"):
        if not (qdg_dir / name).exists():
            raise QuantaInputError(
                f"'{qdg_dir}' holds no finished QDG run (no {name}); run 'quanta qdg run' first."
            )
    samples = pd.read_parquet(qdg_dir / "samples.parquet")
    labels = pd.read_parquet(qdg_dir / "labels.parquet")
    done = sorted(int(c[1:]) for c in labels.columns if c.startswith("K"))
    wanted = done if ks is None else sorted(set(ks))
    missing = [k for k in wanted if k not in done]
    if missing:
        raise QuantaInputError(f"K = {missing[0]} was not clustered here; available: {done}.")
    corpus, tokenizer = _corpus_and_tokenizer(qdg_dir)
    contexts = _context_tokens(corpus, samples, tokenizer, context_tokens)
    base = samples[["doc_id", "pos", "token_id", "token", "previous", "context", "loss"]]
    base = base.assign(sample=np.arange(len(samples)), context_tokens=pd.Series(contexts))
    parts = []
    for k in wanted:
        lab = labels[f"K{k}"].to_numpy()
        sizes = np.bincount(lab)
        order = np.argsort(-sizes, kind="stable")  # ties: the lower label first, as elsewhere
        rank = np.empty_like(order)
        rank[order] = np.arange(1, len(order) + 1)
        parts.append(base.assign(K=k, cluster=lab, rank=rank[lab], cluster_size=sizes[lab]))
    columns = ["K", "cluster", "rank", "cluster_size", "sample", "doc_id", "pos", "token_id"]
    table = pd.concat(parts, ignore_index=True)
    rest = ["token", "previous", "context", "context_tokens", "loss"]
    return table[columns + rest].sort_values(["K", "rank", "sample"], ignore_index=True)


def _corpus_and_tokenizer(qdg_dir: Path) -> tuple[Any, Any]:
    """The losses directory's corpus and the tokenizer of the model the run clustered."""
    from quanta.lm.corpus import load_corpus
    from quanta.lm.suite import ModelRef, load_tokenizer
    from quanta.qdg.run import pick_model
    from quanta.store import resolve_paths

    # Stored paths are relative to their run directory (quanta.store.portable_path).
    config = resolve_paths(json.loads((qdg_dir / "manifest.json").read_text())["config"], qdg_dir)
    losses_dir = Path(config["losses"])
    if not (losses_dir / "corpus" / "corpus.json").exists():
        raise QuantaInputError(
            f"The losses directory '{losses_dir}' of '{qdg_dir}' is gone or has no corpus."
        )
    models = pd.read_parquet(losses_dir / "models.parquet")
    column = int(pick_model(models, config["model"])["model"])
    losses_config = json.loads((losses_dir / "manifest.json").read_text())["config"]
    spec = resolve_paths(losses_config, losses_dir)["models"][column]
    ref = ModelRef(spec["name"], spec["source"], spec.get("revision"))
    return load_corpus(losses_dir / "corpus"), load_tokenizer(ref)


def _context_tokens(corpus: Any, samples: pd.DataFrame, tokenizer: Any, n: int) -> list[list[str]]:
    """Each sample's up to ``n`` tokens before the predicted one, each decoded alone."""
    cache: dict[int, str] = {}

    def text(token: int) -> str:
        if token not in cache:
            cache[token] = tokenizer.decode([token])
        return cache[token]

    out = []
    for doc, pos in zip(samples["doc_id"].to_numpy(), samples["pos"].to_numpy(), strict=True):
        ids = corpus.doc(int(doc))
        out.append([text(int(t)) for t in ids[max(0, int(pos) - n) : int(pos)]])
    return out


def _write_feature_circuits(table: pd.DataFrame, target: Path) -> list[Path]:
    """``K<k>.json`` (every cluster) and ``K<k>/cluster_<c>.json`` (one each) per K."""
    from quanta.store import atomic_write

    written = []
    for k, rows in table.groupby("K", sort=True):
        clusters: dict[str, dict[str, dict[str, Any]]] = {}
        for _, members in rows.groupby("rank", sort=True):
            label = str(int(members["cluster"].iloc[0]))
            clusters[label] = {
                str(i): {"context": list(ctx), "answer": answer}
                for i, (ctx, answer) in enumerate(
                    zip(members["context_tokens"], members["token"], strict=True)
                )
            }
        files = {target / f"K{k}.json": clusters}
        files.update(
            {target / f"K{k}" / f"cluster_{c}.json": examples for c, examples in clusters.items()}
        )
        for path, data in files.items():
            with atomic_write(path, "w") as fh:
                json.dump(data, fh, ensure_ascii=False)
            written.append(path)
    return written
