"""Training dynamics: per-token losses of every model × checkpoint (``lm losses --checkpoints``)
and their analysis along steps (``lm dynamics``): planted truth for the abrupt / gradual rules,
the CLI end to end on the tiny suite, resume, refusals, and Pythia's revisions offline."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from quanta._validation import QuantaInputError
from quanta.cli import app
from quanta.lm.dynamics import analyze_dynamics
from quanta.lm.suite import PYTHIA, PYTHIA_CHECKPOINTS, resolve_suite

STEPS = [10, 100, 1000, 10000]
PLANTED = np.array(
    [  # the big model's losses at STEPS (nats); expected (learned step or -1, gradual)
        [9.0, 8.0, 0.1, 0.05],  # abrupt at step 1000
        [9.0, 0.2, 0.1, 0.1],  # abrupt at step 100
        [9.0, 4.9, 0.1, 0.1],  # 4.9 is not > 5: not abrupt
        [9.0, 8.0, 0.1, 0.5],  # back above 0.3 at the end: not abrupt
        4.0 - 0.4 * np.log(np.array(STEPS) / 10),  # gradual: slope -0.4 per e-fold, R² 1
        [4.0, 3.9, 3.8, 3.7],  # too shallow
        [6.0, 1.0, 5.0, 0.2],  # steep overall but not a line
    ]
)
EXPECTED_STEP = [1000, 100, -1, -1, -1, -1, -1]
EXPECTED_GRADUAL = [False, False, False, False, True, False, False]


def _oracle(losses, steps, hi=5.0, lo=0.3, slope_max=-0.3, r2_min=0.98):
    """The rules as plain loops: (learned step or -1, gradual) per row."""
    learned, gradual = [], []
    x = np.log(np.asarray(steps, dtype=float))
    for row in losses:
        found = -1
        for j in range(1, len(row)):
            if all(v > hi for v in row[:j]) and all(v < lo for v in row[j:]):
                found = steps[j]
                break
        learned.append(found)
        slope, intercept = np.polyfit(x, row, 1)
        resid = row - (slope * x + intercept)
        r2 = 1 - (resid**2).sum() / ((row - row.mean()) ** 2).sum()
        gradual.append(bool(slope < slope_max and r2 > r2_min))
    return learned, gradual


def _planted_rows(n, seed):
    """``n`` rows over STEPS: a third abrupt at a random checkpoint (some with a borderline
    value that breaks the rule), a third noisy lines, a third uniform noise."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        kind = i % 3
        if kind == 0:
            j = rng.integers(1, len(STEPS))
            row = np.r_[rng.uniform(4.8, 12, j), rng.uniform(0.0, 0.35, len(STEPS) - j)]
        elif kind == 1:
            row = rng.uniform(4, 8) + rng.uniform(-0.6, 0) * np.log(STEPS)
            row = row + rng.normal(0, 0.08, len(STEPS))
        else:
            row = rng.uniform(0, 10, len(STEPS))
        rows.append(row)
    return np.array(rows)


def _losses_dir(path, columns, losses):
    """A finished losses directory as ``lm losses`` writes it (``columns``: (name, revision,
    n_params) per column of ``losses``), without the ``step`` column of older runs."""
    from quanta.store import RunDir, write_parquet

    run = RunDir(path, "lm.losses", {"suite": "planted", "corpus": "planted"}, "planted")
    run.open()
    np.save(path / "losses.npy", losses.astype(np.float32))
    models = pd.DataFrame(
        [
            {"model": i, "name": n, "revision": r, "label": f"{n}@{r}", "n_params": p}
            for i, (n, r, p) in enumerate(columns)
        ]
    ).assign(mean_loss=losses.astype(np.float32).mean(axis=0, dtype=np.float64))
    write_parquet(path / "models.parquet", models)
    n = len(losses)
    index = pd.DataFrame({"row": np.arange(n), "doc_id": 0, "pos": np.arange(1, n + 1)})
    write_parquet(path / "corpus" / "index.parquet", index.assign(token_id=0))
    run.write_manifest(status="complete", wall_seconds=0.0, extra={})


