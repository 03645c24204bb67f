"""Universality of quanta: agreement metrics on planted truth, their null and ceiling, and
``quanta qdg compare`` end to end with its refusals."""

from __future__ import annotations

import itertools
import json
import shutil

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from quanta._validation import QuantaInputError
from quanta.cli import app
from quanta.qdg.agreement import (
    METRICS,
    agreement,
    ceiling_agreement,
    match_clusters,
    normalized,
    null_agreement,
)


def _planted(n=400, k=8, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, k, n)


def test_identical_and_relabelled_partitions_agree_fully():
    a = _planted()
    relabel = np.random.default_rng(1).permutation(8)
    for b in (a.copy(), relabel[a]):
        r = agreement(a, b)
        assert [r[m] for m in METRICS] == pytest.approx([1.0] * 5)
        table = match_clusters(a, b)
        assert table["found"].all() and len(table) == 8
        assert (relabel[table["cluster_a"]] == table["cluster_b"]).all() or (b == a).all()


def test_random_partitions_sit_inside_their_null():
    a, b = _planted(seed=2), _planted(seed=3)
    observed = agreement(a, b)
    null = null_agreement(a, b, n_permutations=200, seed=0)
    for m in ("ari", "nmi", "mean_jaccard"):
        assert null[m]["low"] <= observed[m] <= null[m]["high"], m
    assert abs(observed["ari"]) < 0.02 and observed["share_a"] == 0.0
    # The null of an identical pair is far below the observed 1.
    same = null_agreement(a, a, n_permutations=50, seed=0)
    assert same["ari"]["high"] < 0.05 and same["nmi"]["mean"] < 0.1


def test_matching_is_the_best_one_to_one_assignment_of_a_brute_force_search():
    rng = np.random.default_rng(4)
    for _ in range(5):
        a, b = rng.integers(0, 4, 60), rng.integers(0, 4, 60)
        a[:30] = b[:30]  # some structure
        table = match_clusters(a, b)

        def jac(i, j, a=a, b=b):
            both = np.sum((a == i) & (b == j))
            return both / (np.sum(a == i) + np.sum(b == j) - both)

        best = max(
            sum(jac(i, j) for i, j in zip(range(4), perm, strict=True))
            for perm in itertools.permutations(range(4))
        )
        assert table["jaccard"].sum() == pytest.approx(best)
        for r in table.itertuples():
            assert r.jaccard == pytest.approx(jac(r.cluster_a, r.cluster_b))
            assert r.overlap == np.sum((a == r.cluster_a) & (b == r.cluster_b))


def test_ceiling_is_above_the_agreement_of_a_noisier_second_model():
    from quanta.qdg.cluster import affinity, cosine_similarity, spectral_sweep
    from quanta.qdg.validate import toy_vectors

    v, _ = toy_vectors(300, 6, 200, 0.5, alpha=0.2, seed=0)
    aff = affinity(cosine_similarity(v), "angular")
    labels = spectral_sweep(aff, [6], assign="kmeans", seed=0)
    # A second "model": the same quanta, but a third of its samples placed at random.
    rng = np.random.default_rng(1)
    other = labels[6].copy()
    moved = rng.random(len(other)) < 1 / 3
    other[moved] = rng.integers(0, 6, moved.sum())
    observed = agreement(labels[6], other)
    ceiling = ceiling_agreement(aff, labels, assign="kmeans", replicas=3, seed=0)[6]
    null = null_agreement(labels[6], other, n_permutations=50)
    assert ceiling["ari"]["mean"] > 0.95
    for m in ("ari", "nmi", "mean_jaccard"):
        assert null[m]["high"] < observed[m] < ceiling[m]["low"], m
    scaled = normalized(observed, null, {m: ceiling[m]["mean"] for m in METRICS})
    for m in ("ari", "nmi", "mean_jaccard"):  # between its null (0) and its ceiling (1)
        want = (observed[m] - null[m]["mean"]) / (ceiling[m]["mean"] - null[m]["mean"])
        assert 0 < scaled[m] < 1 and scaled[m] == pytest.approx(want)


def test_agreement_bad_input():
    with pytest.raises(QuantaInputError, match="same samples"):
        agreement([0, 1, 1], [0, 1])
    with pytest.raises(ValueError, match="'threshold'"):
        match_clusters([0, 1], [0, 1], threshold=0.0)
    with pytest.raises(QuantaInputError, match="cannot hold K = 5"):
        ceiling_agreement(np.ones((6, 6)), {5: np.arange(6) % 5}, fraction=0.5)


