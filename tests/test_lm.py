"""The language-model pipeline on a tiny offline suite trained here (no hub anywhere)."""

import errno
import json
import os
import subprocess
import sys
import sysconfig
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from quanta._validation import QuantaInputError
from quanta.cli import app
from quanta.lm.corpus import (
    Document,
    load_corpus,
    load_documents,
    stdlib_files,
    tokenize_documents,
)
from quanta.lm.curves import classify_tokens
from quanta.lm.losses import HeadFallbackWarning, resolve_head, token_losses
from quanta.lm.losses_run import run_losses
from quanta.lm.minisuite import build_suite_config, train_minisuite
from quanta.lm.suite import load_model, load_tokenizer, non_embedding_params, resolve_suite


@pytest.fixture(scope="module")
def suite_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("suite")
    train_minisuite(build_suite_config("tiny"), out)
    return out


@pytest.fixture(scope="module")
def tok_model(suite_dir):
    refs = resolve_suite(str(suite_dir))
    return load_tokenizer(refs[0]), load_model(refs[-1])


def test_suite_trains_saves_and_reloads_offline_with_decreasing_loss(suite_dir):
    info = json.loads((suite_dir / "suite.json").read_text())
    models = info["models"]
    n = [m["n_params"] for m in models]
    assert len(models) >= 4 and n == sorted(n) and n[-1] / n[0] >= 10
    assert all(m["revisions"] == ["step1", "step6", "step40"] for m in models)
    # Reload every final checkpoint in a fresh process with the hub switched off; evaluate.
    code = (
        "import json,sys;from quanta.lm.suite import *;import torch\n"
        "refs=resolve_suite(sys.argv[1]);tok=load_tokenizer(refs[0]);x=tok(open(sys.argv[2])"
        ".read()[:3000],return_tensors='pt').input_ids[:,:200]\n"
        "out=[]\nfor r in refs:\n m=load_model(r)\n with torch.no_grad():"
        " out.append(float(m(input_ids=x,labels=x).loss))\nprint(json.dumps(out))"
    )
    doc = load_documents("stdlib:test", max_docs=1)[0][0]
    path = suite_dir / "doc.txt"
    path.write_text(doc.text)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    res = subprocess.run(
        [sys.executable, "-c", code, str(suite_dir), str(path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    losses = json.loads(res.stdout.strip().splitlines()[-1])
    assert losses == sorted(losses, reverse=True), losses  # bigger is better, strictly in order


def test_non_embedding_count_matches_the_neox_formula(tok_model):
    _, model = tok_model
    cfg = model.config
    d, layers, v = cfg.hidden_size, cfg.num_hidden_layers, cfg.vocab_size
    per_layer = 4 * d + (3 * d * d + 3 * d) + (d * d + d) + (4 * d * d + 4 * d) + (4 * d * d + d)
    assert non_embedding_params(model) == layers * per_layer + 2 * d
    total = sum(p.numel() for p in model.parameters())
    assert total - non_embedding_params(model) == 2 * v * d


def test_per_token_losses_equal_the_models_own_loss(tok_model):
    tok, model = tok_model
    docs, _ = load_documents("stdlib:test", max_docs=12)
    corpus = tokenize_documents(docs, tok, max_len=160)
    rows = corpus.row_offsets()
    reference = []
    with torch.no_grad():
        for d in range(corpus.n_docs):
            ids = torch.from_numpy(corpus.doc(d).astype(np.int64))[None]
            reference.append(float(model(input_ids=ids, labels=ids).loss))
    # Batch compositions from one document per batch to everything in one padded batch.
    for batch_tokens in (1, 400, 1000, 10**6):
        ours = token_losses(model, corpus, batch_tokens=batch_tokens, chunk_rows=37)
        means = [ours[rows[d] : rows[d + 1]].mean(dtype=np.float64) for d in range(corpus.n_docs)]
        np.testing.assert_allclose(means, reference, rtol=0, atol=1e-5)


def _reference_losses(model, corpus):
    """Loss of every predicted token, in index-table order, by an independent route: one
    document per forward through the model's own logits, aligned by ``(doc_id, pos)``."""
    by_token = {}
    with torch.no_grad():
        for d in range(corpus.n_docs):
            ids = torch.from_numpy(corpus.doc(d).astype(np.int64))
            logits = model(input_ids=ids[None]).logits[0]
            ce = torch.nn.functional.cross_entropy(logits[:-1], ids[1:], reduction="none")
            by_token.update({(d, pos): v for pos, v in enumerate(ce.tolist(), start=1)})
    table = corpus.index_table()
    assert len(by_token) == len(table)
    return np.array([by_token[k] for k in zip(table["doc_id"], table["pos"], strict=True)])


def test_per_token_losses_match_one_document_forwards_token_by_token(tok_model):
    tok, model = tok_model
    docs, _ = load_documents("stdlib:test", max_docs=6)
    cut = (30, 80, 150, 220, 300, 6000)  # characters: lengths from a few tokens to max_len
    corpus = tokenize_documents(
        [Document(d.name, d.text[:n]) for d, n in zip(docs, cut, strict=True)], tok, max_len=300
    )
    assert len(set(corpus.lengths.tolist())) >= 5  # batched together, so padding is present
    expected = _reference_losses(model, corpus)
    with warnings.catch_warnings():
        warnings.simplefilter("error", HeadFallbackWarning)
        assert resolve_head(model, corpus, chunk_rows=37) == "chunked"  # what "auto" runs
    # One padded batch of all documents, then batches of mixed composition; "chunked" raises
    # rather than fall back, so it is the fast path that is compared here.
    for batch_tokens in (10**6, 700):
        ours = token_losses(model, corpus, batch_tokens=batch_tokens, chunk_rows=37, head="chunked")
        np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-5)
    full = token_losses(model, corpus, batch_tokens=10**6, head="full")
    np.testing.assert_allclose(full, expected, rtol=0, atol=1e-5)


def _soft_capped(model, cap=2.0):
    """``model`` with Gemma-2-style soft-capped logits: no longer a plain linear head."""
    forward = model.forward

    def capped(*args, **kwargs):
        out = forward(*args, **kwargs)
        out.logits = cap * torch.tanh(out.logits / cap)
        return out

    model.forward = capped
    return model


def test_a_head_that_disagrees_falls_back_visibly_and_is_recorded(suite_dir, tmp_path, monkeypatch):
    import quanta.lm.suite

    real_load = quanta.lm.suite.load_model
    monkeypatch.setattr(
        quanta.lm.suite, "load_model", lambda *a, **k: _soft_capped(real_load(*a, **k))
    )
    out = tmp_path / "F"
    with pytest.warns(HeadFallbackWarning, match="disagrees with the model's own logits") as seen:
        models = run_losses(str(suite_dir), "stdlib:test", out, max_docs=3, max_len=64)
    assert len(seen) == len(models) == 4 and models["head"].tolist() == ["full"] * 4
    assert pd.read_parquet(out / "models.parquet")["head"].tolist() == ["full"] * 4
    corpus = load_corpus(out / "corpus")
    model = _soft_capped(real_load(resolve_suite(str(suite_dir))[0]))
    # The fallback's losses are the capped model's own, token by token.
    np.testing.assert_allclose(
        np.load(out / "losses.npy")[:, 0], _reference_losses(model, corpus), rtol=0, atol=1e-5
    )
    with pytest.raises(QuantaInputError, match="disagrees with the model's own logits"):
        token_losses(model, corpus, head="chunked")
    with pytest.raises(ValueError, match=r"'head' parameter .* Got 'fast' instead"):
        token_losses(model, corpus, head="fast")


def test_cli_head_option_warns_in_one_line_and_refuses_a_broken_fast_path(
    suite_dir, tmp_path, monkeypatch
):
    import quanta.lm.suite

    real_load = quanta.lm.suite.load_model
    monkeypatch.setattr(
        quanta.lm.suite, "load_model", lambda *a, **k: _soft_capped(real_load(*a, **k))
    )
    args = ["lm", "losses", "--suite", str(suite_dir), "--max-docs", "2", "--max-len", "48"]
    res = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "A"), "--quiet"])
    assert res.exit_code == 0, res.output
    warned = [line for line in res.output.splitlines() if line.startswith("warning:")]
    assert len(warned) == 4 and "disagrees with the model's own logits" in warned[0]
    assert "HeadFallbackWarning" not in res.output  # not Python's two-line warning form
    assert pd.read_parquet(tmp_path / "A" / "models.parquet")["head"].tolist() == ["full"] * 4
    res = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "C"), "--head", "chunked"])
    assert res.exit_code == 2 and "disagrees with the model's own logits" in res.output
    assert "Traceback" not in res.output
    res = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "D"), "--head", "fast"])
    assert res.exit_code == 2 and "Got 'fast' instead" in res.output
    assert not (tmp_path / "D").exists()


