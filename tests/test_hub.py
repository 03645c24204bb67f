"""The model hub through huggingface_hub (offline mode, endpoint, cache), the hub suites, and the
declared dependencies. No request leaves this machine: the hub is switched off, or a local HTTP
server on 127.0.0.1 stands in for it as a mirror (HF_ENDPOINT)."""

import http.server
import json
import os
import re
import subprocess
import sys
import threading
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import quanta
from quanta._validation import QuantaInputError
from quanta.cli import app
from quanta.lm.suite import PYTHIA, SUITES, non_embedding_params, resolve_suite

ROOT = Path(__file__).resolve().parents[1]
SRC = Path(quanta.__file__).resolve().parent
ENV = {**os.environ, "PYTHONPATH": f"{SRC.parent}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}


def _no_request(*_, **__):
    raise AssertionError("offline: no request may be sent to the hub")


# ----------------------------------------------------------------------------- offline mode


@pytest.mark.parametrize("variable", ["HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"])
def test_offline_hub_suite_is_one_line_naming_the_variable_and_nothing_is_written(
    tmp_path, monkeypatch, variable
):
    import huggingface_hub
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv(variable, "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty"))
    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", _no_request)
    out = tmp_path / "o"
    res = CliRunner().invoke(app, ["lm", "losses", "--suite", "pythia-v0", "--out", str(out)])
    assert res.exit_code == 2, res.output
    text = " ".join(res.output.split())
    assert len(res.output.strip().splitlines()) == 1, res.output
    assert "Cannot load 'pythia-70m-v0@step143000'" in text
    assert f"offline mode is on ({variable}=1" in text and "--suite DIR" in text
    assert "Traceback" not in text and not out.exists()


def test_a_revision_missing_from_the_cache_is_refused_offline(tmp_path, monkeypatch):
    from huggingface_hub import constants

    from quanta.lm.suite import ModelRef, where_loaded

    model_dir = tmp_path / "m"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}")
    _into_hub_cache(model_dir, tmp_path / "cache", "quanta-test/tiny", "step143000")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    where, kwargs = where_loaded(ModelRef("tiny", "quanta-test/tiny", "step143000"))
    assert (where, kwargs) == (
        "quanta-test/tiny",
        {"revision": "step143000", "local_files_only": True},
    )
    with pytest.raises(QuantaInputError, match=r"offline mode is on .* not in the local cache"):
        where_loaded(ModelRef("tiny", "quanta-test/tiny", "step1000"))


def test_offline_mode_set_through_huggingface_hub_itself_is_honoured(monkeypatch):
    import huggingface_hub
    from huggingface_hub import constants

    from quanta.lm.suite import hub_access

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # as read at import, or set in code
    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", _no_request)
    assert hub_access("EleutherAI/pythia-70m-v0", "step143000") == ("offline", "HF_HUB_OFFLINE")


def _tiny_model_dir(tmp_path: Path) -> Path:
    """A saved GPT-NeoX with its own BPE tokenizer (seconds to build)."""
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    from quanta.lm.corpus import load_documents
    from quanta.lm.minisuite import train_tokenizer

    model_dir = tmp_path / "tiny"
    texts = [d.text for d in load_documents("stdlib:train", max_docs=5)[0]]
    tok = train_tokenizer(texts, 300, model_dir)
    cfg = GPTNeoXConfig(
        vocab_size=len(tok),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=1024,
    )
    torch.manual_seed(0)
    GPTNeoXForCausalLM(cfg).save_pretrained(model_dir)
    return model_dir


