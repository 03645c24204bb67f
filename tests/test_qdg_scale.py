"""Quanta across scale (``quanta qdg scale``): planted learned scales are recovered, censoring
is counted, samples are matched by (doc_id, pos, token_id), and the CLI runs on a real tiny
suite and refuses another model or corpus with one line, writing nothing."""

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from quanta._validation import QuantaInputError
from quanta.cli import app
from quanta.config import config_hash
from quanta.lm.corpus import TokenizedCorpus, save_corpus
from quanta.qdg.scale import cluster_scaling, learned_scale, write_cluster_scaling
from quanta.store import RunDir, write_json, write_parquet

SIZES = np.geomspace(1e4, 1e9, 10)  # planted non-embedding N of 10 models


def _corpus(n_docs, length, max_len, seed=0):
    """Documents of random ids (the same documents for a seed), truncated to ``max_len``."""
    rng = np.random.default_rng(seed)
    docs = [rng.integers(0, 500, length).astype(np.int32)[:max_len] for _ in range(n_docs)]
    offsets = np.concatenate([[0], np.cumsum([len(d) for d in docs])])
    return TokenizedCorpus(
        np.concatenate(docs), offsets, [f"d{i}.py" for i in range(n_docs)], max_len, False
    )


def _losses_dir(path, corpus, specs, n_params, loss_of, *, corpus_name="synthetic"):
    """A complete 'quanta lm losses' directory: ``loss_of(index_table) -> [rows, models]``."""
    config = {
        "suite": "synthetic",
        "models": specs,
        "corpus": corpus_name,
        "max_len": corpus.max_len,
        "bos": False,
        "text_field": "text",
    }
    RunDir(path, "lm.losses", config, config_hash(config)).open()
    save_corpus(corpus, path / "corpus")
    index = corpus.index_table()
    np.save(path / "losses.npy", loss_of(index).astype(np.float32))
    models = pd.DataFrame(
        {
            "model": np.arange(len(specs)),
            "name": [s["name"] for s in specs],
            "revision": [s["revision"] for s in specs],
            "label": [f"{s['name']}@{s['revision']}" for s in specs],
            "n_params": n_params,
        }
    )
    write_parquet(path / "models.parquet", models)
    run = RunDir(path, "lm.losses", config, config_hash(config))
    run.write_manifest(status="complete", wall_seconds=0.0, extra={})
    return path


def _specs(names, revisions):
    return [
        {"name": n, "source": f"/suite/{n}", "revision": r}
        for n, r in zip(names, revisions, strict=True)
    ]


def _qdg_dir(path, losses, samples, labels, k, *, model, alpha_n=None):
    config = {"losses": str(losses), "model": model, "ks": [k]}
    run = RunDir(path, "qdg.run", config, config_hash(config))
    run.open()
    write_parquet(path / "samples.parquet", samples)
    write_parquet(
        path / "labels.parquet", pd.DataFrame({"sample": np.arange(len(labels)), f"K{k}": labels})
    )
    write_json(path / "zipf.json", {"alpha_n": alpha_n, "model": "x"})
    run.write_manifest(status="complete", wall_seconds=0.0, extra={})
    return path


def _sigmoid_loss(scale, centre, width=0.7, hi=6.0, lo=0.05):
    """Reverse-S in log-loss around ``centre`` (same units as ``scale``)."""
    s = 1 / (1 + np.exp((np.log(scale) - np.log(centre)) / width))
    return np.exp(np.log(lo) + (np.log(hi) - np.log(lo)) * s)