# --------------------------------------------------------------------------- the command


@pytest.fixture(scope="module")
def qdg_runs(tiny_suite, tmp_path_factory):
    """Three QDG runs on one losses directory: the smallest model twice (angular and relu
    affinities: the same tokens) and the largest (other tokens)."""
    from quanta.lm.losses_run import run_losses

    root = tmp_path_factory.mktemp("compare")
    run_losses(str(tiny_suite), "stdlib:test", root / "losses", max_docs=8, max_len=200)
    base = ["qdg", "run", str(root / "losses"), "--threshold", "5", "--quiet"]
    runs = {}
    for name, extra in {
        "small": ["--model", "0", "--n", "60"],
        "small_relu": ["--model", "0", "--n", "60", "--affinity", "relu"],
        "large": ["--model", "-1", "--n", "400", "--min-samples", "60"],  # more tokens shared
    }.items():
        res = CliRunner().invoke(app, [*base, *extra, "--ks", "3,6", "--out", str(root / name)])
        assert res.exit_code == 0, res.output
        runs[name] = root / name
    return runs


def test_compare_cli_same_tokens_and_intersection(qdg_runs, tmp_path):
    out = tmp_path / "u"
    args = [str(qdg_runs["small"]), str(qdg_runs["small_relu"]), "--permutations", "20"]
    res = CliRunner().invoke(app, ["qdg", "compare", *args, "--out", str(out)])
    assert res.exit_code == 0, res.output
    result = json.loads((out / "universality.json").read_text())
    assert result["n_tokens"] == 60 and result["ks"] == [3, 6]
    (pair,) = result["pairs"]
    for row in pair["per_k"]:
        assert row["observed"]["ari"] > row["null"]["ari"]["high"]
        assert set(row["ceiling"]) == set(METRICS)
    matched = pd.read_parquet(out / "matched_clusters.parquet")
    assert matched.groupby("K").size().to_dict() == {3: 3, 6: 6}
    assert matched["description_a"].str.contains("after").all()
    # The same run with itself: everything found, ARI 1.
    same = tmp_path / "same"
    res = CliRunner().invoke(
        app, ["qdg", "compare", args[0], args[0], "--out", str(same), "--ks", "6"]
    )
    assert res.exit_code == 0, res.output
    row = json.loads((same / "universality.json").read_text())["pairs"][0]["per_k"][0]
    assert row["observed"]["ari"] == pytest.approx(1.0) and row["observed"]["share_a"] == 1.0
    sizes = tmp_path / "sizes"
    res = CliRunner().invoke(
        app,
        ["qdg", "compare", args[0], str(qdg_runs["large"]), "--intersect", "--out", str(sizes)],
    )
    assert res.exit_code == 0, res.output
    n = json.loads((sizes / "universality.json").read_text())["n_tokens"]
    small = pd.read_parquet(qdg_runs["small"] / "samples.parquet")
    large = pd.read_parquet(qdg_runs["large"] / "samples.parquet")
    assert n == len(small.merge(large, on=["doc_id", "pos"]))


def _other_corpus(run, tmp_path):
    """A copy of ``run`` whose losses directory holds a corpus with one token changed."""
    manifest = json.loads((run / "manifest.json").read_text())
    losses = tmp_path / "losses2"
    from quanta.store import resolve_paths  # stored relative to the run

    shutil.copytree(resolve_paths(manifest["config"], run)["losses"], losses)
    tokens = np.load(losses / "corpus" / "tokens.npy")
    tokens[0] += 1
    np.save(losses / "corpus" / "tokens.npy", tokens)
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    manifest["config"]["losses"] = str(losses)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    return copy


def test_compare_refusals_write_nothing(qdg_runs, tmp_path):
    small, relu, large = (str(qdg_runs[k]) for k in ("small", "small_relu", "large"))
    cases = [
        ([small], "at least two QDG runs"),
        ([small, large], "hold different tokens"),
        ([small, relu, "--ks", "3,7"], "K = 7 was not clustered by"),
        ([small, str(_other_corpus(qdg_runs["small"], tmp_path))], "different corpora"),
        ([small, str(tmp_path)], "not a quanta result directory"),
        ([small, relu, "--threshold", "0"], "'threshold'"),
    ]
    for args, message in cases:
        out = tmp_path / "out"
        res = CliRunner().invoke(app, ["qdg", "compare", *args, "--out", str(out)])
        assert res.exit_code == 2, (args, res.output)
        assert message in res.output and "Traceback" not in res.output
        assert not out.exists()


