"""QDG: token selection and per-token gradients, on the tiny offline suite."""

import numpy as np
import pandas as pd
import pytest
import torch

from quanta._validation import QuantaInputError
from quanta.lm.corpus import load_documents, tokenize_documents
from quanta.lm.losses import token_losses
from quanta.lm.minisuite import build_suite_config, train_minisuite
from quanta.lm.suite import load_model, load_tokenizer, resolve_suite
from quanta.qdg.cluster import (
    AFFINITIES,
    affinity,
    cosine_similarity,
    envelope_slope,
    rank_frequency,
    spectral_sweep,
    zipf_mle,
)
from quanta.qdg.grads import (
    naive_token_gradient,
    per_token_gradients,
    projection_error,
    select_params,
)
from quanta.qdg.select import induction_mask, select_tokens


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    out = tmp_path_factory.mktemp("suite")
    train_minisuite(build_suite_config("tiny"), out)
    ref = resolve_suite(str(out))[-1]
    tok, model = load_tokenizer(ref), load_model(ref)
    corpus = tokenize_documents(load_documents("stdlib:test", max_docs=6)[0], tok, max_len=120)
    return model, corpus


def test_induction_mask_matches_a_plain_loop(lm):
    _, corpus = lm
    mask = induction_mask(corpus)
    want = []
    for d in range(corpus.n_docs):
        ids = corpus.doc(d).tolist()
        seen = set()
        for pos in range(1, len(ids)):
            tri = tuple(ids[pos - 2 : pos + 1]) if pos >= 2 else None
            want.append(tri is not None and tri in seen)
            if tri is not None:
                seen.add(tri)
    assert mask.tolist() == want and any(want)


def test_selection_threshold_subsampling_and_errors(lm):
    model, corpus = lm
    losses = token_losses(model, corpus)
    threshold = float(np.quantile(losses, 0.3))
    every = select_tokens(corpus, losses, threshold=threshold, every=3, n=10**6)
    assert (every["loss"] < threshold).all()
    assert not induction_mask(corpus)[every["row"]].any()
    eligible = np.flatnonzero((losses < threshold) & ~induction_mask(corpus))
    assert every["row"].tolist() == eligible[::3].tolist()
    a = select_tokens(corpus, losses, threshold=threshold, n=10, seed=1)
    b = select_tokens(corpus, losses, threshold=threshold, n=10, seed=1)
    assert a.equals(b) and len(a) == 10 and a["row"].is_monotonic_increasing
    with pytest.raises(QuantaInputError, match="No token is left to select"):
        select_tokens(corpus, losses, threshold=1e-9)


def test_exact_gradients_equal_a_naive_per_token_loop(lm, tmp_path):
    model, corpus = lm
    losses = token_losses(model, corpus)
    samples = select_tokens(corpus, losses, threshold=float(np.median(losses)), n=12, seed=0)
    info = per_token_gradients(model, corpus, samples, tmp_path / "g.npy", memory_bytes=1 << 16)
    grads = np.load(tmp_path / "g.npy", mmap_mode="r")
    params = select_params(model)
    assert info["n_backward"] == len(samples) and grads.shape == (12, info["dim"])
    assert not any("embed" in n or "layernorm" in n for n in info["params"])
    for i, r in samples.iterrows():
        want = naive_token_gradient(model, corpus, int(r["doc_id"]), int(r["pos"]), params)
        np.testing.assert_allclose(grads[i], want.numpy(), rtol=1e-5, atol=1e-6 * want.abs().max())


def test_projection_keeps_cosines(lm, tmp_path):
    model, corpus = lm
    losses = token_losses(model, corpus)
    samples = select_tokens(corpus, losses, threshold=float(np.median(losses)), n=40, seed=0)
    per_token_gradients(model, corpus, samples, tmp_path / "exact.npy")
    info = per_token_gradients(
        model, corpus, samples, tmp_path / "proj.npy", projection_dim=8192, seed=3
    )
    assert info["stored_dim"] == 8192
    err = projection_error(np.load(tmp_path / "exact.npy"), np.load(tmp_path / "proj.npy"))
    assert err["mean"] < 0.02 and err["max"] < 0.1, err