@pytest.fixture
def planted_dir(tmp_path):
    """Two models; the big one at step0 (all zeros: would spoil every rule if it were used)
    and STEPS, the small one at steps 10 and 1000; the columns stored out of order."""
    big = np.vstack([PLANTED, _planted_rows(300, seed=1)])
    n = len(big)
    small_10, small_1000 = np.full(n, 7.0), np.full(n, 0.1)  # every token abrupt at 1000
    cols = {
        ("big", "step1000", 50_000): big[:, 2],
        ("small", "step10", 1_000): small_10,
        ("big", "step10", 50_000): big[:, 0],
        ("big", "step0", 50_000): np.zeros(n),
        ("big", "step10000", 50_000): big[:, 3],
        ("small", "step1000", 1_000): small_1000,
        ("big", "step100", 50_000): big[:, 1],
    }
    _losses_dir(tmp_path, list(cols), np.stack(list(cols.values()), axis=1))
    return tmp_path, big


def test_abrupt_and_gradual_tokens_along_steps_are_the_planted_ones(planted_dir):
    path, big = planted_dir
    a = analyze_dynamics(path, bootstrap=0)
    assert a.model == "big"  # the largest by default
    assert a.summary()["steps"] == STEPS and a.settings["excluded"] == ["step0"]
    tokens = a.tokens
    assert tokens["learned_step"].tolist()[:7] == EXPECTED_STEP
    assert tokens["gradual"].tolist()[:7] == EXPECTED_GRADUAL
    learned, gradual = _oracle(big.astype(np.float32).astype(np.float64), STEPS)
    assert tokens["learned_step"].tolist() == learned
    assert tokens["abrupt"].tolist() == [s > 0 for s in learned]
    assert tokens["gradual"].tolist() == gradual
    assert 50 < sum(s > 0 for s in learned) < 150 and 30 < sum(gradual) < 150  # both occur
    s = a.summary()
    assert s["n_abrupt"] == sum(s > 0 for s in learned) and s["n_gradual"] == sum(gradual)
    assert s["abrupt_by_step"] == {str(t): learned.count(t) for t in STEPS}
    # Mean loss per column, sorted by size then step; steps from the revision names.
    m = a.models
    assert list(zip(m["name"], m["step"], strict=True)) == [
        ("small", 10),
        ("small", 1000),
        ("big", 0),
        *[("big", t) for t in STEPS],
    ]
    np.testing.assert_allclose(m["mean_loss"].iloc[-1], big[:, 3].astype(np.float32).mean())
    # Another model along its own steps: every token learned abruptly at step 1000.
    small = analyze_dynamics(path, model="small", bootstrap=0)
    assert small.tokens["learned_step"].eq(1000).all() and not small.tokens["gradual"].any()


def test_thresholds_are_options(planted_dir):
    path, big = planted_dir
    a = analyze_dynamics(path, hi=8.5, lo=0.15, gradual_slope=-0.35, gradual_r2=0.9, bootstrap=0)
    learned, gradual = _oracle(big.astype(np.float32), STEPS, 8.5, 0.15, -0.35, 0.9)
    assert a.tokens["learned_step"].tolist() == learned
    assert a.tokens["gradual"].tolist() == gradual


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"model": "medium"}, "has no model 'medium'; it has small, big"),
        ({"lo": 6.0}, r"--lo \(6.0\) must be below --hi"),
    ],
)
def test_analysis_refuses_bad_choices(planted_dir, kwargs, message):
    with pytest.raises(QuantaInputError, match=message):
        analyze_dynamics(planted_dir[0], **kwargs)