def test_index_table_round_trips_to_the_text(tok_model):
    tok, _ = tok_model
    docs = [Document("a", "def f(x):\n    return x + 1\n"), Document("b", "x"), Document("c", "")]
    docs += load_documents("stdlib:test", max_docs=3)[0]
    corpus = tokenize_documents(docs, tok, max_len=600)
    assert corpus.n_skipped_short == 2  # "x" is one token, "" none: skipped and counted
    table = corpus.index_table()
    assert len(table) == corpus.n_predicted
    kept = [d for d in docs if d.name in corpus.names]
    for doc_id, doc in enumerate(kept):
        rows = table[table["doc_id"] == doc_id]
        ids = corpus.doc(doc_id)
        assert rows["pos"].tolist() == list(range(1, len(ids)))
        last = rows.iloc[-1]
        prefix = tok.decode(ids[: last["pos"]].tolist())
        text = prefix + tok.decode([int(last["token_id"])])
        # Untruncated documents come back exactly; truncated ones as a prefix of the text.
        assert text == doc.text if len(ids) < 600 else doc.text.startswith(text)


def test_corpus_formats(tmp_path):
    import zstandard

    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "b.txt").write_text("second")
    (tmp_path / "d" / "a.txt").write_text("first")
    (tmp_path / "d" / "bin.dat").write_bytes(b"\xff\xfe\x00")
    docs, skipped = load_documents(tmp_path / "d")
    assert [d.text for d in docs] == ["first", "second"] and skipped == 1
    lines = "\n".join(json.dumps({"text": t}) for t in ("one", "two", "three")) + "\n"
    (tmp_path / "c.jsonl").write_text(lines)
    (tmp_path / "c.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(lines.encode()))
    for name in ("c.jsonl", "c.jsonl.zst"):
        assert [d.text for d in load_documents(tmp_path / name)[0]] == ["one", "two", "three"]
    assert len(load_documents(tmp_path / "c.jsonl", max_docs=2)[0]) == 2


def test_saved_hf_dataset_corpus(tmp_path):
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_dict({"text": ["x y", "z"]}).save_to_disk(str(tmp_path / "hf"))
    assert [d.text for d in load_documents(tmp_path / "hf")[0]] == ["x y", "z"]


def test_stdlib_train_and_test_split_the_stdlib_without_overlap():
    root = Path(sysconfig.get_paths()["stdlib"])
    names = [p.relative_to(root).as_posix() for p in stdlib_files()]
    test, test_skipped = load_documents("stdlib:test")
    train, train_skipped = load_documents("stdlib:train")
    test_names, train_names = {d.name for d in test}, {d.name for d in train}
    assert not test_names & train_names
    assert test_names | train_names <= set(names)
    assert len(test) + test_skipped + len(train) + train_skipped == len(names)
    assert test_names <= set(names[::10]) and len(test) + test_skipped == len(names[::10])


def test_site_packages_corpus_never_leaks_the_held_out_split(tmp_path, monkeypatch):
    import quanta.lm.corpus

    # Two planted package roots (purelib and platlib): a vendored copy of a stdlib:test file, a
    # file duplicated across roots, a non-UTF-8 file, nested packages, and files in the order
    # the loader must sort them into.
    held_out = load_documents("stdlib:test", max_docs=3)[0][2]
    pure, plat = tmp_path / "pure", tmp_path / "plat"
    files = {
        pure / "zpkg" / "__init__.py": "z = 1\n",
        pure / "apkg" / "mod.py": "def f():\n    return 2\n",
        pure / "apkg" / "vendored.py": held_out.text,
        pure / "bad.py": None,
        plat / "cpkg" / "dup.py": "def f():\n    return 2\n",
        plat / "cpkg" / "fast.py": "import zpkg\n",
    }
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"\xff\xfe bad" if text is None else text.encode())
    monkeypatch.setattr(quanta.lm.corpus, "_site_roots", lambda: [plat, pure])
    docs, skipped = load_documents("site-packages")
    assert [d.name for d in docs] == [
        "site-packages/cpkg/dup.py",  # the first copy of the duplicated text is kept
        "site-packages/cpkg/fast.py",
        "site-packages/zpkg/__init__.py",
    ]
    assert skipped == 1 and held_out.text not in {d.text for d in docs}
    both, _ = load_documents("stdlib:test+site-packages", max_docs=5)
    assert [d.name for d in both] == [d.name for d in load_documents("stdlib:test", max_docs=5)[0]]
    tail = load_documents("stdlib:test+site-packages")[0][-3:]
    assert [d.name for d in tail] == [d.name for d in docs]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p / "missing", "does not exist"),
        (lambda p: (p / "x.parquet").write_bytes(b"PAR1") and p / "x.parquet", "Unknown corpus"),
        (lambda p: (p / "e").mkdir() or p / "e", "holds no readable documents"),
        (lambda p: (p / "bad.jsonl").write_text("{oops\n") and p / "bad.jsonl", "is not JSON"),
    ],
)
def test_bad_corpora(tmp_path, make, message):
    from quanta._validation import QuantaInputError

    with pytest.raises(QuantaInputError, match=message):
        load_documents(make(tmp_path))