def test_bad_gradient_inputs(lm, tmp_path):
    model, corpus = lm
    with pytest.raises(QuantaInputError, match="matches no parameter"):
        select_params(model, "no_such_parameter")
    samples = select_tokens(corpus, token_losses(model, corpus), threshold=100.0, n=2)
    with pytest.raises(ValueError, match="projection_dim"):
        per_token_gradients(model, corpus, samples, tmp_path / "g.npy", projection_dim=0)
    assert not (tmp_path / "g.npy").exists()


def test_non_finite_gradients_are_refused(lm, tmp_path):
    model, corpus = lm
    samples = select_tokens(corpus, token_losses(model, corpus), threshold=100.0, n=2)
    _, p = select_params(model)[0]
    saved = p.detach().clone()
    with torch.no_grad():
        p.fill_(float("nan"))
    try:
        with pytest.raises(QuantaInputError, match="Non-finite gradient"):
            per_token_gradients(model, corpus, samples, tmp_path / "g.npy")
        assert not (tmp_path / "g.npy").exists()
    finally:
        with torch.no_grad():
            p.copy_(saved)


# --------------------------------------------------------------------------- clustering, Zipf


def planted(n=1500, k=12, d=48, noise=0.3, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    return rng.normal(size=(k, d))[labels] + noise * rng.normal(size=(n, d)), labels


@pytest.mark.parametrize("transform", AFFINITIES)
@pytest.mark.parametrize("assign", ["kmeans", "cluster_qr"])
def test_planted_partition_is_recovered_exactly(transform, assign):
    from sklearn.metrics import adjusted_rand_score

    g, truth = planted()
    norms = np.linalg.norm(g, axis=1)
    a = affinity(cosine_similarity(g, block=500), transform, norms=norms)
    labels = spectral_sweep(a, [3, 12, 30], assign=assign, seed=0)
    assert set(labels) == {3, 12, 30}
    assert adjusted_rand_score(truth, labels[12]) == 1.0


def test_two_blocks_and_one_embedding_for_every_k_agree_with_sklearn():
    from sklearn.cluster import SpectralClustering
    from sklearn.metrics import adjusted_rand_score

    block = np.kron(np.eye(2), np.ones((30, 30))) * 0.9 + 0.05
    labels = spectral_sweep(block.astype(np.float32), [2], assign="cluster_qr")[2]
    assert adjusted_rand_score(np.repeat([0, 1], 30), labels) == 1.0
    g, _ = planted(n=600, k=8)
    a = affinity(cosine_similarity(g), "relu")
    ours = spectral_sweep(a, [4, 8, 16], assign="cluster_qr", seed=0)
    for k in (4, 8, 16):
        ref = SpectralClustering(
            k, affinity="precomputed", assign_labels="cluster_qr", random_state=0
        ).fit_predict(a)
        assert adjusted_rand_score(ref, ours[k]) > 0.95, k


@pytest.mark.parametrize("s", [1.1, 1.4, 2.0])
def test_zipf_mle_recovers_a_planted_exponent(s):
    rng = np.random.default_rng(1)
    p = np.arange(1, 101.0) ** -s
    fit = zipf_mle(rng.multinomial(2000, p / p.sum()), bootstrap=100, seed=0)
    assert fit["success"] and abs(fit["exponent"] - s) < 0.05
    assert fit["ci"][0] < fit["exponent"] < fit["ci"][1]


def test_rank_frequency_envelope_and_paper_slope():
    labels = {2: np.array([0, 0, 0, 1]), 3: np.array([0, 1, 1, 2])}
    table = rank_frequency(labels)
    env = table[table["K"] == 0]
    assert env["size"].tolist() == [3, 1, 1]
    sizes = (1e6 * np.arange(1, 2001.0) ** -1.2).round()
    t = pd.DataFrame({"K": 0, "rank": np.arange(1, 2001), "size": sizes})
    assert envelope_slope(t, (101, 1000)) == pytest.approx(-1.2, abs=0.01)


def test_clustering_bad_input():
    g, _ = planted(n=50, k=3)
    a = affinity(cosine_similarity(g), "relu")
    with pytest.raises(QuantaInputError, match="exceeds the number of samples"):
        spectral_sweep(a, [60])
    bad = g.copy()
    bad[3, 0] = np.nan
    with pytest.raises(QuantaInputError, match="NaN/Inf"):
        cosine_similarity(bad)
    with pytest.raises(QuantaInputError, match="not symmetric"):
        affinity(np.triu(cosine_similarity(g)), "relu")
    with pytest.raises(ValueError, match="'affinity'"):
        affinity(cosine_similarity(g), "cosh")
    with pytest.raises(QuantaInputError, match="needs one gradient norm per sample"):
        affinity(cosine_similarity(g), "relu_norm")
    with pytest.raises(QuantaInputError, match="needs ≥ 2 clusters"):
        zipf_mle(np.array([5]))


# --------------------------------------------------------------------------- the pipeline


@pytest.fixture(scope="module")
def losses_dir(tmp_path_factory):
    from quanta.lm.losses import run_losses

    root = tmp_path_factory.mktemp("qdg")
    train_minisuite(build_suite_config("tiny"), root / "suite")
    run_losses(str(root / "suite"), "stdlib:test", root / "losses", max_docs=8, max_len=200)
    return root / "losses"


def test_qdg_run_end_to_end_through_the_cli(losses_dir, tmp_path):
    import json

    from typer.testing import CliRunner

    from quanta.cli import app

    out = tmp_path / "q"
    args = ["qdg", "run", str(losses_dir), "--out", str(out), "--threshold", "5", "--n", "60"]
    res = CliRunner().invoke(app, [*args, "--ks", "3,6,12", "--quiet"])
    assert res.exit_code == 0, res.output
    result = json.loads((out / "zipf.json").read_text())
    assert result["n_samples"] == 60 and set(result["zipf"]) == {"3", "6", "12"}
    assert result["alpha_n"] is None  # lm analyze was not run on this directory
    labels = pd.read_parquet(out / "labels.parquet")
    assert [labels[f"K{k}"].nunique() for k in (3, 6, 12)] == [3, 6, 12]
    clusters = pd.read_parquet(out / "clusters.parquet")
    assert clusters.groupby("K")["size"].sum().tolist() == [60, 60, 60]
    assert np.load(out / "grads.npy", mmap_mode="r").shape == (60, 8192)
    assert (out / "rank_frequency.png").stat().st_size > 10_000
    again = CliRunner().invoke(app, [*args, "--ks", "3,6,12", "--quiet"])
    assert again.exit_code == 0  # complete: reported again, nothing recomputed
    sparse_out = tmp_path / "knn"
    res = CliRunner().invoke(
        app, [*args[:4], str(sparse_out), *args[5:], "--ks", "3,6", "--knn", "10", "--quiet"]
    )
    assert res.exit_code == 0, res.output
    assert pd.read_parquet(sparse_out / "labels.parquet")["K6"].nunique() == 6


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--ks", "3,500"], "K = 500 exceeds the 60 selected samples"),
        (["--threshold", "1e-9"], "No token is left to select"),
        (["--projection-dim", "-4"], "--projection-dim must be ≥ 0"),
        (["--param-filter", "nothing_matches"], "matches no parameter"),
        (["--ks", "3,x"], "--ks takes integers"),
        (["--affinity", "cosh"], "'affinity'"),
        (["--knn", "5", "--affinity", "relu_norm"], "'shift' with knn = 5"),  # before claiming
    ],
)
def test_qdg_run_bad_input(losses_dir, tmp_path, extra, message):
    from typer.testing import CliRunner

    from quanta.cli import app

    out = tmp_path / "q"
    base = ["qdg", "run", str(losses_dir), "--out", str(out), "--threshold", "5", "--n", "60"]
    res = CliRunner().invoke(app, [*base, "--ks", "3,6", "--quiet", *extra])
    assert res.exit_code == 2 and message in res.output, res.output
    assert len(res.output.strip().splitlines()) == 1 and not out.exists()


