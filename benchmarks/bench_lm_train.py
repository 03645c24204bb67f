"""Mini-suite training speed, the two engines side by side in one run: transformers'
``GPTNeoXForCausalLM`` (engine ``hf``) and :mod:`quanta.lm.neox` (engine ``fast``, one model and
``R`` stacked seed replicas), as tokens/s, GFLOP/s and % of the matmul peak measured in the
same run; and what the fast engine does to the loss.

(a) Peaks: the best of several square matmuls (2048² and 4096²) in float32 and bfloat16 — the
    most this CPU does on the operation a transformer spends its time in.
(b) Per size of the cpu preset (plus cpu-long's largest): each engine's own training step
    (autocast, backward, clipping at 1.0, AdamW) on random batches of the preset's shape,
    3 warm-up steps, then ``--rounds`` rounds in which every engine runs ``--steps`` steps in
    turn (interleaved, so load from other processes hits all alike); the best round per engine
    is reported. FLOPs per token from :func:`quanta.lm.minisuite.train_flops_per_token`
    (6 × (non-embedding + head params) + attention; Kaplan et al. 2020). With ``R`` replicas
    tok/s counts the tokens of all replicas (R models trained per step). Last line: the whole
    suite (all sizes, the preset's steps) as total training FLOPs / total time per engine.
(d) The suite as it trains (``--suite`` or ``--suite-only``; ``--steps-per-size K``, default the
    preset's steps): every size of the preset from the same prepared data (tokenized once, not
    timed), each mode in turn: hf sequential and fast sequential at ``--threads`` threads,
    then fast in ``--threads`` workers (:mod:`quanta.lm.suite_workers`) of 1 thread each;
    wall seconds (what the user waits for: checkpoints and the workers' start included) and
    CPU seconds (this process and its workers). Only a quiet machine gives meaningful wall
    times; with ``--threads 1`` the table (b) also prints the 2-worker estimate: the
    longest-processing-time schedule of its 1-thread step times on 2 cores.
(c) Loss: h48 l2 (``--loss-size``) trained ``--loss-steps`` steps on the same stdlib batches
    by both engines for seeds 0 and 1 (bf16 autocast); held-out loss (stdlib:test chunks,
    f32, by GPTNeoXForCausalLM): the difference of the engines' means vs the seed-to-seed
    spread (a seed is not the same initialisation in both engines).

Usage: python benchmarks/bench_lm_train.py [--preset cpu] [--steps 3] [--rounds 3]
       [--threads 2] [--replicas 2,4] [--loss-size 2] [--loss-steps 300]
       [--suite | --suite-only] [--steps-per-size K] [--profile 16x1]
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any


def matmul_peak(
    dtype: object, sizes: tuple[int, ...] = (2048, 4096), reps: int = 4, clock: Any = None
) -> float:
    """Best GFLOP/s of square matmuls of ``sizes`` in ``dtype`` (``clock``: perf_counter)."""
    import torch

    clock = clock or time.perf_counter
    best = 0.0
    for n in sizes:
        a = torch.randn(n, n).to(dtype)  # type: ignore[arg-type]
        b = torch.randn(n, n).to(dtype)  # type: ignore[arg-type]
        a @ b  # warm-up
        for _ in range(reps):
            t = clock()
            a @ b
            best = max(best, 2 * n**3 / (clock() - t) / 1e9)
    return best


def make_runner(cfg, hidden, layers, engine, replicas, *, seed=0):  # type: ignore[no-untyped-def]
    """A closure doing one training step of ``engine`` ('hf' | 'fast') on a batch ``x``."""
    import torch

    from quanta.lm.minisuite import _model_config, training_step
    from quanta.lm.neox import NeoX, adamw, neox_training_step

    config = _model_config(cfg, hidden, layers, cfg.vocab_size)
    if engine == "hf":
        from transformers import GPTNeoXForCausalLM

        torch.manual_seed(seed)
        model: Any = GPTNeoXForCausalLM(config).train()
        step: Any = training_step
    else:
        model = NeoX(config, replicas=replicas, generator=torch.Generator().manual_seed(seed))
        step = neox_training_step
    if engine == "hf":
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.95), weight_decay=0.01)
    else:
        opt = adamw(model, cfg.lr)  # the trainer's (fused)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, cfg.lr_factor)
    bf16 = cfg.precision == "bf16"
    return model, lambda x: step(model, opt, sched, x, bf16=bf16)


def time_engines(cfg, hidden, layers, engines, *, steps, rounds, clock):  # type: ignore[no-untyped-def]
    """Best seconds per step of each (engine, replicas), interleaved round by round."""
    import torch

    x = torch.randint(0, cfg.vocab_size, (cfg.batch_size, cfg.context))
    runners = {key: make_runner(cfg, hidden, layers, *key)[1] for key in engines}
    for run in runners.values():
        for _ in range(3):  # warm-up: allocator, kernels, optimizer state
            run(x)
    best = dict.fromkeys(runners, float("inf"))
    for _ in range(rounds):
        for key, run in runners.items():
            t = clock()
            for _ in range(steps):
                run(x)
            best[key] = min(best[key], (clock() - t) / steps)
    return best


def speed_table(cfg, sizes, engines, peak, args):  # type: ignore[no-untyped-def]
    """(b): one line per size; returns per engine (total FLOPs, total seconds) of the suite."""
    from quanta.lm.minisuite import train_flops_per_token

    tokens = cfg.batch_size * cfg.context
    names = [e if e == "hf" else f"fast R{r}" for e, r in engines]
    print("(b) size        MFLOP/tok | " + " | ".join(f"{n:>26s}" for n in names))
    units = f"{'tok/s  GFLOP/s  %pk':>26s}"
    print("                          | " + " | ".join(units for _ in names))
    suite = {key: [0.0, 0.0] for key in engines}
    per_size: dict[tuple[int, int], float] = {}  # fast R1 seconds per step of the suite's sizes
    for hidden, layers in sizes:
        flops = train_flops_per_token(cfg, hidden, layers, cfg.vocab_size)
        best = time_engines(
            cfg, hidden, layers, engines, steps=args.steps, rounds=args.rounds, clock=args.clock
        )
        cells = []
        for key in engines:
            rate = key[1] * tokens / best[key]  # tokens of all replicas per second
            g = rate * flops / 1e9
            cells.append(f"{rate:9,.0f} {g:7.1f} {100 * g / peak:4.0f}%")
            if key[1] == 1 and (hidden, layers) in cfg.sizes:  # the suite as the trainer runs it
                suite[key][0] += flops * tokens * cfg.steps
                suite[key][1] += best[key] * cfg.steps
                if key == ("fast", 1):
                    per_size[hidden, layers] = best[key]
        print(f"    h{hidden:<4d} l{layers:<2d} {flops / 1e6:9.2f} | " + " | ".join(cells))
    return suite, per_size


def profile_step(cfg, hidden, layers):  # type: ignore[no-untyped-def]
    """torch.profiler's table of 5 fast-engine steps of one size (after 3 warm-up steps)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    run = make_runner(cfg, hidden, layers, "fast", 1)[1]
    x = torch.randint(0, cfg.vocab_size, (cfg.batch_size, cfg.context))
    for _ in range(3):
        run(x)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(5):
            run(x)
    print(f"h{hidden} l{layers}, 5 steps, {torch.get_num_threads()} thread(s):")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20))