def planted(tmp_path, power, *, n_clusters=30, noise=0.3, flat=(), max_len=(40, 40), seed=0):
    """Cluster of rank r is learned at N_r = 1e5·r^power; the QDG run sits on a losses directory
    truncated at ``max_len[0]``, the analyzed one at ``max_len[1]`` (rows numbered differently).
    Clusters in ``flat`` keep one loss at every size (never learned)."""
    rng = np.random.default_rng(seed)
    specs = _specs([f"m{j}" for j in range(len(SIZES))], ["step100"] * len(SIZES))
    sizes = np.round(200 / np.arange(1, n_clusters + 1)).astype(int) + 3
    src_corpus = _corpus(60, 60, max_len[0])
    index = src_corpus.index_table()
    picked = np.sort(rng.choice(len(index), sizes.sum(), replace=False))
    samples = index.iloc[rng.permutation(picked)].reset_index(drop=True)
    labels = np.repeat(np.arange(n_clusters), sizes)  # cluster id = rank - 1
    centre = 1e5 * np.arange(1, n_clusters + 1, dtype=float) ** power
    centre[list(flat)] = np.inf
    key = dict(zip(zip(samples["doc_id"], samples["pos"], strict=True), labels, strict=True))

    def loss_of(table):
        out = rng.uniform(1, 8, (len(table), len(SIZES)))
        for r, (d, p) in enumerate(zip(table["doc_id"], table["pos"], strict=True)):
            c = key.get((d, p))
            if c is not None:
                noisy = np.exp(rng.normal(0, noise))
                out[r] = 3.0 if not np.isfinite(centre[c]) else _sigmoid_loss(SIZES, centre[c])
                out[r] *= noisy
        return out

    src = _losses_dir(tmp_path / "src", src_corpus, specs, SIZES, loss_of)
    here = src
    if max_len[1] != max_len[0]:
        here = _losses_dir(tmp_path / "here", _corpus(60, 60, max_len[1]), specs, SIZES, loss_of)
    qdg = _qdg_dir(tmp_path / "qdg", src, samples, labels, n_clusters, model=9, alpha_n=0.5)
    return qdg, here


# --------------------------------------------------------------------------- the definition


def test_learned_scale_interpolates_and_censors():
    x = np.array([1.0, 10.0, 100.0, 1000.0])
    curves = np.array(
        [
            [4.0, 4.0, 1.0, 1.0],  # halfway (2 nats) crossed midway in ln x between 10 and 100
            [4.0, 0.5, 4.0, 0.5],  # dips early, stays below only from the last point
            [4.0, 4.0, 4.0, 3.95],  # no drop
        ]
    )
    n, status, t = learned_scale(x, curves)
    assert status.tolist() == ["learned", "learned", "no_drop"]
    # both cross halfway in ln L between their neighbours: midway in ln x
    assert n[:2] == pytest.approx([10**1.5, 10**2.5])
    assert t[:2] == pytest.approx([2.0, np.sqrt(2.0)])
    # absolute threshold: below from the first point, never below, learned between
    n, status, _ = learned_scale(
        x, np.array([[0.05] * 4, [3.0] * 4, [1.0, 0.2, 0.05, 0.05]]), threshold=0.1
    )
    assert status.tolist() == ["at_first", "never", "learned"] and np.isnan(n[:2]).all()
    assert 10 < n[2] < 100


@pytest.mark.parametrize("power", [1, 2])
def test_planted_learned_scale_slope_is_recovered(tmp_path, power):
    n = 30 if power == 1 else 15
    qdg, here = planted(tmp_path, power, n_clusters=n)
    res = cluster_scaling(qdg, here, bootstrap=500, seed=0)
    fit = res.slopes.set_index("versus").loc["rank"]
    assert fit["slope"] == pytest.approx(power, abs=0.08)
    assert fit["ci_low"] < power < fit["ci_high"] and fit["ci_high"] - fit["ci_low"] < 0.3
    assert fit["n_points"] == n and fit["n_learned"] == n and fit["predicted"] == 1.0
    assert res.slopes.set_index("versus").loc["frequency", "slope"] < 0
    assert res.slopes.set_index("versus").loc["frequency", "predicted"] == pytest.approx(-1 / 1.5)
    # the same seed gives the same interval
    again = cluster_scaling(qdg, here, bootstrap=500, seed=0).slopes
    assert again["ci_low"].tolist() == res.slopes["ci_low"].tolist()


