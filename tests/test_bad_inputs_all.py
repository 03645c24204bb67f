"""Issue 21, part 4, for every command: a bad corpus, device, executor, suite, input directory
or output path is refused in one line, exit 2, before any work and with nothing written.

Each case keeps the command's other inputs good (a tiny parity run, the shared tiny suite), so
it is the bad input that must stop it; a command that missed it would start working on tiny
arguments and fail the test by exiting 0 or writing files."""

import pytest
from typer.testing import CliRunner

from cli_args import TINY_PARITY_TRAIN
from quanta.cli import app

SWEEP = [
    "parity",
    "sweep",
    "--experiment",
    "data",
    *TINY_PARITY_TRAIN[2:-2],  # the config keys, without --quiet --no-figures
    "--grid",
    "n_train=100,200",
    "--quiet",
]
SUITE_TRAIN = ["lm", "suite", "train", "--preset", "tiny"]
REPRODUCE = ["reproduce", "--preset", "tiny"]


def _losses(ctx):
    return ["lm", "losses", "--suite", ctx["suite"], "--corpus", "stdlib:test", "--max-docs", "2"]


# (id, argv from the context, a fragment the one line must hold). In ``ctx``: "out" (a new
# directory), "nope" (a path that does not exist), "under_file" (a path below a regular
# file: not writable as a directory), "parity" (a finished tiny parity run), "suite".
CASES = [
    (
        "parity-train/device",
        lambda c: [*TINY_PARITY_TRAIN, "--device", "tpu", "--out", c["out"]],
        "tpu",
    ),
    (  # a torch device this machine does not have (the config allows cuda[:i])
        "parity-train/device-unavailable",
        lambda c: [*TINY_PARITY_TRAIN, "--device", "cuda:7", "--out", c["out"]],
        "cuda:7",
    ),
    ("parity-train/out", lambda c: [*TINY_PARITY_TRAIN, "--out", c["under_file"]], "afile"),
    ("parity-sweep/executor", lambda c: [*SWEEP, "--executor", "nope", "--out", c["out"]], "nope"),
    ("parity-sweep/device", lambda c: [*SWEEP, "--device", "tpu", "--out", c["out"]], "tpu"),
    ("parity-sweep/out", lambda c: [*SWEEP, "--out", c["under_file"]], "afile"),
    ("parity-analyze/source", lambda c: ["parity", "analyze", c["nope"]], "nope"),
    (
        "parity-analyze/out",
        lambda c: ["parity", "analyze", c["parity"], "--out", c["under_file"]],
        "afile",
    ),
    (
        "lm-losses/corpus",
        lambda c: [*_losses(c)[:4], "--corpus", c["nope"], "--out", c["out"]],
        "nope",
    ),
    (
        "lm-losses/suite",
        lambda c: ["lm", "losses", "--suite", c["nope"], "--out", c["out"]],
        "nope",
    ),
    ("lm-losses/device", lambda c: [*_losses(c), "--device", "tpu", "--out", c["out"]], "tpu"),
    (
        "lm-losses/executor",
        lambda c: [*_losses(c), "--executor", "nope", "--out", c["out"]],
        "nope",
    ),
    ("lm-losses/out", lambda c: [*_losses(c), "--out", c["under_file"]], "afile"),
    (
        "lm-suite-train/corpus",
        lambda c: [*SUITE_TRAIN, "--corpus", c["nope"], "--out", c["out"]],
        "nope",
    ),
    (
        "lm-suite-train/device",
        lambda c: [*SUITE_TRAIN, "--device", "tpu", "--out", c["out"]],
        "tpu",
    ),
    ("lm-suite-train/out", lambda c: [*SUITE_TRAIN, "--out", c["under_file"]], "afile"),
    ("lm-analyze/source", lambda c: ["lm", "analyze", c["nope"]], "nope"),
    ("lm-dynamics/source", lambda c: ["lm", "dynamics", c["nope"]], "nope"),
    ("lm-show/source", lambda c: ["lm", "show", c["nope"]], "nope"),
    ("qdg-run/losses", lambda c: ["qdg", "run", c["nope"], "--out", c["out"]], "nope"),
    ("qdg-report/source", lambda c: ["qdg", "report", c["nope"]], "nope"),
    (
        "qdg-export/source",
        lambda c: ["qdg", "export", c["nope"], "--format", "parquet", "--out", c["out"]],
        "nope",
    ),
    (
        "qdg-scale/source",
        lambda c: ["qdg", "scale", c["nope"], "--losses", c["nope"], "--out", c["out"]],
        "nope",
    ),
    ("qdg-parity/source", lambda c: ["qdg", "parity", c["nope"], "--out", c["out"]], "nope"),
    (
        "qdg-parity/device",
        lambda c: ["qdg", "parity", c["parity"], "--device", "tpu", "--out", c["out"]],
        "tpu",
    ),
    ("qdg-parity/out", lambda c: ["qdg", "parity", c["parity"], "--out", c["under_file"]], "afile"),
    (
        "qdg-compare/runs",
        lambda c: ["qdg", "compare", c["nope"], c["nope"], "--out", c["out"]],
        "nope",
    ),
    (
        "qdg-compare/device",
        lambda c: [
            "qdg",
            "compare",
            "--parity",
            c["parity"],
            c["parity"],
            "--device",
            "tpu",
            "--out",
            c["out"],
        ],
        "tpu",
    ),
    (
        "qdg-validate/out",
        lambda c: ["qdg", "validate", "--samples", "50", "--out", c["under_file"]],
        "afile",
    ),
    (
        "qdg-envelope/out",
        lambda c: ["qdg", "envelope", "--samples", "50", "--out", c["under_file"]],
        "afile",
    ),
    ("theory/out", lambda c: ["theory", "--seeds", "1", "--out", c["under_file"]], "afile"),
    ("reproduce/corpus", lambda c: [*REPRODUCE, "--corpus", c["nope"], "--out", c["out"]], "nope"),
    ("reproduce/device", lambda c: [*REPRODUCE, "--device", "tpu", "--out", c["out"]], "tpu"),
    ("reproduce/executor", lambda c: [*REPRODUCE, "--executor", "nope", "--out", c["out"]], "nope"),
    ("reproduce/out", lambda c: [*REPRODUCE, "--out", c["under_file"]], "afile"),
    ("report/source", lambda c: ["report", c["nope"]], "nope"),
    ("verify/source", lambda c: ["verify", c["nope"]], "nope"),
]


