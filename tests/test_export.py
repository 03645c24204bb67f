"""``quanta qdg export``: clusters as saprmarks/feature-circuits cluster JSON and as a tidy
Parquet table, checked against the run's own files (labels, samples, corpus)."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from quanta.cli import app


@pytest.fixture(scope="module")
def qdg_dir(tiny_suite, tmp_path_factory):
    from quanta.lm.losses_run import run_losses
    from quanta.qdg.run import run_qdg

    root = tmp_path_factory.mktemp("export")
    run_losses(str(tiny_suite), "stdlib:test", root / "L", max_docs=8, max_len=200)
    run_qdg(root / "L", root / "q", threshold=5.0, n=60, ks=(3, 6))
    return root / "q"


def _expected(qdg_dir, k):
    """Cluster label → sorted (context text, answer) of its samples, from the run's own
    tables and corpus: the 40 tokens before each predicted token, decoded."""
    from quanta.lm.corpus import load_corpus
    from quanta.lm.suite import ModelRef, load_tokenizer

    stored = json.loads((qdg_dir / "manifest.json").read_text())["config"]["losses"]
    assert stored == "../L"  # recorded relative to the run (inside its tree: relocatable)
    losses = qdg_dir.parent / "L"
    manifest = json.loads((losses / "manifest.json").read_text())
    first = manifest["config"]["models"][0]
    tokenizer = load_tokenizer(ModelRef(first["name"], first["source"], first["revision"]))
    corpus = load_corpus(f"{losses}/corpus")
    samples = pd.read_parquet(qdg_dir / "samples.parquet")
    labels = pd.read_parquet(qdg_dir / "labels.parquet")[f"K{k}"].to_numpy()
    expected: dict[str, list[tuple[str, str]]] = {}
    for row, label in zip(samples.itertuples(), labels, strict=True):
        ids = corpus.doc(row.doc_id)
        before = tokenizer.decode(ids[max(0, row.pos - 40) : row.pos].tolist())
        answer = tokenizer.decode([int(ids[row.pos])])
        expected.setdefault(str(label), []).append((before, answer))
    return {c: sorted(v) for c, v in expected.items()}


def test_feature_circuits_json_loads_as_load_examples_nopair_reads_it(qdg_dir, tmp_path):
    out = tmp_path / "fc"
    res = CliRunner().invoke(
        app, ["qdg", "export", str(qdg_dir), "--format", "feature-circuits", "--out", str(out)]
    )
    assert res.exit_code == 0, res.output
    for k in (3, 6):
        every = json.loads((out / f"K{k}.json").read_text())
        expected = _expected(qdg_dir, k)
        assert set(every) == set(expected)
        sizes = [len(every[c]) for c in every]
        assert sizes == sorted(sizes, reverse=True)  # clusters in order of size
        for cluster, dataset in every.items():
            assert json.loads((out / f"K{k}" / f"cluster_{cluster}.json").read_text()) == dataset
            # As load_examples_nopair reads a cluster: for context_id in dataset, the context's
            # tokens joined ("".join) and the answer.
            read = [
                ("".join(dataset[context_id]["context"]), dataset[context_id]["answer"])
                for context_id in dataset
            ]
            assert all(len(dataset[c]["context"]) <= 40 for c in dataset)
            assert sorted(read) == expected[cluster]


def test_parquet_export_is_one_row_per_sample_and_k(qdg_dir, tmp_path):
    out = tmp_path / "pq"
    res = CliRunner().invoke(
        app, ["qdg", "export", str(qdg_dir), "--format", "parquet", "--out", str(out)]
    )
    assert res.exit_code == 0, res.output
    table = pd.read_parquet(out / "clusters.parquet")
    samples = pd.read_parquet(qdg_dir / "samples.parquet")
    assert len(table) == 2 * len(samples) and sorted(set(table["K"])) == [3, 6]
    for k in (3, 6):
        part = table[table["K"] == k].sort_values("sample")
        truth = pd.read_parquet(qdg_dir / "labels.parquet")[f"K{k}"].to_numpy()
        assert part["cluster"].tolist() == truth.tolist()
        assert part["token"].tolist() == samples["token"].tolist()
        assert (
            part.groupby("cluster")["cluster_size"].first()
            == part["cluster"].value_counts().sort_index()
        ).all()
        ranks = part.drop_duplicates("cluster").sort_values("rank")
        assert ranks["cluster_size"].is_monotonic_decreasing and ranks["rank"].tolist() == list(
            range(1, k + 1)
        )
    assert all(len(c) <= 40 for c in table["context_tokens"])


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--format", "csv"], "The 'format' parameter of quanta qdg export must be one of"),
        (["--format", "parquet", "--ks", "7"], "K = 7 was not clustered here; available: [3, 6]"),
        (["--format", "parquet", "--context", "0"], "'context_tokens' parameter"),
    ],
)
def test_export_bad_input_is_one_line_and_writes_nothing(qdg_dir, tmp_path, extra, message):
    out = tmp_path / "x"
    res = CliRunner().invoke(app, ["qdg", "export", str(qdg_dir), "--out", str(out), *extra])
    assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1, res.output
    assert message in " ".join(res.output.split()) and not out.exists()
    res = CliRunner().invoke(app, ["qdg", "export", str(tmp_path), "--format", "parquet"])
    assert res.exit_code == 2 and "holds no finished QDG run" in res.output