def test_samples_are_matched_by_doc_pos_token_not_by_row(tmp_path):
    """The analyzed directory truncates documents at 60 tokens, the QDG run's at 40: the same
    (doc_id, pos) sits at another row. Matching by row number reads other tokens' losses."""
    qdg, here = planted(tmp_path, 1, max_len=(40, 60))
    res = cluster_scaling(qdg, here, bootstrap=200)
    fit = res.slopes.set_index("versus").loc["rank"]
    assert fit["slope"] == pytest.approx(1, abs=0.08) and fit["n_points"] == 30
    # the curve table is the plain mean over the cluster's tokens, looked up by (doc_id, pos)
    samples = pd.read_parquet(qdg / "samples.parquet")
    labels = pd.read_parquet(qdg / "labels.parquet")["K30"].to_numpy()
    index = pd.read_parquet(here / "corpus" / "index.parquet")
    where = {(d, p): r for r, d, p in zip(index["row"], index["doc_id"], index["pos"], strict=True)}
    losses = np.load(here / "losses.npy")
    c = 4
    rows = [
        where[(d, p)]
        for d, p, lab in zip(samples["doc_id"], samples["pos"], labels, strict=True)
        if lab == c
    ]
    got = res.curves[(res.curves["cluster"] == c) & (res.curves["group"] == "N")]
    assert got["mean_loss"].to_numpy() == pytest.approx(losses[rows].astype(float).mean(0))
    assert (
        samples["row"]
        != [where[(d, p)] for d, p in zip(samples["doc_id"], samples["pos"], strict=True)]
    ).any()


def test_censored_clusters_are_counted_and_left_out(tmp_path):
    qdg, here = planted(tmp_path, 1, n_clusters=20, flat=(3, 7, 11))
    res = cluster_scaling(qdg, here, bootstrap=100)
    fit = res.slopes.set_index("versus").loc["rank"]
    assert (fit["n_no_drop"], fit["n_learned"], fit["n_points"]) == (3, 17, 17)
    learned = res.learned[res.learned["group"] == "N"]
    assert set(learned.loc[learned["status"] == "no_drop", "rank"]) == {4, 8, 12}
    assert learned.loc[learned["status"] == "no_drop", "learned_scale"].isna().all()
    # an absolute threshold below every plateau: the flat ones are never learned
    res = cluster_scaling(qdg, here, threshold=0.5, bootstrap=100)
    assert res.slopes["n_never"].iloc[0] == 3
    assert res.slopes.set_index("versus").loc["rank", "slope"] == pytest.approx(1, abs=0.1)