def test_losses_and_analyze_end_to_end_through_the_cli(suite_dir, tmp_path):
    out = tmp_path / "L"
    args = ["lm", "losses", "--suite", str(suite_dir), "--max-docs", "8", "--max-len", "128"]
    res = CliRunner().invoke(app, [*args, "--out", str(out), "--quiet"])
    assert res.exit_code == 0, res.output
    losses = np.load(out / "losses.npy", mmap_mode="r")
    index = pd.read_parquet(out / "corpus" / "index.parquet")
    models = pd.read_parquet(out / "models.parquet")
    assert losses.shape == (len(index), 4) and losses.dtype == np.float32
    assert models["mean_loss"].is_monotonic_decreasing
    assert models["head"].tolist() == ["chunked"] * 4  # the fast path ran, never the fallback
    np.testing.assert_allclose(losses.mean(axis=0), models["mean_loss"], rtol=1e-5)
    # A second run is complete; a different corpus into the same dir is refused untouched.
    before = (out / "losses.npy").read_bytes()
    again = CliRunner().invoke(app, [*args, "--out", str(out), "--quiet"])
    assert again.exit_code == 0
    other = CliRunner().invoke(app, [*args[:-2], "--max-len", "64", "--out", str(out)])
    assert other.exit_code == 2 and "different config" in other.output
    assert (out / "losses.npy").read_bytes() == before
    res = CliRunner().invoke(app, ["lm", "analyze", str(out), "--bootstrap", "100"])
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "analysis" / "analysis.json").read_text())
    assert summary["fit"]["success"] and summary["fit"]["alpha"] > 0
    assert summary["n_tokens"] == len(index)
    # The pure law is a line in log-log: its slope and R² are ordinary least squares there.
    x, y = np.log(models["n_params"].to_numpy(float)), np.log(models["mean_loss"].to_numpy(float))
    slope, intercept = np.polyfit(x, y, 1)
    r2 = 1 - ((y - (slope * x + intercept)) ** 2).sum() / ((y - y.mean()) ** 2).sum()
    assert summary["fit"]["alpha"] == pytest.approx(-slope, rel=1e-6)
    assert summary["fit"]["r2_loglog"] == pytest.approx(r2, rel=1e-6)
    assert f"R² {r2:.4f} in log-log" in res.output
    for fig in ("mean_loss", "loss_distribution", "token_curves"):
        assert (out / "analysis" / f"{fig}.png").stat().st_size > 10_000
    show = CliRunner().invoke(app, ["lm", "show", str(out), "--kind", "any", "--n", "2"])
    assert show.exit_code == 0 and "losses:" in show.output