def _into_hub_cache(model_dir: Path, cache: Path, repo_id: str, revision: str) -> None:
    """Lay ``model_dir`` out as huggingface_hub's cache holds a download of ``repo_id`` at
    ``revision``: ``models--org--name/snapshots/<commit>/`` and ``refs/<revision>``."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for f in model_dir.iterdir():
        (snapshot / f.name).write_bytes(f.read_bytes())
    (repo / "refs").mkdir()
    (repo / "refs" / revision).write_text(commit)


@pytest.mark.slow  # two processes load torch and transformers (~10 s of CPU)
def test_a_model_in_the_local_cache_loads_offline_with_the_same_losses(tmp_path):
    model_dir = _tiny_model_dir(tmp_path)
    cache = tmp_path / "hf-cache"
    _into_hub_cache(model_dir, cache, "quanta-test/tiny", "step143000")
    args = ["lm", "losses", "--corpus", "stdlib:test", "--max-docs", "3"]
    # The oracle: the same weights from their directory, in this process.
    res = CliRunner().invoke(app, [*args, "--suite", str(model_dir), "--out", str(tmp_path / "L")])
    assert res.exit_code == 0, res.output
    # The hub id, offline, in a fresh process whose huggingface_hub reads the environment.
    env = {**ENV, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache)}
    hub_out = tmp_path / "H"
    suite = "quanta-test/tiny@step143000"
    cmd = [sys.executable, "-m", "quanta.cli", *args, "--suite", suite, "--out", str(hub_out)]
    run = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    np.testing.assert_array_equal(
        np.load(hub_out / "losses.npy"), np.load(tmp_path / "L" / "losses.npy")
    )


# ----------------------------------------------------------------------------- a mirror endpoint


class _Mirror(http.server.BaseHTTPRequestHandler):
    """Answers HEAD like the hub: 200 for ``org/tiny`` at ``main`` / ``step1000``, else the
    hub's 404 with its error code."""

    def do_HEAD(self):
        match = re.fullmatch(r"/org/(\w+)/resolve/(\w+)/config.json", self.path)
        if match and match.group(1) == "tiny" and match.group(2) in ("main", "step1000"):
            self.send_response(200)
            self.send_header("ETag", '"abc"')
            self.send_header("X-Repo-Commit", "0" * 40)
            self.send_header("Content-Length", "2")
        else:
            code = "RevisionNotFound" if match and match.group(1) == "tiny" else "RepoNotFound"
            self.send_response(404)
            self.send_header("X-Error-Code", code)
            self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_):
        pass


def test_hub_access_asks_the_endpoint_huggingface_hub_is_configured_with():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Mirror)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    # One process that reads HF_ENDPOINT at import, as huggingface_hub does: it asks the mirror,
    # waits for a line on stdin (the mirror is shut down meanwhile), then asks again.
    code = (
        "import json,sys;from quanta.lm.suite import hub_access\n"
        "ask=lambda:[hub_access('org/tiny',r)[0] for r in ('step1000','step7')]"
        "+[hub_access('org/other')[0]]\n"
        "print(json.dumps(ask()),flush=True);sys.stdin.readline();print(json.dumps(ask()))"
    )
    env = {
        **ENV,
        "HF_ENDPOINT": f"http://127.0.0.1:{server.server_address[1]}",
        "NO_PROXY": "127.0.0.1",
        "HF_HUB_ETAG_TIMEOUT": "5",
    }
    env.pop("HF_HUB_OFFLINE", None)
    env.pop("TRANSFORMERS_OFFLINE", None)
    child = subprocess.Popen(
        [sys.executable, "-c", code],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        first = child.stdout.readline()
        server.shutdown()
        server.server_close()
        second, err = child.communicate("go\n", timeout=120)
    finally:
        child.kill()
    assert json.loads(first) == ["ok", "missing", "missing"], err[-2000:]
    assert json.loads(second) == ["unreachable"] * 3  # gone: not a hang, not "missing"


# ----------------------------------------------------------------------------- hub suites

#: (layers, width) of each Pythia size (the Pythia model cards), for an independent count.
SHAPES = {
    "70m": (6, 512),
    "160m": (12, 768),
    "410m": (24, 1024),
    "1b": (16, 2048),
    "1.4b": (24, 2048),
    "2.8b": (32, 2560),
    "6.9b": (32, 4096),
    "12b": (36, 5120),
}
#: PAPER.md §3's non-embedding counts (70m … 6.9b).
PAPER_N = [18_915_328, 85_056_000, 302_311_424, 805_736_448, 1_208_602_624]
PAPER_N += [2_517_652_480, 6_444_163_072]


def test_pythia_suites_hold_the_papers_sizes_counted_on_the_real_architecture():
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    assert list(PYTHIA.values())[:7] == PAPER_N
    for size, (layers, d) in SHAPES.items():
        cfg = GPTNeoXConfig(
            hidden_size=d,
            num_hidden_layers=layers,
            num_attention_heads=d // 128 if d >= 2048 else 8,
            intermediate_size=4 * d,
        )
        with torch.device("meta"):  # shapes only: a 12b model without its 48 GB
            n = non_embedding_params(GPTNeoXForCausalLM(cfg))
        assert n == PYTHIA[f"pythia-{size}"], size
    v0 = resolve_suite("pythia-v0")
    assert [r.source for r in v0] == [f"EleutherAI/pythia-{s}-v0" for s in SHAPES]
    assert {r.revision for r in v0} == {"step143000"}
    assert [SUITES["pythia-v0"].models[r.name] for r in v0] == list(PYTHIA.values())
    today = resolve_suite("pythia")
    assert [r.source for r in today] == [f"EleutherAI/pythia-{s}" for s in SHAPES]


def test_pythia_v0_has_the_papers_revisions_only():
    refs = resolve_suite("pythia-v0", checkpoints="pythia-70m-v0")
    assert [r.revision for r in refs][:2] == ["step1000", "step2000"]
    assert refs[-1].label() == "pythia-70m-v0@step143000"
    refs = resolve_suite("pythia-v0", checkpoints="all", revisions="step143000,step5000")
    assert len(refs) == 16 and refs[1].label() == "pythia-70m-v0@step143000"
    for bad in ("step512", "step0", "step143500"):
        with pytest.raises(QuantaInputError, match=f"'pythia-v0' has no revision '{bad}'"):
            resolve_suite("pythia-v0", checkpoints="pythia-70m-v0", revisions=bad)
    assert resolve_suite("pythia", checkpoints="pythia-70m", revisions="step512")  # today's has it


@pytest.mark.parametrize(
    ("spec", "hint"),
    [("pythia-v1", "did you mean 'pythia-v0'?"), ("pytia", "did you mean 'pythia'?"), ("gpt2", "")],
)
def test_an_unknown_suite_name_is_one_line_with_the_closest(tmp_path, spec, hint):
    out = tmp_path / "o"
    res = CliRunner().invoke(app, ["lm", "losses", "--suite", spec, "--out", str(out)])
    assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1, res.output
    text = " ".join(res.output.split())
    assert f"Unknown suite {spec!r}" in text and hint in text and "org/name" in text
    assert ("did you mean" in text) == bool(hint) and not out.exists()


def test_suite_show_prints_the_table():
    res = CliRunner().invoke(app, ["lm", "suite", "show", "pythia-v0"])
    assert res.exit_code == 0, res.output
    rows = re.findall(r"(EleutherAI/pythia-\S+-v0) │\s+([\d,]+)", res.output)
    assert [(h, int(n.replace(",", ""))) for h, n in rows] == [
        (f"EleutherAI/pythia-{s}-v0", PYTHIA[f"pythia-{s}"]) for s in SHAPES
    ]
    assert "step1000 … step143000 (every 1000)" in res.output
    res = CliRunner().invoke(app, ["lm", "suite", "show", "pythia-v"])
    assert res.exit_code == 2 and "did you mean 'pythia-v0'?" in res.output


# ----------------------------------------------------------------------------- dependencies


def _imports(tree) -> list[tuple[str, bool]]:
    """(top-level name, at module level) of every absolute import in a module."""
    import ast

    found = []
    lazy = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Try | ast.If):
            lazy.update(id(n) for n in ast.walk(node) if n is not node)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found += [(n.split(".")[0], id(node) not in lazy) for n in names]
    return found