@pytest.fixture(scope="module")
def parity_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("parity") / "run"
    res = CliRunner().invoke(app, [*TINY_PARITY_TRAIN, "--out", str(out)])
    assert res.exit_code == 0, res.output
    return out


@pytest.fixture
def ctx(tmp_path, parity_run, request):
    (tmp_path / "afile").write_text("a regular file")
    # The suite only where a case needs it (training it is the slow part of this module).
    needs_suite = request.node.callspec.id.startswith("lm-losses/")
    suite = request.getfixturevalue("tiny_suite") if needs_suite else tmp_path / "no-suite"
    return {
        "out": tmp_path / "out",
        "nope": tmp_path / "nope",
        "under_file": tmp_path / "afile" / "out",
        "parity": parity_run,
        "suite": suite,
    }


def _files(*roots):
    return {p for root in roots for p in root.rglob("*")}


@pytest.mark.parametrize(("argv", "fragment"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_bad_input_is_one_line_exit_2_and_writes_nothing(ctx, tmp_path, argv, fragment):
    before = _files(tmp_path, ctx["parity"], ctx["suite"])
    res = CliRunner().invoke(app, [str(a) for a in argv(ctx)])
    lines = res.output.strip().splitlines()
    assert res.exit_code == 2, res.output
    assert len(lines) == 1 and lines[0].startswith("error: "), res.output
    assert fragment in lines[0]
    assert _files(tmp_path, ctx["parity"], ctx["suite"]) == before  # nothing new, nothing gone