def test_checkpoint_suite_is_analyzed_over_steps(suite_dir, tmp_path):
    out = tmp_path / "C"
    run_losses(str(suite_dir), "stdlib:test", out, checkpoints="neox-h48-l2", max_docs=4)
    res = CliRunner().invoke(app, ["lm", "analyze", str(out), "--bootstrap", "0"])
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "analysis" / "analysis.json").read_text())
    assert summary["axis"] == "step"
    assert [m["revision"] for m in summary["models"]] == ["step1", "step6", "step40"]


class _FillsUp:
    """A file that takes ``room`` more bytes and then fails like a full disk: the bytes that
    fit reach the file, the rest raises ENOSPC."""

    def __init__(self, fh, room):
        self._fh, self._room = fh, room

    def write(self, data):
        if len(data) > self._room:
            self._fh.write(bytes(data)[: self._room])
            self._fh.flush()
            self._room = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._room -= len(data)
        return self._fh.write(data)

    def __getattr__(self, name):
        return getattr(self._fh, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._fh.close()


def _state(path):
    st = path.stat()
    return path.read_bytes(), st.st_ino, st.st_mtime_ns


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="tells files apart by /proc")
@pytest.mark.parametrize(
    ("target", "nth", "n_columns", "n_finished"),
    [
        ("columns/2.npy", 1, 2, 2),  # a model's losses: models 0 and 1 are done
        ("models.parquet", 3, 3, 2),  # its 3rd version, after model 2's column: 2 is redone
        ("losses.npy", 1, 4, 4),  # the assembly, after every model
    ],
)
def test_disk_full_mid_write_leaves_nothing_partial_and_a_rerun_completes(
    suite_dir, tmp_path, monkeypatch, target, nth, n_columns, n_finished
):
    args = ["lm", "losses", "--suite", str(suite_dir), "--max-docs", "3", "--max-len", "128"]
    clean, out = tmp_path / "clean", tmp_path / "R"
    assert CliRunner().invoke(app, [*args, "--quiet", "--out", str(clean)]).exit_code == 0
    room = 1000
    assert (clean / target).stat().st_size > room + 200  # so the disk fills mid-file
    # The fault is in the write itself: the nth file the writer opens for `target` (its
    # temporary file, or `target` itself if it wrote in place) fills up after `room` bytes.
    faulty = tmp_path.resolve() / "R" / target
    real_fdopen, opened, previous = os.fdopen, [], []

    def fdopen(fd, *a, **kw):
        fh = real_fdopen(fd, *a, **kw)
        where = Path(os.readlink(f"/proc/self/fd/{fd}"))
        if where.parent == faulty.parent and faulty.name in where.name:
            opened.append(where)
            if len(opened) == nth:
                previous.append((out / target).read_bytes() if (out / target).exists() else None)
                return _FillsUp(fh, room)
        return fh

    monkeypatch.setattr(os, "fdopen", fdopen)
    res = CliRunner().invoke(app, [*args, "--quiet", "--out", str(out)])
    monkeypatch.setattr(os, "fdopen", real_fdopen)
    assert len(opened) == nth, opened
    assert res.exit_code == 2, res.output
    message = f"error: [Errno 28] No space left on device: '{out / target}'"
    assert res.output.strip().splitlines() == [message]
    # `target` as it was before the failed write (absent, or its previous version), no
    # temporary file left, the run still unfinished.
    if previous[0] is None:
        assert not (out / target).exists()
    else:
        assert (out / target).read_bytes() == previous[0]
    assert [p for p in out.rglob("*") if p.name.startswith(".")] == []
    assert json.loads((out / "manifest.json").read_text())["status"] == "running"
    columns = sorted(p.name for p in (out / "columns").iterdir())
    assert columns == [f"{i}.npy" for i in range(n_columns)]
    finished = [f"{i}.npy" for i in range(n_finished)]
    assert pd.read_parquet(out / "models.parquet")["model"].tolist() == list(range(n_finished))
    assert not (out / "losses.npy").exists()
    before = {name: _state(out / "columns" / name) for name in finished}
    # With the fault gone a rerun completes: finished columns are reused, not rewritten.
    again = CliRunner().invoke(app, [*args, "--quiet", "--out", str(out)])
    assert again.exit_code == 0, again.output
    assert {name: _state(out / "columns" / name) for name in finished} == before
    assert (out / "losses.npy").read_bytes() == (clean / "losses.npy").read_bytes()
    for i in range(4):
        name = f"columns/{i}.npy"
        assert (out / name).read_bytes() == (clean / name).read_bytes()
    timing = ["seconds", "tokens_per_second"]
    pd.testing.assert_frame_equal(
        pd.read_parquet(out / "models.parquet").drop(columns=timing),
        pd.read_parquet(clean / "models.parquet").drop(columns=timing),
    )
    assert [p for p in out.rglob("*") if p.name.startswith(".")] == []