# --------------------------------------------------------------------------- planted truth


def test_toy_model_planted_truth_scores_and_bias():
    from quanta.qdg.validate import compare_affinities, score, toy_vectors

    v, truth = toy_vectors(800, 20, 500, 0.3, alpha=0.5, seed=0)
    table = compare_affinities(v, truth, seed=0)
    relu = table[(table["affinity"] == "relu") & (table["assign"] == "kmeans")].iloc[0]
    assert relu["ari"] == pytest.approx(1.0) and relu["purity"] == pytest.approx(1.0)
    assert relu["zipf_recovered"] == pytest.approx(relu["zipf_true"], abs=1e-9)
    # Heavy noise: the paper's angular transform degrades far more than relu (PAPER.md §5).
    v, truth = toy_vectors(1000, 30, 1000, 2.0, seed=0)
    noisy = compare_affinities(v, truth, assigns=("kmeans",), seed=0).set_index("affinity")
    assert noisy.loc["relu", "ari"] > 0.9 > 0.5 > noisy.loc["angular", "ari"]
    assert score(np.array([0, 0, 1, 1]), np.array([5, 5, 7, 7])) == {
        "ari": 1.0,
        "nmi": 1.0,
        "purity": 1.0,
    }


def test_parity_gradients_have_one_row_per_sample_with_its_subtask():
    from quanta.parity import ParityConfig
    from quanta.qdg.validate import parity_gradients

    cfg = ParityConfig(
        n_tasks=5, n_bits=8, widths=(16,), steps=50, batch_size=64, test_per_task=8, eval_points=2
    )
    g, truth = parity_gradients(cfg, n_samples=200)
    assert g.shape == (200, (5 + 8 + 1) * 16 + 2 * 16 + 2) and truth.tolist() == sorted(truth)
    counts = np.bincount(truth, minlength=5)
    assert counts[0] > counts[-1]  # Zipf mixture: the first subtask is the most frequent
    assert np.isfinite(g).all()