def test_checkpoints_give_a_step_group_with_its_own_prediction(tmp_path):
    """Sizes and checkpoints of the largest model in one directory: the step group plants
    S_r ∝ 1/p_r (sizes ∝ 1/r, so slope ≈ −1 against frequency)."""
    rng = np.random.default_rng(1)
    corpus = _corpus(40, 50, 50)
    index = corpus.index_table()
    sizes = 4 * (12 // np.arange(1, 13))
    samples = index.iloc[rng.choice(len(index), sizes.sum(), replace=False)].reset_index(drop=True)
    labels = np.repeat(np.arange(12), sizes)
    steps = np.geomspace(10, 1e6, 9).round()
    freq = sizes / sizes.sum()
    names = [f"m{j}" for j in range(4)] + ["m3"] * len(steps)
    revisions = ["step1000000"] * 4 + [f"step{int(s)}" for s in steps]
    specs = _specs(names, revisions)
    n_params = [1e5, 1e6, 1e7, 1e8] + [1e8] * len(steps)
    key = dict(zip(zip(samples["doc_id"], samples["pos"], strict=True), labels, strict=True))

    def loss_of(table):
        out = rng.uniform(1, 8, (len(table), len(specs)))
        for r, (d, p) in enumerate(zip(table["doc_id"], table["pos"], strict=True)):
            c = key.get((d, p))
            if c is not None:
                out[r, :4] = _sigmoid_loss(np.array(n_params[:4]), 1e5 * (c + 1))
                out[r, 4:] = _sigmoid_loss(steps, 30 / freq[c])
        return out

    src = _losses_dir(tmp_path / "l", corpus, specs, n_params, loss_of)
    qdg = _qdg_dir(tmp_path / "q", src, samples, labels, 12, model=3)
    res = cluster_scaling(qdg, src, bootstrap=200)
    assert list(dict.fromkeys(res.slopes["group"])) == ["N", "step:m3"]
    step = res.slopes[res.slopes["group"] == "step:m3"].set_index("versus")
    assert step.loc["frequency", "slope"] == pytest.approx(-1, abs=0.05)
    assert step.loc["frequency", "predicted"] == -1 and np.isnan(step.loc["rank", "predicted"])
    assert sorted(res.curves.loc[res.curves["group"] == "step:m3", "step"].unique()) == list(steps)
    written = write_cluster_scaling(res, tmp_path / "out")
    names = {p.name for p in written}
    assert {"curves_N.png", "learned_N.png", "curves_step_m3.png", "learned_step_m3.png"} <= names


def test_refuses_another_model_or_corpus_before_writing(tmp_path):
    qdg, here = planted(tmp_path, 1, n_clusters=10)
    cfg = json.loads((here / "manifest.json").read_text())["config"]
    corpus = _corpus(60, 60, 40)
    other = _losses_dir(
        tmp_path / "other",
        corpus,
        _specs(["m0", "m1"], ["step100"] * 2),
        [1e4, 1e5],
        lambda t: np.ones((len(t), 2)),
    )
    with pytest.raises(QuantaInputError, match=r"clustered m9@step100 .* not among the models"):
        cluster_scaling(qdg, other)
    relabelled = _losses_dir(
        tmp_path / "train",
        corpus,
        cfg["models"],
        SIZES,
        lambda t: np.ones((len(t), 10)),
        corpus_name="stdlib:train",
    )
    with pytest.raises(QuantaInputError, match=r"another corpus .*'stdlib:train' vs 'synthetic'"):
        cluster_scaling(qdg, relabelled)
    shuffled = _losses_dir(
        tmp_path / "seed1",
        _corpus(60, 60, 40, seed=1),
        cfg["models"],
        SIZES,
        lambda t: np.ones((len(t), 10)),
    )
    with pytest.raises(QuantaInputError, match="its tokens differ"):
        cluster_scaling(qdg, shuffled)
    with pytest.raises(QuantaInputError, match="K = 7 was not clustered"):
        cluster_scaling(qdg, here, k=7)


# --------------------------------------------------------------------------- the CLI on a suite


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    """A tiny trained suite, its losses, a QDG run on its smallest model and the checkpoint
    losses of that model and of another one."""
    from quanta.lm.losses_run import run_losses
    from quanta.lm.minisuite import build_suite_config, train_minisuite

    root = tmp_path_factory.mktemp("scale")
    train_minisuite(build_suite_config("tiny"), root / "suite")
    run_losses(str(root / "suite"), "stdlib:test", root / "losses", max_docs=8, max_len=200)
    res = CliRunner().invoke(
        app,
        [
            "qdg",
            "run",
            str(root / "losses"),
            "--out",
            str(root / "q"),
            "--threshold",
            "5",
            "--n",
            "60",
            "--ks",
            "3,6",
            "--quiet",
        ],
    )
    assert res.exit_code == 0, res.output
    names = [m["name"] for m in json.loads((root / "suite" / "suite.json").read_text())["models"]]
    for name in (names[0], names[-1]):
        run_losses(
            str(root / "suite"),
            "stdlib:test",
            root / f"ckpt-{name}",
            checkpoints=name,
            max_docs=8,
            max_len=250,
        )
    run_losses(str(root / "suite"), "stdlib:train", root / "train", max_docs=3, max_len=200)
    return root, names


def test_cli_end_to_end_on_a_tiny_suite(real):
    root, names = real
    res = CliRunner().invoke(
        app,
        ["qdg", "scale", str(root / "q"), "--losses", str(root / "losses"), "--bootstrap", "50"],
    )
    assert res.exit_code == 0, res.output
    out = root / "q" / "scale"
    summary = json.loads((out / "scale.json").read_text())
    assert (
        summary["K"] == 6
        and summary["n_samples"] == 60
        and summary["qdg_model"].startswith(names[0])
    )
    curves = pd.read_parquet(out / "curves.parquet")
    assert len(curves) == 6 * len(names) and curves.groupby("cluster")["size"].first().sum() == 60
    # the mean loss of a cluster is the mean over its tokens' rows, by a plain loop
    samples = pd.read_parquet(root / "q" / "samples.parquet")
    labels = pd.read_parquet(root / "q" / "labels.parquet")["K6"].to_numpy()
    losses = np.load(root / "losses" / "losses.npy")
    for c in range(6):
        rows = [int(r) for r, lab in zip(samples["row"], labels, strict=True) if lab == c]
        got = curves[curves["cluster"] == c].sort_values("model")["mean_loss"].to_numpy()
        assert got == pytest.approx(losses[rows].astype(float).mean(0), rel=1e-6)
    learned = pd.read_parquet(out / "learned.parquet")
    assert len(learned) == 6 and set(learned["status"]) <= {
        "learned",
        "at_first",
        "never",
        "no_drop",
    }
    assert (out / "curves_N.png").stat().st_size > 5_000 and (out / "learned_N.png").is_file()
    assert "Quanta across scale" in res.output and "frequency" in res.output
    # checkpoints of the QDG model, elsewhere, with the K chosen and an absolute threshold
    res = CliRunner().invoke(
        app,
        [
            "qdg",
            "scale",
            str(root / "q"),
            "--losses",
            str(root / f"ckpt-{names[0]}"),
            "--k",
            "3",
            "--threshold",
            "3",
            "--out",
            str(root / "s2"),
            "--bootstrap",
            "0",
        ],
    )
    assert res.exit_code == 0, res.output
    slopes = pd.read_parquet(root / "s2" / "slopes.parquet")
    assert set(slopes["group"]) == {f"step:{names[0]}"} and (slopes["predicted"] == -1).any()


@pytest.mark.parametrize(
    ("losses", "message"),
    [
        ("ckpt-last", "not among the models of"),
        ("train", "another corpus"),
        ("nowhere", "not a quanta result directory"),
    ],
)
def test_cli_bad_input_is_one_line_and_leaves_results_alone(real, tmp_path, losses, message):
    root, names = real
    out = tmp_path / "s"
    ok = CliRunner().invoke(
        app,
        [
            "qdg",
            "scale",
            str(root / "q"),
            "--losses",
            str(root / "losses"),
            "--out",
            str(out),
            "--bootstrap",
            "0",
        ],
    )
    assert ok.exit_code == 0, ok.output
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    path = root / (f"ckpt-{names[-1]}" if losses == "ckpt-last" else losses)
    res = CliRunner().invoke(
        app, ["qdg", "scale", str(root / "q"), "--losses", str(path), "--out", str(out)]
    )
    assert res.exit_code == 2 and message in res.output, res.output
    assert len(res.output.strip().splitlines()) == 1
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    fresh = tmp_path / "fresh"
    res = CliRunner().invoke(
        app, ["qdg", "scale", str(root / "q"), "--losses", str(path), "--out", str(fresh)]
    )
    assert res.exit_code == 2 and not fresh.exists()
