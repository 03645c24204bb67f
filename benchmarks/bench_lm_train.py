"""Mini-suite training speed: tokens/s and achieved FLOP/s per model size, as fractions of the
f32 and bf16 matmul peaks measured in the same run; and what bf16 autocast costs in loss.

(a) Peaks: the best of several square matmuls (2048² and 4096²) in float32 and bfloat16 — the
    most this CPU does on the operation a transformer spends its time in.
(b) Per size of a suite preset: the trainer's own step (:func:`quanta.lm.minisuite.training_step`:
    autocast, backward, clipping, AdamW) on batches of the preset's shape, after the same warm-up
    for every size and precision; FLOPs per token from
    :func:`quanta.lm.minisuite.train_flops_per_token` (6 × (non-embedding + output-head params)
    + attention; Kaplan et al. 2020). Both precisions are timed side by side.
(c) Loss: one size trained on the same stdlib batches in f32 and with bf16 autocast; the
    held-out loss (stdlib:test chunks, evaluated in f32) of both, and the difference.

Usage: python benchmarks/bench_lm_train.py [--preset cpu] [--steps 8] [--threads 2]
       [--loss-size 2] [--loss-steps 300]
"""

from __future__ import annotations

import argparse
import time


def matmul_peak(dtype: object, sizes: tuple[int, ...] = (2048, 4096), reps: int = 4) -> float:
    """Best GFLOP/s of square matmuls of ``sizes`` in ``dtype``."""
    import torch

    best = 0.0
    for n in sizes:
        a = torch.randn(n, n).to(dtype)  # type: ignore[arg-type]
        b = torch.randn(n, n).to(dtype)  # type: ignore[arg-type]
        a @ b  # warm-up
        for _ in range(reps):
            t = time.perf_counter()
            a @ b
            best = max(best, 2 * n**3 / (time.perf_counter() - t) / 1e9)
    return best


def time_size(cfg, hidden, layers, vocab, *, bf16, steps):  # type: ignore[no-untyped-def]
    """Seconds per training step of one size on random tokens (speed does not depend on them)."""
    import torch
    from transformers import GPTNeoXForCausalLM

    from quanta.lm.minisuite import _model_config, training_step

    torch.manual_seed(0)
    model = GPTNeoXForCausalLM(_model_config(cfg, hidden, layers, vocab)).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    x = torch.randint(0, vocab, (cfg.batch_size, cfg.context))
    for _ in range(3):  # warm-up: allocator, kernels, optimizer state
        training_step(model, opt, sched, x, bf16=bf16)
    t = time.perf_counter()
    for _ in range(steps):
        training_step(model, opt, sched, x, bf16=bf16)
    return (time.perf_counter() - t) / steps


def loss_check(cfg, index, steps):  # type: ignore[no-untyped-def]
    """Held-out loss of size ``index`` after ``steps`` steps, f32 vs bf16 autocast."""
    import tempfile
    from pathlib import Path

    import numpy as np
    import torch
    from transformers import GPTNeoXForCausalLM

    from quanta.lm.corpus import load_documents
    from quanta.lm.minisuite import _chunks, _model_config, train_tokenizer, training_step

    docs, _ = load_documents("stdlib:train", max_docs=300)
    test, _ = load_documents("stdlib:test", max_docs=40)
    with tempfile.TemporaryDirectory() as tmp:
        tok = train_tokenizer([d.text for d in docs], cfg.vocab_size, Path(tmp))
    train = _chunks(docs, tok, cfg.context)
    held = torch.from_numpy(_chunks(test, tok, cfg.context)[:64])
    order = np.random.default_rng(0).permutation(len(train))
    batches = np.resize(order, steps * cfg.batch_size).reshape(steps, cfg.batch_size)
    hidden, layers = cfg.sizes[index]
    result = {}
    for name, bf16 in (("f32", False), ("bf16", True)):
        torch.manual_seed(cfg.seed)
        model = GPTNeoXForCausalLM(_model_config(cfg, hidden, layers, len(tok))).train()
        opt = torch.optim.AdamW(
            model.parameters(), lr=cfg.lr_of(index), betas=(0.9, 0.95), weight_decay=0.01
        )
        run_cfg = type(cfg)(**{**cfg.__dict__, "steps": steps, "warmup": min(cfg.warmup, steps)})
        sched = torch.optim.lr_scheduler.LambdaLR(opt, run_cfg.lr_factor)
        t = time.perf_counter()
        for step in range(steps):
            training_step(model, opt, sched, torch.from_numpy(train[batches[step]]), bf16=bf16)
        seconds = time.perf_counter() - t
        model.eval()
        with torch.inference_mode():
            loss = float(model(input_ids=held, labels=held).loss)
        result[name] = (loss, seconds)
    return (hidden, layers), result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--steps", type=int, default=8, help="timed steps per size and precision")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--loss-size", type=int, default=2, help="index of the size for (c)")
    ap.add_argument("--loss-steps", type=int, default=300, help="training steps for (c); 0 = skip")
    args = ap.parse_args()

    import torch

    from quanta.lm.minisuite import build_suite_config, train_flops_per_token

    torch.set_num_threads(args.threads)
    cfg = build_suite_config(args.preset)
    vocab = cfg.vocab_size
    f32, bf16 = matmul_peak(torch.float32), matmul_peak(torch.bfloat16)
    print(
        f"torch {torch.__version__}, {args.threads} threads, preset {args.preset}: batch "
        f"{cfg.batch_size} x context {cfg.context}, vocabulary {vocab}"
    )
    print(f"(a) matmul peak: f32 {f32:.0f} GFLOP/s, bf16 {bf16:.0f} GFLOP/s ({bf16 / f32:.1f}x)")
    print(
        "(b) size          MFLOP/tok  f32 tok/s  GFLOP/s  %f32pk | bf16 tok/s  GFLOP/s  "
        "%bf16pk  %f32pk  bf16/f32"
    )
    tokens = cfg.batch_size * cfg.context
    for hidden, layers in cfg.sizes:
        flops = train_flops_per_token(cfg, hidden, layers, vocab)
        rate = {}
        for name, on in (("f32", False), ("bf16", True)):
            rate[name] = tokens / time_size(cfg, hidden, layers, vocab, bf16=on, steps=args.steps)
        g32, g16 = rate["f32"] * flops / 1e9, rate["bf16"] * flops / 1e9
        p32, p16, p16_32 = 100 * g32 / f32, 100 * g16 / bf16, 100 * g16 / f32
        print(
            f"    h{hidden:<4d} l{layers:<2d}  {flops / 1e6:9.2f}  {rate['f32']:9,.0f}  {g32:7.1f}"
            f"  {p32:5.0f}% | {rate['bf16']:10,.0f}  {g16:7.1f}  {p16:6.0f}%"
            f"  {p16_32:5.0f}%  {rate['bf16'] / rate['f32']:6.2f}x"
        )
    if args.loss_steps:
        (hidden, layers), res = loss_check(cfg, args.loss_size, args.loss_steps)
        (l32, s32), (l16, s16) = res["f32"], res["bf16"]
        print(
            f"(c) h{hidden} l{layers}, {args.loss_steps} steps on the same stdlib batches: "
            f"held-out loss f32 {l32:.4f}, bf16 autocast {l16:.4f} nats "
            f"(bf16 - f32 = {l16 - l32:+.4f}); training time {s32:.1f} s vs {s16:.1f} s"
        )


if __name__ == "__main__":
    main()
