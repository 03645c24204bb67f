"""Re-run the probes of issue 21 (run directories you can share, run twice and trust) against
one source tree, so a closing note can quote before → after.

Every probe runs ``quanta`` as a user would (``python -m quanta.cli``, a fresh process, with
``PYTHONPATH=TREE/src``) on ``--preset tiny`` directories under ``--work``, and prints one row:
the probe, the command, its exit code, the first telling line of stderr (the first line with
error / warning / damaged / recomputing / terminated / interrupted / Traceback, else the first
non-empty one), the seconds it took, and what became of the finished files:

- damage probes: ``intact N/M`` (files of the finished base directory other than the damaged
  one and the bookkeeping files — manifests, stages.json, report.html, logs — byte-identical
  afterwards) and what became of the damaged file (restored = byte-identical to the base again);
- the garbled / truncated model weights: also whether ``lm/losses/losses.npy`` is still the
  base's (the issue saw other numbers: mean loss 4.275 → 5.415 nats);
- planted pickles: whether the pickle's code ran (it touches a marker file);
- text hygiene: how many raw ESC / DEL / U+202E characters the cluster browser's pages hold.

Usage (the lead runs it on the code after and on the commit before the issue-21 work)::

    nice -n 10 python benchmarks/probe_run_dirs.py --tree . --work /tmp/probes-after
    nice -n 10 python benchmarks/probe_run_dirs.py --tree /work/wt/i21-before --work /tmp/pb
    # one probe again, on the base directory of an earlier run:
    python benchmarks/probe_run_dirs.py --tree . --work /tmp/p2 --base /tmp/pa/base \
        --skip concurrent,damage,pickles,inputs,moved,sigterm

About 15-25 minutes on two loaded CPU cores (three full tiny reproductions, ~20 reruns).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

TELLING = re.compile(
    r"error|warning|damaged|recomput|terminated|interrupted|Traceback|Error|again", re.I
)
BOOKKEEPING = ("manifest.json", "stages.json", "report.html", "outputs.json", ".quanta.lock")
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# A parity run of a fraction of a second (tests/cli_args.py's TINY_PARITY_TRAIN).
TINY_TRAIN = [
    "parity",
    "train",
    "--n-tasks",
    "4",
    "--n-bits",
    "8",
    "--k",
    "2",
    "--widths",
    "4",
    "--steps",
    "30",
    "--batch-size",
    "32",
    "--test-per-task",
    "8",
    "--eval-points",
    "3",
    "--threads",
    "1",
    "--quiet",
    "--no-figures",
]


class Probe:
    """Runs ``quanta`` commands from one source tree and prints one row per probe."""

    def __init__(self, tree: Path, work: Path) -> None:
        self.tree, self.work = tree.resolve(), work.resolve()
        self.env = {**os.environ, "PYTHONPATH": str(self.tree / "src"), "COLUMNS": "200"}
        self.env.pop("QUANTA_DEBUG", None)

    def start(self, args: list[str]) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "quanta.cli", *map(str, args)],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
        )

    def run(self, args: list[str]) -> tuple[int, str, float, str]:
        """``(exit code, telling stderr line, seconds, whole output)`` of one command."""
        t0 = time.perf_counter()
        proc = self.start(args)
        stdout, stderr = proc.communicate()
        return proc.returncode, telling(stderr), time.perf_counter() - t0, stdout + stderr

    def row(self, probe: str, args: list[str], result: tuple[Any, ...], after: str) -> None:
        rc, line, seconds = result[:3]
        command = "quanta " + " ".join(str(a).replace(str(self.work), "W") for a in args)
        line = line.replace(str(self.work), "W")
        print(f"## {probe}\n   $ {command}\n   rc {rc} | {seconds:.1f} s | {line}\n   -> {after}")
        sys.stdout.flush()


def telling(stderr: str) -> str:
    lines = [ANSI.sub("", ln).strip() for ln in stderr.splitlines()]
    lines = [ln for ln in lines if ln and not set(ln) <= set("━─ ")]
    for ln in lines:
        if TELLING.search(ln):
            return ln[:220]
    return lines[0][:220] if lines else "(no stderr)"


def snapshot(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name not in BOOKKEEPING and "logs" not in p.relative_to(root).parts
    }


def intact(base: dict[str, bytes], root: Path, skip: str) -> str:
    same = sum(1 for rel, data in base.items() if rel != skip and _read(root / rel) == data)
    return f"intact {same}/{len(base) - (skip in base)}"


def _read(path: Path) -> bytes | None:
    return path.read_bytes() if path.is_file() else None


def damage(path: Path, *, truncate: bool) -> bytes:
    data = bytearray(path.read_bytes())
    if truncate:
        data = data[: len(data) // 2]
    else:
        for i in range(len(data) // 2, min(len(data), len(data) // 2 + 64)):
            data[i] ^= 0xFF
    path.write_bytes(bytes(data))
    return bytes(data)


def fate(path: Path, original: bytes, damaged: bytes) -> str:
    now = _read(path)
    if now is None:
        return "damaged file missing"
    if now == original:
        return "damaged file restored (identical)"
    if now == damaged:
        return "damaged file LEFT DAMAGED"
    return "damaged file rewritten (differs from base)"


PLANT = """
import os, pickle, sys
class Evil:
    def __reduce__(self):
        return (os.system, ("touch " + sys.argv[2],))
