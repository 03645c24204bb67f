"""The random-init null of universality: ``qdg run --random-init SEED`` (an untrained model of
a run's architecture on the trained model's tokens) and ``qdg compare --random-init``."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
from typer.testing import CliRunner

from quanta.cli import app


@pytest.fixture(scope="module")
def runs(tiny_suite, tmp_path_factory):
    """On one losses directory: the smallest model's QDG with two affinities (the same tokens),
    and an untrained model of its architecture, seeds 0 (twice) and 1, on those tokens."""
    from quanta.lm.losses_run import run_losses

    root = tmp_path_factory.mktemp("random_init")
    run_losses(str(tiny_suite), "stdlib:test", root / "losses", max_docs=8, max_len=200)
    base = ["qdg", "run", str(root / "losses"), "--threshold", "5", "--quiet", "--model", "0"]
    found = {}
    for name, extra in {
        "trained": [],
        "relu": ["--affinity", "relu"],
        "init0": ["--random-init", "0"],
        "init0_again": ["--random-init", "0"],
        "init1": ["--random-init", "1"],
    }.items():
        res = CliRunner().invoke(
            app, [*base, "--n", "60", "--ks", "3,6", *extra, "--out", str(root / name)]
        )
        assert res.exit_code == 0, res.output
        found[name] = root / name
    found["losses"] = root / "losses"
    return found


def test_random_model_is_the_architecture_with_seeded_untrained_weights(tiny_suite):
    from quanta.lm.suite import load_model, random_model, resolve_suite

    ref = resolve_suite(str(tiny_suite))[0]
    trained = load_model(ref).state_dict()
    state = torch.get_rng_state()
    first, again = random_model(ref, 0).state_dict(), random_model(ref, 0).state_dict()
    other = random_model(ref, 1).state_dict()
    assert torch.equal(torch.get_rng_state(), state)  # the caller's stream untouched
    assert {k: v.shape for k, v in first.items()} == {k: v.shape for k, v in trained.items()}
    weights = [k for k in trained if k.endswith("attention.dense.weight")]
    assert weights
    for key in weights:
        assert torch.equal(first[key], again[key])
        assert not torch.equal(first[key], other[key])
        assert not torch.allclose(first[key], trained[key])


def test_random_init_run_takes_the_trained_tokens_and_its_own_gradients(runs):
    tokens = [
        pd.read_parquet(runs[n] / "samples.parquet")[["doc_id", "pos", "loss"]]
        for n in ("trained", "init0", "init1")
    ]
    pd.testing.assert_frame_equal(tokens[0], tokens[1])  # the trained model's selection
    pd.testing.assert_frame_equal(tokens[0], tokens[2])
    grads = {
        n: np.load(runs[n] / "grads.npy") for n in ("trained", "init0", "init0_again", "init1")
    }
    np.testing.assert_array_equal(grads["init0"], grads["init0_again"])  # same seed
    assert not np.allclose(grads["init0"], grads["init1"])
    assert not np.allclose(grads["init0"], grads["trained"])
    manifest = json.loads((runs["init1"] / "manifest.json").read_text())
    assert manifest["config"]["random_init"] == 1 and manifest["model"]["random_init"] == 1
    plain = json.loads((runs["trained"] / "manifest.json").read_text())
    assert "random_init" not in plain["config"]  # earlier runs keep their hash


def test_compare_reports_the_random_init_null_beside_the_others(runs, tmp_path):
    out = tmp_path / "u"
    args = [str(runs["trained"]), str(runs["relu"]), "--permutations", "20", "--replicas", "2"]
    nulls = ["--random-init", str(runs["init0"]), "--random-init", str(runs["init1"])]
    res = CliRunner().invoke(app, ["qdg", "compare", *args, *nulls, "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "init " in res.output
    result = json.loads((out / "universality.json").read_text())
    assert [r["seed"] for r in result["random_init_runs"]] == [0, 1]
    labels = {n: pd.read_parquet(runs[n] / "labels.parquet") for n in runs if n != "losses"}
    for row in result["pairs"][0]["per_k"]:
        k, init = f"K{row['K']}", row["random_init"]
        a, b = labels["trained"][k], labels["relu"][k]
        untrained = [labels["init0"][k], labels["init1"][k]]
        # Oracle: scikit-learn directly, the highest over both runs and both untrained models.
        want_ari = max(adjusted_rand_score(x, u) for x in (a, b) for u in untrained)
        want_nmi = max(normalized_mutual_info_score(x, u) for x in (a, b) for u in untrained)
        assert init["ari"] == pytest.approx(want_ari) and init["nmi"] == pytest.approx(want_nmi)
        span = row["ceiling"]["ari"] - want_ari
        if span > 1e-9:
            want = (row["observed"]["ari"] - want_ari) / span
            assert row["normalized_init"]["ari"] == pytest.approx(want)
    # Without --random-init: no such null, and the stored hash is that of earlier outputs.
    plain = tmp_path / "plain"
    res = CliRunner().invoke(app, ["qdg", "compare", *args, "--out", str(plain)])
    assert res.exit_code == 0, res.output
    row = json.loads((plain / "universality.json").read_text())["pairs"][0]["per_k"][0]
    assert row["random_init"] is None and "init " not in res.output
    assert "random_init" not in json.loads((plain / "manifest.json").read_text())["config"]


def test_random_init_refusals_write_nothing(runs, tmp_path):
    trained, relu, init0 = (str(runs[n]) for n in ("trained", "relu", "init0"))
    cases = [
        (["qdg", "compare", trained, init0], "is a random-init run"),
        (["qdg", "compare", trained, relu, "--random-init", relu], "is of a trained model"),
        (["qdg", "compare", "--parity", trained, "--random-init", init0], "goes with LM runs"),
        (
            ["qdg", "run", str(runs["losses"]), *["--n", "60", "--ks", "3", "--random-init", "-1"]],
            "'random_init' parameter",
        ),
    ]
    for args, message in cases:
        out = tmp_path / "out"
        res = CliRunner().invoke(app, [*args, "--out", str(out)])
        assert res.exit_code == 2, (args, res.output)
        assert message in " ".join(res.output.split()) and "Traceback" not in res.output
        assert not out.exists()


def test_random_init_null_replaces_only_the_trained_sides():
    from quanta.qdg.agreement import random_init_null

    rng = np.random.default_rng(0)
    a = rng.integers(0, 5, 300)
    noise = rng.integers(0, 5, 300)
    # An untrained model that found a's clusters: the null is 1 (a replaced by it, vs b = a).
    assert random_init_null(a, a, [a])["ari"] == pytest.approx(1.0)
    assert random_init_null(a, a, [noise])["ari"] < 0.05
    # b is the truth (not a model): only a is replaced, agreement(u, truth).
    truth = noise
    both = random_init_null(a, truth, [a])
    only_a = random_init_null(a, truth, [a], trained=(True, False))
    assert both["ari"] == pytest.approx(1.0) and only_a["ari"] < 0.05
    assert only_a["ari"] == pytest.approx(adjusted_rand_score(a, truth))
    # The highest over several untrained models, metric by metric.
    many = random_init_null(a, a, [noise, a])
    assert many["ari"] == pytest.approx(1.0) and many["share_b"] == 1.0
    assert random_init_null(a, a, []) is None


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gemma2"])
def test_random_model_of_other_architectures(arch, tmp_path):
    """Not only GPT-NeoX: the untrained model is the saved model's own class and config (a
    Llama, a GPT-2 with tied embeddings, a soft-capped Gemma-2), its weights drawn by the seed
    alone — equal for one seed, different for another and from the saved ones."""
    from archs import build
    from quanta.lm.suite import ModelRef, random_model

    saved = build(arch, seed=3)
    saved.save_pretrained(tmp_path / arch)
    ref = ModelRef(arch, str(tmp_path / arch))
    first, again, other = random_model(ref, 0), random_model(ref, 0), random_model(ref, 1)

    def settings(model):  # the architecture's config; where it was loaded from aside
        return {k: v for k, v in model.config.to_dict().items() if k != "_name_or_path"}

    assert type(first) is type(saved) and settings(first) == settings(saved)
    a, b, c, s = (m.state_dict() for m in (first, again, other, saved))
    assert a.keys() == s.keys()
    matrices = [k for k, v in s.items() if v.ndim == 2]
    assert matrices
    for key in matrices:
        assert torch.equal(a[key], b[key]), key
        assert not torch.equal(a[key], c[key]), key
        assert not torch.equal(a[key], s[key]), key