def _dist(requirement: str) -> str:
    name = re.match(r"[A-Za-z0-9._-]+", requirement).group(0)
    return re.sub(r"[-_.]+", "-", name).lower()  # PEP 503


def test_every_imported_package_is_declared():
    import ast

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = {_dist(r) for r in project["dependencies"]}
    extras = {_dist(r) for reqs in project["optional-dependencies"].values() for r in reqs}
    to_dist = packages_distributions()
    missing = []
    for path in sorted(SRC.rglob("*.py")):
        for name, eager in _imports(ast.parse(path.read_text())):
            if name in sys.stdlib_module_names or name == "quanta":
                continue
            dists = {_dist(d) for d in to_dist.get(name, [name])}
            # An import at module level runs on `import quanta…`: it needs a core dependency;
            # one inside a function, try or if may come from an extra.
            if not dists & (core if eager else core | extras):
                missing.append(f"{path.relative_to(SRC.parent)}: {name} ({', '.join(dists)})")
    assert not missing, missing


def test_transformers_floor_has_the_dtype_argument_the_loader_passes():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    floor = next(r for r in project["dependencies"] if _dist(r) == "transformers")
    version = tuple(int(v) for v in re.search(r">=\s*([\d.]+)", floor).group(1).split("."))
    # `dtype=` replaced `torch_dtype=` in transformers 4.56.0 (PR #39782); an older release
    # would take `dtype` as a config attribute and load float32 whatever was asked.
    assert version >= (4, 56), floor
    assert "dtype=" in (SRC / "lm" / "suite.py").read_text()