import torch
torch.save({"state": Evil()}, sys.argv[1])
"""


def plant_pickle(path: Path, marker: Path) -> None:
    """A torch pickle at ``path`` whose loading touches ``marker``; the run's manifest (if it
    records hashes) vouches for it, so it is the loader that is probed, not the hash check."""
    subprocess.run([sys.executable, "-c", PLANT, str(path), str(marker)], check=True)
    manifest = path.parent / "manifest.json"
    if manifest.is_file():
        data = json.loads(manifest.read_text())
        files = data.get("files")
        if isinstance(files, dict):
            sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
            from quanta.integrity import file_digest

            files[path.name] = {"size": path.stat().st_size, "xxh3_128": file_digest(path)}
            files.pop("model.safetensors", None)
            manifest.write_text(json.dumps(data))


def reproduce(out: Path, *more: str) -> list[str]:
    return ["reproduce", "--preset", "tiny", "--out", str(out), *more]


def probe_concurrent(p: Probe) -> None:
    """Two reproductions into one directory, the second started 20 s after the first."""
    out = p.work / "concurrent"
    t0 = time.perf_counter()
    first = p.start(reproduce(out))
    time.sleep(20)
    second = p.start(reproduce(out))
    results = []
    for proc in (first, second):
        _, err = proc.communicate()
        results.append((proc.returncode, telling(err), time.perf_counter() - t0))
    p.row("concurrent: first", reproduce(out), results[0], "started at 0 s")
    p.row("concurrent: second (+20 s)", reproduce(out), results[1], "started at 20 s")
    again = p.run(reproduce(out))
    p.row(
        "concurrent: a third run afterwards",
        reproduce(out),
        again,
        "directory usable" if again[0] == 0 else "DIRECTORY BROKEN",
    )


def probe_damage(p: Probe, base: Path, snap: dict[str, bytes], rel: str, truncate: bool) -> None:
    out = p.work / f"damage-{rel.replace('/', '_')}-{'trunc' if truncate else 'garbled'}"
    shutil.copytree(base, out, symlinks=True)
    original = (out / rel).read_bytes()
    damaged = damage(out / rel, truncate=truncate)
    verify = p.run(["verify", out])
    rerun = p.run(reproduce(out))
    losses = (out / "lm/losses/losses.npy").read_bytes() == snap.get("lm/losses/losses.npy")
    extra = f"; losses.npy as before: {'yes' if losses else 'NO'}" if "suite" in rel else ""
    report = out / "report.html"
    shown = f"; report.html written: {'yes' if report.exists() else 'no'}"
    what = "truncated" if truncate else "garbled (same size)"
    p.row(
        f"{what} {rel}: quanta verify",
        ["verify", out],
        verify,
        "names it" if rel in verify[3] else "does not name it",
    )
    p.row(
        f"{what} {rel}: reproduce again",
        reproduce(out),
        rerun,
        f"{intact(snap, out, rel)}; {fate(out / rel, original, damaged)}{extra}{shown}",
    )
    shutil.rmtree(out, ignore_errors=True)


def probe_pickles(p: Probe, base: Path) -> None:
    """Planted pickles: model.pt of a parity run (qdg parity), checkpoint.pt of an unfinished
    one (parity train resumes), and the same inside a reproduction (reproduce resumes)."""
    run = p.work / "pickle-model"
    p.run([*TINY_TRAIN, "--out", run])
    marker = p.work / "PWNED-model"
    (run / "model.safetensors").unlink(missing_ok=True)
    plant_pickle(run / "model.pt", marker)
    args = ["qdg", "parity", run, "--out", p.work / "pickle-model-qdg", "--width", "4"]
    args += ["--n", "20", "--ks", "2", "--n-init", "1"]
    res = p.run(args)
    p.row("planted pickle model.pt", args, res, f"pickle ran: {'YES' if marker.exists() else 'no'}")
    for name, out in (("parity train", p.work / "pickle-ckpt"), ("reproduce", None)):
        marker = p.work / f"PWNED-{name.replace(' ', '-')}"
        if out is None:
            out = p.work / "pickle-reproduce"
            shutil.copytree(base, out, symlinks=True)
            run, args = out / "toy/params", reproduce(out, "--only", "toy-params")
            stages = json.loads((out / "stages.json").read_text())
            stages.get("stages", stages).pop("toy-params", None)
            (out / "stages.json").write_text(json.dumps(stages))
        else:
            run, args = out, [*TINY_TRAIN, "--out", out]
            p.run(args)
        manifest = json.loads((run / "manifest.json").read_text())
        manifest["status"] = "running"
        (run / "manifest.json").write_text(json.dumps(manifest))
        plant_pickle(run / "checkpoint.pt", marker)
        res = p.run(args)
        ran = "YES" if marker.exists() else "no"
        p.row(f"planted pickle checkpoint.pt ({name})", args, res, f"pickle ran: {ran}")


def probe_inputs(p: Probe, base: Path) -> None:
    out = p.work / "nocorpus"
    args = reproduce(out, "--only", "lm", "--corpus", "/nonexistent.jsonl")
    res = p.run(args)
    left = sorted(q.relative_to(out).as_posix() for q in out.rglob("*")) if out.exists() else []
    p.row("missing corpus", args, res, f"written: {len(left)} files ({', '.join(left[:3])})")
    suite = base / "lm/suite"
    for name, data in (
        ("invalid UTF-8", b'{"text": "fine"}\n{"text": "bad \xff byte"}\n'),
        ("lone surrogate", b'{"text": "fine"}\n{"text": "a \\ud800 b"}\n'),
    ):
        corpus = p.work / f"{name.replace(' ', '-')}.jsonl"
        corpus.write_bytes(data)
        args = ["lm", "losses", "--suite", suite, "--corpus", corpus, "--out", p.work / name]
        res = p.run([*args, "--max-docs", "2"])
        written = (p.work / name).exists()
        p.row(f"{name} in a .jsonl corpus", args, res, f"output written: {written}")


def probe_moved(p: Probe, base: Path) -> None:
    moved = p.work / "elsewhere" / "moved"
    moved.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(base, p.work / "to-move", symlinks=True)
    (p.work / "to-move").rename(moved)
    for args in (reproduce(moved), ["verify", moved], ["report", moved]):
        res = p.run(args)
        reused = res[3].count("reused")
        p.row(f"moved run directory: {args[0]}", args, res, f"'reused' said {reused} times")


def probe_text(p: Probe, base: Path) -> None:
    """ESC, DEL and U+202E in the corpus text, through lm losses → qdg run → qdg report."""
    import textwrap as source

    text = Path(source.__file__).read_text()
    evil = " \x1b[31m red \x7f del \u202e reversed "
    # The three characters every ~60 characters, so the sampled tokens' contexts hold them.
    docs = [evil.join(text[j : j + 60] for j in range(i, i + 600, 60)) for i in range(0, 7200, 600)]
    corpus = p.work / "evil.jsonl"
    corpus.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    losses, clusters = p.work / "evil-losses", p.work / "evil-clusters"
    suite = base / "lm/suite"
    steps = [
        ["lm", "losses", "--suite", suite, "--corpus", corpus, "--out", losses, "--max-docs", "12"],
        [
            "qdg",
            "run",
            losses,
            "--out",
            clusters,
            "--model",
            "-1",
            "--threshold",
            "auto",
            "--n",
            "60",
            "--ks",
            "3,6",
        ],
        ["qdg", "report", clusters],
    ]
    steps[1] += ["--n", "60", "--ks", "3,6"]
    codes = []
    for args in steps:
        res = p.run(args)
        codes.append(res[0])
    pages = sorted(clusters.glob("*.html"))
    found = "".join(q.read_text() for q in pages)
    raw = ", ".join(f"{repr(c)[1:-1]} x{found.count(c)}" for c in ("\x1b", "\x7f", "\u202e"))
    shown = sum(found.count(rf">{c}</span>") for c in (r"\x1b", r"\x7f", r"\u202e"))
    after = f"steps rc {codes}; raw in pages: {raw}; shown as visible escapes: {shown}"
    p.row("ESC/DEL/U+202E in corpus text → browser", steps[-1], res, after)


def probe_sigterm(p: Probe) -> None:
    out = p.work / "term"
    t0 = time.perf_counter()
    proc = p.start(reproduce(out))
    time.sleep(15)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate()
    res = (proc.returncode, telling(err), time.perf_counter() - t0)
    p.row("SIGTERM 15 s into reproduce", reproduce(out), res, "")
    again = p.run(reproduce(out))
    p.row("rerun after SIGTERM", reproduce(out), again, f"'reused' said {again[3].count('reused')}")


def guarded(fn: Any, *args: Any) -> None:
    """Run one probe; a probe that breaks (the tree lacks what it uses) prints why and the
    others still run."""
    try:
        fn(*args)
    except Exception as exc:  # a probe of another tree may meet anything
        print(f"## {fn.__name__}: the probe itself failed: {type(exc).__name__}: {exc}")


def _step(path: Path) -> int:
    return int(path.parent.name.removeprefix("step"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", type=Path, default=Path("."), help="the quanta source tree")
    parser.add_argument("--work", type=Path, required=True, help="a new scratch directory")
    parser.add_argument("--skip", default="", help="probes to skip, comma-separated")
    parser.add_argument(
        "--base", type=Path, help="a finished tiny reproduction to use as the base (not rebuilt)"
    )
    args = parser.parse_args()
    if args.work.exists() and any(args.work.iterdir()):
        sys.exit(f"error: --work '{args.work}' is not empty; choose a new directory.")
    args.work.mkdir(parents=True, exist_ok=True)
    p = Probe(args.tree, args.work)
    rev = subprocess.run(
        ["git", "-C", str(p.tree), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    print(f"# probe_run_dirs: tree {p.tree} at {rev}, {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
    base = args.base.resolve() if args.base else p.work / "base"
    if args.base is None:
        res = p.run(reproduce(base))
        p.row("a tiny reproduction (the base of the damage probes)", reproduce(base), res, "")
    snap = snapshot(base)
    skip = set(args.skip.split(","))
    # The final weights of the suite's first model (what lm losses reads).
    first = sorted((base / "lm/suite/models").glob("*"))[:1]
    steps = sorted(first[0].glob("step*/model.safetensors") if first else [], key=_step)
    final = steps[-1] if steps else None
    targets = [
        ("toy/params/curves.parquet", True),
        ("toy/params/curves.parquet", False),
        ("lm/losses/losses.npy", False),
        ("lm/losses/models.parquet", True),
        ("qdg/clusters/grads.npy", False),
        ("toy/data/results.parquet", True),
        ("toy/params/analysis/exponents.parquet", False),
        ("lm/losses/analysis/analysis.json", True),
        ("qdg/validate/validate.parquet", False),
        ("theory/theory.json", False),
    ]
    if final is not None:
        rel = final.relative_to(base).as_posix()
        targets += [(rel, False), (rel, True)]
    if "concurrent" not in skip:
        guarded(probe_concurrent, p)
    if "damage" not in skip:
        for rel, truncate in targets:
            if (base / rel).is_file():
                guarded(probe_damage, p, base, snap, rel, truncate)
            else:
                print(f"## {rel}: not in the base directory (skipped)")
    for name, fn in (
        ("pickles", probe_pickles),
        ("inputs", probe_inputs),
        ("moved", probe_moved),
        ("text", probe_text),
    ):
        if name not in skip:
            guarded(fn, p, base)
    if "sigterm" not in skip:
        guarded(probe_sigterm, p)
    print(f"# done {time.strftime('%H:%M:%S')}")


if __name__ == "__main__":
    main()