def test_a_model_with_one_checkpoint_or_no_step_names_is_refused(tmp_path):
    losses = np.ones((5, 3))
    _losses_dir(tmp_path / "a", [("m", "step5", 10), ("m", "step0", 10), ("n", "main", 20)], losses)
    with pytest.raises(QuantaInputError, match=r"'m' has 1 checkpoint\(s\) after step 0"):
        analyze_dynamics(tmp_path / "a", model="m")
    with pytest.raises(QuantaInputError, match="Revision 'main' of model 'n' is not named step"):
        analyze_dynamics(tmp_path / "a")


# ------------------------------------------------------------------ the CLI on the tiny suite

ARGS = ["--corpus", "stdlib:test", "--max-docs", "3", "--max-len", "128", "--quiet"]


def _losses(suite, out, *extra):
    return CliRunner().invoke(
        app, ["lm", "losses", "--suite", str(suite), "--out", str(out), *ARGS, *extra]
    )


@pytest.fixture(scope="module")
def dynamics_dir(tiny_suite, tmp_path_factory):
    out = tmp_path_factory.mktemp("dyn") / "D"
    res = _losses(tiny_suite, out, "--checkpoints", "all")
    assert res.exit_code == 0, res.output
    return out


def test_checkpoints_all_gives_one_column_per_model_and_revision(tiny_suite, dynamics_dir):
    info = json.loads((tiny_suite / "suite.json").read_text())["models"]
    expected = [(m["name"], r, int(r[4:])) for m in info for r in m["revisions"]]
    models = pd.read_parquet(dynamics_dir / "models.parquet")
    assert list(zip(models["name"], models["revision"], models["step"], strict=True)) == expected
    assert models["model"].tolist() == list(range(len(expected)))
    assert models.groupby("name")["n_params"].nunique().eq(1).all()
    losses = np.load(dynamics_dir / "losses.npy")
    assert losses.shape[1] == len(expected) == 12
    # A column is that checkpoint's losses: the same as a run of that one model × revision.
    one = dynamics_dir.parent / "one"
    res = _losses(tiny_suite, one, "--checkpoints", "neox-h16-l1", "--revisions", "step6")
    assert res.exit_code == 0, res.output
    single = pd.read_parquet(one / "models.parquet")
    assert single[["name", "revision", "step"]].values.tolist() == [["neox-h16-l1", "step6", 6]]
    column = expected.index(("neox-h16-l1", "step6", 6))
    np.testing.assert_array_equal(np.load(one / "losses.npy")[:, 0], losses[:, column])


def test_lm_dynamics_end_to_end(dynamics_dir):
    out = dynamics_dir / "dynamics"
    # hi 5 / lo 3: the tiny suite's largest model learns some tokens between step 6 and 40.
    res = CliRunner().invoke(app, ["lm", "dynamics", str(dynamics_dir), "--lo", "3.0"])
    assert res.exit_code == 0, res.output
    s = json.loads((out / "analysis.json").read_text())
    assert s["model"] == "neox-h48-l2" and s["steps"] == [1, 6, 40]
    tokens = pd.read_parquet(out / "tokens.parquet")
    losses = np.load(dynamics_dir / "losses.npy")[:, 9:12]  # the largest model's columns
    abrupt = (losses[:, 0] > 5) & (losses[:, 1] > 5) & (losses[:, 2] < 3)  # (step6 < 3 is rare)
    abrupt |= (losses[:, 0] > 5) & (losses[:, 1] < 3) & (losses[:, 2] < 3)
    assert s["n_abrupt"] == int(abrupt.sum()) > 0
    assert tokens["abrupt"].tolist() == abrupt.tolist()
    assert set(tokens.loc[tokens["abrupt"], "learned_step"]) <= {6, 40}
    assert s["n_gradual"] == int(tokens["gradual"].sum())
    mean = pd.read_parquet(out / "mean_loss.parquet")
    models = pd.read_parquet(dynamics_dir / "models.parquet")
    assert len(mean) == 12 and set(mean["mean_loss"]) == set(models["mean_loss"])
    examples = pd.read_parquet(out / "examples.parquet")
    assert set(examples["kind"]) == {"abrupt", "gradual"}
    first = examples[examples["kind"] == "abrupt"].iloc[0]
    np.testing.assert_allclose(first["losses"], losses[first["row"]], rtol=1e-6)
    for fig in ("mean_loss_steps", "loss_distribution_steps", "token_curves_steps"):
        assert (out / f"{fig}.png").stat().st_size > 10_000
    assert "learned abruptly" in res.output
    # `lm analyze` has no one scale axis here: one line pointing at `lm dynamics`.
    res = CliRunner().invoke(app, ["lm", "analyze", str(dynamics_dir)])
    assert res.exit_code == 2 and "quanta lm dynamics" in res.output
    assert len(res.output.strip().splitlines()) == 1
    assert not (dynamics_dir / "analysis").exists()