def test_validate_cli(tmp_path):
    from typer.testing import CliRunner

    from quanta.cli import app

    args = ["qdg", "validate", "--samples", "300", "--subtasks", "10", "--dims", "50"]
    res = CliRunner().invoke(app, [*args, "--sigmas", "0.2", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert "best on average" in res.output
    assert len(pd.read_parquet(tmp_path / "validate.parquet")) == 8
    bad = CliRunner().invoke(app, ["qdg", "validate", "--source", "pile", "--out", str(tmp_path)])
    assert bad.exit_code == 2 and "'source'" in bad.output


def test_cluster_browser_renders_offline(losses_dir, tmp_path, headless_chromium):
    from quanta.qdg.browser import write_browser
    from quanta.qdg.run import run_qdg

    out = tmp_path / "q"
    run_qdg(losses_dir, out, threshold=5.0, n=60, ks=(3, 6))
    page = write_browser(out, per_cluster=5)
    text = page.read_text()
    assert page.name == "clusters_K6.html" and text.count('<details class="cluster"') == 6
    sizes = np.bincount(pd.read_parquet(out / "labels.parquet")["K6"])
    assert text.count("<mark>") == sum(min(int(c), 5) for c in sizes)
    assert "data:image/png;base64," in text and "http" not in text.replace("http-equiv", "")
    assert "↵" in text  # newlines in code contexts are visible
    with pytest.raises(QuantaInputError, match="K = 7 was not clustered"):
        write_browser(out, k=7)
    dom = headless_chromium(page, "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert dom.stdout.count('class="cluster"') == 6 and "<mark>" in dom.stdout
    assert "Uncaught" not in dom.stderr and "CONSOLE" not in dom.stderr
    shot = tmp_path / "clusters.png"
    headless_chromium(page, f"--screenshot={shot}", "--window-size=1200,900")
    assert shot.stat().st_size > 10_000


def test_sparse_knn_affinity_recovers_planted_clusters_with_little_memory():
    from scipy import sparse
    from sklearn.metrics import adjusted_rand_score

    from quanta.qdg.cluster import knn_affinity

    g, truth = planted(n=3000, k=20, d=48, noise=0.3)
    a = knn_affinity(g, n_neighbors=15, block=700)
    assert sparse.issparse(a) and a.nnz <= 2 * 15 * 3000 and (a != a.T).nnz == 0
    labels = spectral_sweep(a, [20], assign="cluster_qr", seed=0)[20]
    assert adjusted_rand_score(truth, labels) == 1.0