def lpt_makespan(seconds: list[float], machines: int) -> float:
    """Finish time of jobs of ``seconds`` on ``machines`` cores, largest first, each to the
    core free first (how :mod:`quanta.lm.suite_workers` schedules the sizes)."""
    free = [0.0] * machines
    for s in sorted(seconds, reverse=True):
        free[free.index(min(free))] += s
    return max(free)


def _cpu_seconds() -> float:
    """CPU seconds of this process and of its finished (joined) child processes."""
    import resource

    own, kids = (resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def suite_row(cfg, threads):  # type: ignore[no-untyped-def]
    """(d): {mode: (wall s, CPU s)} of training every size of ``cfg`` (its steps) per mode."""
    import dataclasses
    import tempfile
    from pathlib import Path

    import torch

    from quanta.lm.minisuite import _Trainer, _training_data, batch_order, train_sizes

    modes = {
        f"hf sequential ({threads} threads)": ("hf", threads, 1),
        f"fast sequential ({threads} threads)": ("fast", threads, 1),
        f"fast {threads} workers x 1 thread": ("fast", 1, threads),
    }
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # save_pretrained's bars, as in train_minisuite
    result = {}
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer, chunks = _training_data(cfg, Path(tmp))
        batches = batch_order(cfg, len(chunks))
        sizes = list(range(len(cfg.sizes)))
        for engine in ("hf", "fast"):  # warm-up: imports, allocator (the first mode paid them)
            warm = dataclasses.replace(cfg, engine=engine, steps=2, warmup=1, n_checkpoints=1)
            _Trainer(warm, 0, len(tokenizer)).train(
                chunks, batches, Path(tmp) / "warm", tokenizer, None
            )
        for i, (label, (engine, n, workers)) in enumerate(modes.items()):
            run = dataclasses.replace(cfg, engine=engine, threads=n, workers=workers)
            out = Path(tmp) / f"mode{i}"
            wall, cpu = time.perf_counter(), _cpu_seconds()
            train_sizes(run, sizes, chunks, batches, out, tokenizer, None, lambda row, loss: None)
            result[label] = (time.perf_counter() - wall, _cpu_seconds() - cpu)
    torch.set_num_threads(threads)
    return result


def loss_check(cfg, index, steps, seeds=(0, 1)):  # type: ignore[no-untyped-def]
    """Held-out loss of size ``index`` after ``steps`` steps: {(engine, seed): loss}."""
    import tempfile
    from pathlib import Path

    import numpy as np
    import torch
    from transformers import GPTNeoXForCausalLM

    from quanta.lm.corpus import load_documents
    from quanta.lm.minisuite import _chunks, train_tokenizer

    docs, _ = load_documents("stdlib:train", max_docs=300)
    test, _ = load_documents("stdlib:test", max_docs=40)
    with tempfile.TemporaryDirectory() as tmp:
        tok = train_tokenizer([d.text for d in docs], cfg.vocab_size, Path(tmp))
    train = _chunks(docs, tok, cfg.context)
    held = torch.from_numpy(_chunks(test, tok, cfg.context)[:64])
    order = np.random.default_rng(0).permutation(len(train))
    batches = np.resize(order, steps * cfg.batch_size).reshape(steps, cfg.batch_size)
    change = {"steps": steps, "warmup": min(cfg.warmup, steps), "lr": cfg.lr_of(index), "lrs": ()}
    run_cfg = type(cfg)(**{**cfg.__dict__, **change})  # the size's own rate and schedule
    hidden, layers = cfg.sizes[index]
    result = {}
    for seed in seeds:
        for engine in ("hf", "fast"):
            model, step = make_runner(run_cfg, hidden, layers, engine, 1, seed=seed)
            for s in range(steps):
                step(torch.from_numpy(train[batches[s]]))
            with tempfile.TemporaryDirectory() as tmp:  # both judged by GPTNeoXForCausalLM
                if engine == "fast":
                    model.save_replica(0, tmp)
                    model = GPTNeoXForCausalLM.from_pretrained(tmp)
                model.eval()
                with torch.inference_mode():
                    result[engine, seed] = float(model(input_ids=held, labels=held).loss)
    return (hidden, layers), result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per engine and round")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (best is kept)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--replicas", default="2,4", help="stacked replica counts to time ('' = none)")
    ap.add_argument("--loss-size", type=int, default=2, help="index of the size for (c)")
    ap.add_argument("--loss-steps", type=int, default=300, help="training steps for (c); 0 = skip")
    ap.add_argument("--no-speed", action="store_true", help="skip (b): the loss check only")
    ap.add_argument("--suite", action="store_true", help="also (d): the suite as it trains")
    ap.add_argument(
        "--profile",
        default="",
        help="HIDDENxLAYERS: only torch.profiler's table (self CPU time) of 5 fast R1 steps",
    )
    ap.add_argument("--suite-only", action="store_true", help="(a) and (d) only")
    ap.add_argument(
        "--steps-per-size", type=int, default=0, help="(d)'s steps per size (0 = the preset's)"
    )
    ap.add_argument(
        "--clock",
        choices=["wall", "cpu"],
        default="wall",
        help="wall: perf_counter | cpu: this process's CPU time (for 1 thread on a machine "
        "others load: it leaves out the time spent waiting for a core; peaks timed alike)",
    )
    args = ap.parse_args()
    args.clock = time.perf_counter if args.clock == "wall" else time.process_time

    import torch

    from quanta.lm.minisuite import (
        SUITE_PRESETS,
        build_suite_config,
        size_non_embedding,
        train_flops_per_token,
    )

    torch.set_num_threads(args.threads)
    cfg = build_suite_config(args.preset)
    sizes = list(cfg.sizes)  # and the sizes of cpu-long (its h128 l3, h192 l3 for cpu)
    sizes += [s for s in SUITE_PRESETS["cpu-long"]["sizes"] if tuple(s) not in sizes]
    sizes.sort(key=lambda s: size_non_embedding(*s))
    if args.profile:
        profile_step(cfg, *(int(v) for v in args.profile.lower().split("x")))
        return
    f32 = matmul_peak(torch.float32, clock=args.clock)
    bf16 = matmul_peak(torch.bfloat16, clock=args.clock)
    peak = bf16 if cfg.precision == "bf16" else f32
    replicas = [int(r) for r in args.replicas.split(",") if r]
    engines = [("hf", 1), ("fast", 1), *(("fast", r) for r in replicas)]
    print(
        f"torch {torch.__version__}, {args.threads} threads, preset {args.preset} "
        f"({cfg.precision}): batch {cfg.batch_size} x context {cfg.context}, vocabulary "
        f"{cfg.vocab_size}; {args.clock.__name__} clock; load average at start "
        f"{os.getloadavg()[0]:.1f}"
    )
    print(f"(a) matmul peak: f32 {f32:.0f} GFLOP/s, bf16 {bf16:.0f} GFLOP/s ({bf16 / f32:.1f}x)")
    if not (args.no_speed or args.suite_only):
        suite, per_size = speed_table(cfg, sizes, engines, peak, args)
        (fl, s_hf), (_, s_fast) = suite[("hf", 1)], suite[("fast", 1)]
        print(
            f"    the {args.preset} suite ({len(cfg.sizes)} sizes x {cfg.steps} steps): hf "
            f"{fl / s_hf / 1e9:.1f} GFLOP/s ({s_hf:.0f} s), fast {fl / s_fast / 1e9:.1f} "
            f"GFLOP/s ({s_fast:.0f} s): {s_hf / s_fast:.2f}x; load average now "
            f"{os.getloadavg()[0]:.1f}"
        )
        if args.threads == 1:
            two = lpt_makespan([t * cfg.steps for t in per_size.values()], 2)
            print(
                f"    fast in 2 workers x 1 thread (estimate: LPT of these 1-thread times on 2 "
                f"cores): {two:.0f} s, {fl / two / 1e9:.1f} GFLOP/s, {s_hf / two:.2f}x hf on "
                "1 thread"
            )
    if args.suite or args.suite_only:
        suite_cfg = build_suite_config(args.preset, steps=args.steps_per_size or None)
        rows = suite_row(suite_cfg, args.threads)
        flops = sum(
            train_flops_per_token(suite_cfg, h, n, suite_cfg.vocab_size) for h, n in suite_cfg.sizes
        ) * (suite_cfg.steps * suite_cfg.batch_size * suite_cfg.context)
        base = next(iter(rows.values()))[0]
        print(
            f"(d) the {args.preset} suite as it trains ({len(suite_cfg.sizes)} sizes x "
            f"{suite_cfg.steps} steps, {flops / 1e12:.2f} TFLOP; load average now "
            f"{os.getloadavg()[0]:.1f}):"
        )
        for label, (wall, cpu) in rows.items():
            print(
                f"    {label:34s} {wall:8.1f} s wall ({flops / wall / 1e9:6.1f} GFLOP/s, "
                f"{base / wall:.2f}x hf) {cpu:8.1f} CPU-s"
            )
    if args.suite_only:
        return
    if args.loss_steps:
        (hidden, layers), res = loss_check(cfg, args.loss_size, args.loss_steps)
        cells = ", ".join(f"{e} seed {s} {v:.4f}" for (e, s), v in res.items())
        # The engines draw their initial weights from different streams: compare the means.
        mean = {e: (res[e, 0] + res[e, 1]) / 2 for e in ("hf", "fast")}
        spread = {e: abs(res[e, 0] - res[e, 1]) for e in ("hf", "fast")}
        print(
            f"(c) h{hidden} l{layers}, {args.loss_steps} steps, same stdlib batches: held-out "
            f"loss {cells}; mean fast - mean hf {mean['fast'] - mean['hf']:+.4f} nats; "
            f"seed-to-seed spread hf {spread['hf']:.4f}, fast {spread['fast']:.4f} nats"
        )


if __name__ == "__main__":
    main()