def test_classification_rules():
    n = np.array([1e6, 1e7, 1e8, 1e9])
    L = np.array(
        [
            [9.0, 6.0, 0.2, 0.1],  # monogenic at index 2
            [9.0, 0.2, 0.1, 0.1],  # monogenic at index 1
            [9.0, 4.0, 0.2, 0.1],  # 4.0 is not > 5: not monogenic
            [3.0, 2.3, 1.6, 0.9],  # polygenic: slope -0.304 per e-fold, perfectly linear
            [3.0, 2.9, 2.8, 2.7],  # slope too shallow
            [3.0, 1.0, 2.5, 0.1],  # steep but not linear
        ]
    )
    df = classify_tokens(L, n)
    assert df["mono_index"].tolist() == [2, 1, -1, -1, -1, -1]
    assert df["polygenic"].tolist() == [False, False, False, True, False, False]
    assert df["r2"].iloc[3] == pytest.approx(1.0)


def test_a_suite_of_models_with_different_tokenizers_is_refused(suite_dir, tmp_path):
    import shutil

    from quanta.lm.minisuite import train_tokenizer

    info = json.loads((suite_dir / "suite.json").read_text())["models"]
    first = suite_dir / info[0]["path"] / info[0]["final"]
    other = tmp_path / "other"
    shutil.copytree(suite_dir / info[1]["path"] / info[1]["final"], other)
    for f in other.glob("*token*"):
        f.unlink()
    texts = [d.text for d in load_documents("stdlib:train", max_docs=5)[0]]
    train_tokenizer(texts[::-1], 320, other)  # another BPE: other merges, other ids
    out = tmp_path / "L"
    res = CliRunner().invoke(
        app, ["lm", "losses", "--suite", f"{first},{other}", "--max-docs", "2", "--out", str(out)]
    )
    assert res.exit_code == 2, res.output
    text = " ".join(res.output.split())
    assert "must share one tokenizer" in text and "'other'" in text and "Traceback" not in text
    assert not out.exists()
    # The same models with the same tokenizer are accepted.
    same = tmp_path / "same"
    shutil.copytree(suite_dir / info[1]["path"] / info[1]["final"], same)
    res = CliRunner().invoke(
        app,
        ["lm", "losses", "--suite", f"{first},{same}", "--max-docs", "2", "--out", str(out)],
    )
    assert res.exit_code == 0, res.output