def _state(path):
    st = path.stat()
    return path.read_bytes(), st.st_ino, st.st_mtime_ns


def test_a_rerun_reuses_finished_columns_and_redoes_the_rest(tiny_suite, dynamics_dir, tmp_path):
    out = tmp_path / "R"
    shutil.copytree(dynamics_dir, out)
    columns = sorted((out / "columns").iterdir(), key=lambda p: int(p.stem))
    done = {p.name: _state(p) for p in columns}
    again = _losses(tiny_suite, out, "--checkpoints", "all")
    assert again.exit_code == 0, again.output
    assert {p.name: _state(p) for p in columns} == done  # a finished run: nothing rewritten
    # Interrupted after column 5: 0…5 are kept as they are, 6…11 are computed again.
    keep = [p for p in columns if int(p.stem) <= 5]
    for p in columns:
        if int(p.stem) > 5:
            p.unlink()
    (out / "losses.npy").unlink()
    models = pd.read_parquet(out / "models.parquet")
    models[models["model"] <= 5].to_parquet(out / "models.parquet")
    manifest = json.loads((out / "manifest.json").read_text())
    (out / "manifest.json").write_text(json.dumps({**manifest, "status": "running"}))
    again = _losses(tiny_suite, out, "--checkpoints", "all")
    assert again.exit_code == 0, again.output
    assert {p.name: _state(p) for p in keep} == {p.name: done[p.name] for p in keep}
    assert [p.read_bytes() for p in columns] == [done[p.name][0] for p in columns]
    assert (out / "losses.npy").read_bytes() == (dynamics_dir / "losses.npy").read_bytes()


@pytest.fixture
def broken_suite(tiny_suite, tmp_path):
    """The tiny suite with one listed revision missing on disk."""
    suite = tmp_path / "broken"
    (suite / "models").mkdir(parents=True)
    info = json.loads((tiny_suite / "suite.json").read_text())
    for m in info["models"]:
        (suite / m["path"]).symlink_to(tiny_suite / m["path"], target_is_directory=True)
    info["models"][1]["revisions"].insert(2, "step20")
    (suite / "suite.json").write_text(json.dumps(info))
    return suite


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--checkpoints", "neox-h8-l1,nope"], "has no model 'nope'; it has neox-h8-l1, "),
        (
            ["--checkpoints", "all", "--revisions", "step6,step7"],
            "Model 'neox-h8-l1' of the suite at '{suite}' has no revision 'step7'; it has "
            "step1, step6, step40.",
        ),
        (["--revisions", "step6"], "--revisions needs --checkpoints"),
        (["--checkpoints", "all", "--revisions", " , "], "--revisions is empty"),
    ],
)
def test_bad_checkpoint_lists_are_one_line_and_write_nothing(tiny_suite, tmp_path, extra, message):
    out = tmp_path / "new"
    res = _losses(tiny_suite, out, *extra)
    assert res.exit_code == 2, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and message.format(suite=tiny_suite) in lines[0], lines
    assert not out.exists()