# --------------------------------------------------------------------------- the toy world


@pytest.fixture(scope="module")
def parity_run(tmp_path_factory):
    """Two init seeds of a width-64 net on 4 subtasks (seconds), every subtask learned."""
    out = tmp_path_factory.mktemp("parity") / "run"
    args = "--n-tasks 4 --n-bits 8 --k 2 --widths 64 --init-seeds 0,1 --steps 800 --lr 3e-3"
    extra = "--batch-size 256 --test-per-task 32 --eval-points 3 --no-figures"
    res = CliRunner().invoke(
        app, ["parity", "train", "--out", str(out), *f"{args} {extra}".split()]
    )
    assert res.exit_code == 0, res.output
    return out


def test_parity_seeds_against_each_other_and_the_truth(parity_run, tmp_path):
    out = tmp_path / "toy"
    args = ["qdg", "compare", "--parity", str(parity_run), "--width", "64", "--n", "300"]
    opts = ["--ks", "3,4", "--permutations", "20", "--replicas", "3", "--n-init", "2"]
    res = CliRunner().invoke(app, [*args, *opts, "--out", str(out)])
    assert res.exit_code == 0, res.output
    result = json.loads((out / "universality.json").read_text())
    a, b, truth = (r["path"] for r in result["runs"])
    assert "init seed 0" in a and "init seed 1" in b and truth == "truth"
    assert [(p["a"], p["b"]) for p in result["pairs"]] == [(a, b), (a, truth), (b, truth)]
    assert result["n_subtasks_present"] == 4 and result["n_tokens"] > 250
    assert "untrained" in result["random_init_runs"][0]["path"]
    for pair in result["pairs"]:
        for row in pair["per_k"]:
            assert row["null"]["ari"]["high"] < 0.05 and set(row["ceiling"]) == set(METRICS)
            assert set(row["random_init"]) == set(METRICS)
    # One seed only, or two runs of different tasks: refused, nothing written.
    single = tmp_path / "single"
    res = CliRunner().invoke(
        app,
        [
            "parity",
            "train",
            "--out",
            str(single),
            "--n-tasks",
            "4",
            "--n-bits",
            "8",
            "--k",
            "3",  # another task
            "--widths",
            "8",
            "--steps",
            "5",
            "--no-figures",
        ],
    )
    assert res.exit_code == 0, res.output
    for runs, message in (
        ([single], "has one init seed"),
        ([parity_run, single], "different tasks"),
    ):
        res = CliRunner().invoke(
            app, ["qdg", "compare", "--parity", *map(str, runs), "--out", str(tmp_path / "no")]
        )
        assert res.exit_code == 2 and message in res.output, res.output
        assert not (tmp_path / "no").exists()


@pytest.mark.parametrize("preset", ["tiny", "cpu", "cpu-long", "paper"])
def test_every_option_of_the_universality_stage_exists(preset):
    """The stage's command lines use only options their commands have (the paper preset's
    cannot be run here: a misspelt flag would fail it on the GPU)."""
    import dataclasses

    import typer

    from quanta.parity.config import ParityConfig
    from quanta.pipeline import PRESETS

    stages = [s for s in PRESETS[preset] if s.name.startswith("qdg-universality")]
    assert len(stages) == 2  # the LM comparisons and the toy world's
    root = typer.main.get_command(app)
    for line in (line for stage in stages for line in stage.commands):
        command, words = root, list(line)
        while words and hasattr(command, "commands") and words[0] in command.commands:
            command = command.commands[words.pop(0)]
        known = {o for p in command.params for o in [*p.opts, *getattr(p, "secondary_opts", [])]}
        if line[:2] == ("parity", "train"):  # its config keys are options too
            known |= {"--" + f.name.replace("_", "-") for f in dataclasses.fields(ParityConfig)}
        flags = {w for w in words if w.startswith("--")}
        assert flags <= known, (line, flags - known)
