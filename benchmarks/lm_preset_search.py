"""The measurement behind the ``cpu`` mini-suite preset (issue 19 part 2): candidate suites
trained through the real code path, each scored by the analysis ``make demo`` runs.

Per candidate (a set of overrides of ``SUITE_PRESETS["cpu"]``): ``build_suite_config`` +
``train_minisuite`` (the stage lm-suite), ``run_losses`` on ``stdlib:test`` (lm-losses),
``analyze_losses`` (lm-analyze: α_N of the no-offset power law with its bootstrap 95% CI, R²
in log-log, monogenic / polygenic counts at the paper's thresholds) and ``choose_threshold``
on the largest model (qdg-clusters' ``--threshold auto --min-samples 1000``). Printed: sizes,
N range (decades), training tokens, wall seconds (training, per size and total; the load
average next to it), final training losses, α_N [CI], R², mono/poly counts, tokens passing
0.1 nats and the auto threshold. Per-size learning rates follow the cpu sweep's log-linear
rule in N unless a candidate gives its own (``lr_rule``).

Usage: python benchmarks/lm_preset_search.py [--only NAME,...] [--max-docs 100]
       [--keep DIR] [--threads 0] [--list]

On a loaded machine ``--threads 1`` (CPU seconds then count one core: two threads that wait
for each other at every op's barrier lose far more than half when other processes hold the
cores).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

#: The candidates measured (docs/BENCHMARKS.md, "The cpu preset: how it was chosen"); the
#: overrides of SUITE_PRESETS["cpu"] each one trains.
_S6 = ((16, 1), (32, 1), (48, 2), (64, 2), (96, 3), (128, 4))
CANDIDATES: dict[str, dict[str, Any]] = {
    # The cpu preset before issue 19 (vocabulary 2048, 1.31M tokens, its sweep's rates).
    "before": {
        "sizes": _S6,
        "vocab_size": 2048,
        "steps": 320,
        "warmup": 30,
        "lrs": (0.04, 0.024, 0.014, 0.011, 0.007, 0.005),
    },
    # SUITE_PRESETS["cpu"] as it is (the chosen one: measured by the stage lm-suite itself).
    "chosen": {},
    # The chosen sizes without h8 l1 (measured by a `quanta reproduce --only lm,qdg` run).
    "six-3.3M": {
        "sizes": ((16, 1), (24, 1), (32, 1), (48, 1), (64, 2), (96, 2)),
        "lrs": (0.04, 0.0297, 0.024, 0.0177, 0.011, 0.0081),
    },
    # six-3.3M with h8 l1 below (888 N: 2.4 decades; a reproduce run).
    "seven-h8-3.3M": {
        "sizes": ((8, 1), (16, 1), (24, 1), (32, 1), (48, 1), (64, 2), (96, 2)),
        "lrs": (0.05, 0.04, 0.0297, 0.024, 0.0177, 0.011, 0.0081),
    },
    # six-3.3M on a fifth more tokens (the larger sizes were still improving).
    "six-3.9M": {
        "sizes": ((16, 1), (24, 1), (32, 1), (48, 1), (64, 2), (96, 2)),
        "lrs": (0.04, 0.0297, 0.024, 0.0177, 0.011, 0.0081),
        "steps": 960,
    },
    # Smaller sizes (largest ~221k: not data-limited at a few M tokens), more tokens.
    "small-2.6M": {
        "sizes": ((16, 1), (24, 1), (32, 1), (48, 1), (64, 2), (96, 2)),
        "vocab_size": 1024,
        "context": 128,
        "batch_size": 32,
        "steps": 640,
        "warmup": 40,
    },
    "small-2.6M-v2048": {
        "sizes": ((16, 1), (24, 1), (32, 1), (48, 1), (64, 2), (96, 2)),
        "vocab_size": 2048,
        "context": 128,
        "batch_size": 32,
        "steps": 640,
        "warmup": 40,
    },
}


def lr_rule(n: int) -> float:
    """The cpu sweep's rates (0.04 at h16 l1's 3,312, 0.005 at h128 l4's 793,344) log-linear
    in N, i.e. 0.04 · (N / 3312)^-0.38, clipped to [0.003, 0.05]."""
    slope = -0.3796  # ln(0.005 / 0.04) / ln(793344 / 3312)
    return float(min(max(0.04 * (n / 3312) ** slope, 0.003), 0.05))


def _overrides(spec: dict[str, Any]) -> dict[str, Any]:
    from quanta.lm.minisuite import size_non_embedding

    values = dict(spec)
    if "sizes" in values and "lrs" not in values:
        values["lrs"] = tuple(round(lr_rule(size_non_embedding(*s)), 4) for s in values["sizes"])
    return values


def measure(
    name: str, spec: dict[str, Any], work: Path, max_docs: int, threads: int
) -> dict[str, Any]:
    """Train, score and analyze one candidate in ``work``; the printed numbers as a dict."""
    import numpy as np

    from quanta.lm.corpus import load_corpus
    from quanta.lm.curves import analyze_losses
    from quanta.lm.losses_run import run_losses
    from quanta.lm.minisuite import build_suite_config, train_minisuite
    from quanta.qdg.select import choose_threshold

    cfg = build_suite_config("cpu", **_overrides(spec), threads=threads)
    marks: dict[str, tuple[float, float]] = {}  # model -> (wall, CPU) at its last step

    def progress(model: str, step: int, steps: int, loss: float) -> None:
        if step == 1:
            marks[model + ":start"] = (time.perf_counter(), time.process_time())
        marks[model] = (time.perf_counter(), time.process_time())

    load0, t0, c0 = os.getloadavg()[0], time.perf_counter(), time.process_time()
    table = train_minisuite(cfg, work / "suite", progress=progress)
    wall, load1 = time.perf_counter() - t0, os.getloadavg()[0]
    cpu = time.process_time() - c0  # this process's CPU seconds, all threads
    names = [m for m in marks if not m.endswith(":start")]
    # Per size from its first step to its last (the tokenizer and chunking are outside).
    per_size = [marks[m][0] - marks[m + ":start"][0] for m in names]
    per_size_cpu = [marks[m][1] - marks[m + ":start"][1] for m in names]
    t1 = time.perf_counter()
    run_losses(str(work / "suite"), "stdlib:test", work / "losses", max_docs=max_docs)
    analysis = analyze_losses(work / "losses")
    losses_wall = time.perf_counter() - t1
    summary = analysis.summary()
    losses = np.load(work / "losses" / "losses.npy", mmap_mode="r")
    corpus = load_corpus(work / "losses" / "corpus")
    largest = np.asarray(losses[:, int(np.argmax(table["n_params"]))])
    choice = choose_threshold(corpus, largest, threshold="auto", min_samples=1000)
    n = table["n_params"].to_numpy()
    tokens = cfg.steps * cfg.batch_size * cfg.context
    fit = summary["fit"] or {}
    return {
        "name": name,
        "sizes": " ".join(f"{h}x{layers}" for h, layers in cfg.sizes),
        "lrs": " ".join(f"{lr:g}" for lr in cfg.lrs),
        "vocab": cfg.vocab_size,
        "context": cfg.context,
        "batch": cfg.batch_size,
        "steps": cfg.steps,
        "N": f"{n.min():,} … {n.max():,} ({np.log10(n.max() / n.min()):.2f} decades)",
        "tokens": tokens,
        "wall_s": wall,
        "cpu_s": cpu,
        "per_size_s": " ".join(f"{s:.0f}" for s in per_size),
        "per_size_cpu_s": " ".join(f"{s:.0f}" for s in per_size_cpu),
        "tokens_per_s": tokens * len(cfg.sizes) / wall,
        "load": f"{load0:.1f} → {load1:.1f}",
        "train_loss": " ".join(f"{v:.3f}" for v in table["final_train_loss"]),
        "mean_loss": " ".join(f"{m['mean_loss']:.3f}" for m in summary["models"]),
        "alpha": fit.get("alpha"),
        "alpha_ci": fit.get("alpha_ci"),
        "r2": fit.get("r2_loglog"),
        "mono": summary["n_monogenic"],
        "poly": summary["n_polygenic"],
        "n_tokens": summary["n_tokens"],
        "pass_0.1": choice.n_passing_paper,
        "auto_threshold": choice.threshold,
        "losses_s": losses_wall,
    }


def _print(r: dict[str, Any]) -> None:
    ci = r["alpha_ci"] or (float("nan"), float("nan"))
    alpha = float("nan") if r["alpha"] is None else r["alpha"]
    r2 = float("nan") if r["r2"] is None else r["r2"]
    print(
        f"== {r['name']}: sizes {r['sizes']} (lrs {r['lrs']}), vocab {r['vocab']}, context "
        f"{r['context']}, batch {r['batch']} × {r['steps']} steps = {r['tokens']:,} tokens\n"
        f"   N {r['N']}; train {r['wall_s']:.0f} s, {r['cpu_s']:.0f} CPU-s "
        f"(per size {r['per_size_s']} s, {r['per_size_cpu_s']} CPU-s; "
        f"{r['tokens_per_s']:,.0f} tok/s over the suite; load {r['load']})\n"
        f"   final train loss {r['train_loss']}; held-out mean loss {r['mean_loss']} "
        f"({r['n_tokens']:,} tokens, {r['losses_s']:.0f} s)\n"
        f"   α_N {alpha:.4f} [{ci[0]:.4f}, {ci[1]:.4f}], R² {r2:.4f}; monogenic {r['mono']}, "
        f"polygenic {r['poly']}; largest: {r['pass_0.1']} tokens < 0.1, auto threshold "
        f"{r['auto_threshold']:.3f}",
        flush=True,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="", help="candidate names, comma-separated (default all)")
    ap.add_argument("--max-docs", type=int, default=100, help="stdlib:test documents scored")
    ap.add_argument("--keep", default="", help="a directory to keep the suites in (resumes)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = all cores)")
    ap.add_argument("--list", action="store_true", help="print the candidates and exit")
    args = ap.parse_args()
    names = args.only.split(",") if args.only else list(CANDIDATES)
    if args.list:
        for name in names:
            print(name, _overrides(CANDIDATES[name]))
        return
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.keep or tmp)
        for name in names:
            _print(measure(name, CANDIDATES[name], root / name, args.max_docs, args.threads))


if __name__ == "__main__":
    main()