@pytest.mark.parametrize(
    ("suite", "message"),
    [
        ("/nonexistent/model", "does not exist"),
        ("EleutherAI/pythia-70m", "hub is unreachable"),
    ],
)
def test_bad_suites_fail_fast_with_one_line(tmp_path, suite, message, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "o"
    res = CliRunner().invoke(app, ["lm", "losses", "--suite", suite, "--out", str(out)])
    assert res.exit_code == 2 and message in res.output, res.output
    assert len(res.output.strip().splitlines()) == 1 and not out.exists()


def test_vocabulary_mismatch_is_refused(suite_dir, tok_model):
    from quanta._validation import QuantaInputError
    from quanta.lm.corpus import TokenizedCorpus

    _, model = tok_model
    big = model.config.vocab_size + 5
    corpus = TokenizedCorpus(np.array([1, big], np.int32), np.array([0, 2]), ["d"], 1024, False)
    with pytest.raises(QuantaInputError, match="vocabulary mismatch"):
        token_losses(model, corpus)


def test_analyze_refuses_what_is_not_a_finished_losses_directory(suite_dir, tmp_path):
    res = CliRunner().invoke(app, ["lm", "analyze", str(suite_dir)])
    assert res.exit_code == 2 and "holds a 'lm.suite' result, not 'lm.losses'" in res.output
    res = CliRunner().invoke(app, ["lm", "analyze", str(tmp_path)])
    assert res.exit_code == 2 and "'quanta lm losses'" in res.output


def test_documents_are_never_scored_past_the_models_context(suite_dir, tmp_path):
    # The tiny suite is trained (and built) with a 256-token context: an explicit longer
    # --max-len is refused before anything is written, the default truncates at the context.
    context = json.loads(
        (suite_dir / "models" / "neox-h8-l1" / "step40" / "config.json").read_text()
    )
    assert context["max_position_embeddings"] == build_suite_config("tiny").context == 256
    out = tmp_path / "L"
    args = ["lm", "losses", "--suite", str(suite_dir), "--max-docs", "4", "--quiet"]
    result = CliRunner().invoke(app, [*args, "--max-len", "257", "--out", str(out)])
    assert result.exit_code == 2 and not out.exists()
    assert "max_len 257 exceeds the context model 'neox-h8-l1' was built for (256" in result.output
    result = CliRunner().invoke(app, [*args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    corpus = load_corpus(out / "corpus")
    assert corpus.max_len == 256 and corpus.lengths.max() == 256
    assert json.loads((out / "manifest.json").read_text())["config"]["max_len"] == 256


def test_windows_score_consecutive_pieces_of_each_document(suite_dir, tok_model, tmp_path):
    # --windows 3 --max-len 64: each document's tokens in pieces of 64, at most three, each
    # scored from its own start. Oracle: the whole documents tokenized here and cut by a
    # plain loop; the losses by one forward per piece through the model's own logits.
    tok, _ = tok_model
    args = ["lm", "losses", "--suite", str(suite_dir), "--max-docs", "5", "--max-len", "64"]
    bad = CliRunner().invoke(app, [*args, "--windows", "0", "--out", str(tmp_path / "bad")])
    assert bad.exit_code == 2 and "windows" in bad.output and not (tmp_path / "bad").exists()
    out = tmp_path / "W"
    res = CliRunner().invoke(app, [*args, "--windows", "3", "--quiet", "--out", str(out)])
    assert res.exit_code == 0, res.output
    corpus = load_corpus(out / "corpus")
    expected_pieces, expected_names = [], []
    for doc in load_documents("stdlib:test", max_docs=5)[0]:
        ids = tok(doc.text, add_special_tokens=False)["input_ids"]
        for w in range(3):
            piece = ids[64 * w : 64 * (w + 1)]
            if len(piece) >= 2:
                expected_pieces.append(piece)
                expected_names.append(doc.name if w == 0 else f"{doc.name}#{w}")
    assert corpus.names == expected_names and len(expected_names) > 5  # long documents cut
    assert [corpus.doc(d).tolist() for d in range(corpus.n_docs)] == expected_pieces
    losses = np.load(out / "losses.npy")
    model = load_model(resolve_suite(str(suite_dir))[-1])
    np.testing.assert_allclose(losses[:, -1], _reference_losses(model, corpus), atol=1e-5)
    config = json.loads((out / "manifest.json").read_text())["config"]
    assert config["windows"] == 3
    one = tmp_path / "one"  # the default keeps the key out (earlier runs keep their hash)
    assert CliRunner().invoke(app, [*args, "--quiet", "--out", str(one)]).exit_code == 0
    assert "windows" not in json.loads((one / "manifest.json").read_text())["config"]
