"""The learning-rate sweep behind the mini-suite presets' per-size rates (``lrs``).

Each size of a preset is trained with each candidate peak rate on the preset's own batches
(same tokenizer, same data order, warmup + cosine over ``--steps`` steps), and its held-out
loss (stdlib:test chunks) printed; the best rate per size is what the preset records. Shorter
than the preset's own training, so a rate is chosen for the schedule's shape, not its length —
the usual small-scale practice (the best rate moves little with the number of steps at fixed
batch; larger models want smaller rates).

Usage: python benchmarks/lm_lr_sweep.py [--preset cpu] [--sizes 0,2,5] [--lrs 1e-3,3e-3,1e-2]
       [--steps 200] [--max-docs 0]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--sizes", default="", help="indices of the preset's sizes (default: all)")
    ap.add_argument("--lrs", default="1e-3,3e-3,1e-2")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--max-docs", type=int, default=0, help="training documents (0 = all)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import torch
    from transformers import GPTNeoXForCausalLM

    from quanta.lm.corpus import load_documents
    from quanta.lm.minisuite import (
        _chunks,
        _model_config,
        batch_order,
        build_suite_config,
        train_tokenizer,
        training_step,
    )

    torch.set_num_threads(args.threads)
    cfg = build_suite_config(args.preset, steps=args.steps, max_docs=args.max_docs or None)
    sizes = [int(i) for i in args.sizes.split(",")] if args.sizes else range(len(cfg.sizes))
    lrs = [float(v) for v in args.lrs.split(",")]
    docs, _ = load_documents(cfg.corpus, max_docs=cfg.max_docs or None)
    test, _ = load_documents("stdlib:test", max_docs=60)
    with tempfile.TemporaryDirectory() as tmp:
        tok = train_tokenizer([d.text for d in docs], cfg.vocab_size, Path(tmp))
    train = _chunks(docs, tok, cfg.context)
    held = torch.from_numpy(_chunks(test, tok, cfg.context)[:128])
    batches = batch_order(cfg, len(train))
    print(
        f"preset {args.preset}: {len(train)} training chunks of {cfg.context} tokens; "
        f"{cfg.steps} steps x {cfg.batch_size}; warmup {cfg.warmup}, cosine to "
        f"{cfg.min_lr_ratio} x peak; held-out: {held.numel():,} stdlib:test tokens"
    )
    for index in sizes:
        hidden, layers = cfg.sizes[index]
        row = []
        for lr in lrs:
            torch.manual_seed(cfg.seed)
            model = GPTNeoXForCausalLM(_model_config(cfg, hidden, layers, len(tok))).train()
            opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.01)
            sched = torch.optim.lr_scheduler.LambdaLR(opt, cfg.lr_factor)
            t = time.perf_counter()
            for step in range(cfg.steps):
                x = torch.from_numpy(train[batches[step]])
                training_step(model, opt, sched, x, bf16=cfg.precision == "bf16")
            model.eval()
            with torch.inference_mode():
                loss = float(model(input_ids=held, labels=held).loss)
            row.append((lr, loss, time.perf_counter() - t))
        best = min(row, key=lambda r: r[1])
        cells = "  ".join(f"lr {lr:g}: {loss:.4f}" for lr, loss, _ in row)
        print(f"h{hidden} l{layers}: {cells}  -> best {best[0]:g}", flush=True)


if __name__ == "__main__":
    main()