def test_a_revision_listed_but_missing_on_disk_is_refused_before_writing(broken_suite, tmp_path):
    out = tmp_path / "new"
    res = _losses(broken_suite, out, "--checkpoints", "all")
    assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1, res.output
    assert "Revision 'step20' of model 'neox-h16-l1' is listed in" in res.output
    assert not out.exists()


def test_a_bad_list_leaves_a_finished_directory_untouched(tiny_suite, dynamics_dir):
    before = {p: _state(p) for p in dynamics_dir.rglob("*") if p.is_file()}
    res = _losses(tiny_suite, dynamics_dir, "--checkpoints", "all", "--revisions", "step2")
    assert res.exit_code == 2 and "no revision 'step2'" in res.output
    assert {p: _state(p) for p in dynamics_dir.rglob("*") if p.is_file()} == before


def test_dynamics_refuses_a_directory_without_checkpoints(tiny_suite, tmp_path):
    out = tmp_path / "sizes"
    assert _losses(tiny_suite, out).exit_code == 0  # every model at its final revision
    res = CliRunner().invoke(app, ["lm", "dynamics", str(out)])
    assert res.exit_code == 2 and "'neox-h48-l2' has 1 checkpoint(s)" in res.output, res.output
    assert not (out / "dynamics").exists()
    res = CliRunner().invoke(app, ["lm", "dynamics", str(tmp_path), "--model", "x"])
    assert res.exit_code == 2 and "not a quanta result directory" in res.output


# ----------------------------------------------------------------------------- Pythia, offline


def test_pythia_checkpoints_resolve_to_hub_ids_and_revisions_without_network(monkeypatch):
    def no_network(*_, **__):
        raise AssertionError("resolve_suite must not touch the network")

    monkeypatch.setattr("socket.create_connection", no_network)
    refs = resolve_suite("pythia", checkpoints="pythia-70m", revisions="step143000,step1000")
    assert [(r.name, r.source, r.revision) for r in refs] == [
        ("pythia-70m", "EleutherAI/pythia-70m", "step1000"),
        ("pythia-70m", "EleutherAI/pythia-70m", "step143000"),
    ]
    refs = resolve_suite("pythia", checkpoints="pythia-410m,pythia-70m")
    assert [(r.source, r.revision) for r in refs] == [
        (f"EleutherAI/pythia-{m}", rev) for m in ("70m", "410m") for rev in PYTHIA_CHECKPOINTS
    ]
    assert PYTHIA_CHECKPOINTS[0] == "step1000" and PYTHIA_CHECKPOINTS[-1] == "step143000"
    refs = resolve_suite("pythia", checkpoints="all", revisions=["step0", "step512", "step99000"])
    assert len(refs) == 3 * len(PYTHIA) and refs[-1].label() == "pythia-12b@step99000"
    for bad, message in [("step1500", "no revision 'step1500'"), ("main", "no revision 'main'")]:
        with pytest.raises(QuantaInputError, match=message):
            resolve_suite("pythia", checkpoints="pythia-70m", revisions=bad)
    with pytest.raises(QuantaInputError, match="Suite 'pythia' has no model 'pythia-13b'"):
        resolve_suite("pythia", checkpoints="pythia-13b")


def test_pythia_checkpoints_offline_fail_in_one_line_before_writing(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "o"
    base = ["lm", "losses", "--suite", "pythia", "--out", str(out), "--checkpoints", "pythia-70m"]
    for extra, message in [
        (["--revisions", "step1500"], "Suite 'pythia' has no revision 'step1500'"),
        (["--revisions", "step1000"], "hub is unreachable"),  # valid, but cannot be loaded
    ]:
        res = CliRunner().invoke(app, [*base, *extra])
        assert res.exit_code == 2 and message in res.output, res.output
        assert len(res.output.strip().splitlines()) == 1 and not out.exists()
