"""Per-token losses: our engine vs the paper's method, same model, same corpus, one run.

Two model shapes, GPT-NeoX, randomly initialized from a seed (no download; speed does not depend
on the weights' values): ``mini`` — the largest model of the cpu mini-suite this project runs
(d=192, 4 layers, vocabulary 2048); ``pythia70m`` — Pythia-70m's shape (d=512, 6 layers, 8
heads, vocabulary 50,304). Two corpora: ``long`` — the first documents of the embedded
``stdlib:test`` corpus, truncated to 1024 tokens (most are that long); ``short`` — the same
files cut at blank lines into paragraph documents (tens of tokens each, like much of a web
corpus). Tokenized with a BPE tokenizer trained here.

The paper's method: one document per forward, autograd on, full logits,
``cross_entropy(reduction="none").tolist()``. The same under ``torch.no_grad()`` splits our gain
in two: paper → paper without autograd is what dropping autograd alone gives; paper without
autograd → ours is what our batching gives (:func:`quanta.lm.losses.token_losses`:
length-bucketed batches, inference mode, no padding mask, chunked output head).

Each method runs in its own fresh child process (no warm-up, the same for all three) so its
peak resident memory (ru_maxrss) is its own.

Usage: python benchmarks/bench_losses.py [--docs 48] [--threads 2] [--shape mini pythia70m]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHAPES = {
    "mini": {
        "vocab_size": 2048,
        "hidden_size": 192,
        "num_hidden_layers": 4,
        "num_attention_heads": 6,
        "intermediate_size": 768,
    },
    "pythia70m": {
        "vocab_size": 50304,
        "hidden_size": 512,
        "num_hidden_layers": 6,
        "num_attention_heads": 8,
        "intermediate_size": 2048,
    },
}


METHODS = ["paper", "paper_nograd", "ours"]  # run in this order; the first trains the tokenizer


def build(docs: int, workdir: Path, shape: str, kind: str = "long"):  # type: ignore[no-untyped-def]
    import torch
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    from quanta.lm.corpus import Document, load_documents, tokenize_documents
    from quanta.lm.minisuite import train_tokenizer

    texts, _ = load_documents("stdlib:test", max_docs=docs)
    if kind == "short":  # paragraphs (blank-line separated) as documents: many short ones
        paragraphs = [
            Document(f"{d.name}#{i}", part)
            for d in texts
            for i, part in enumerate(d.text.split("\n\n"))
            if part.strip()
        ]
        texts = paragraphs[: docs * 40]
    tok_dir = workdir / "tok"
    if (tok_dir / "tokenizer.json").exists():
        from transformers import PreTrainedTokenizerFast

        tok = PreTrainedTokenizerFast.from_pretrained(str(tok_dir))
    else:
        tok = train_tokenizer([d.text for d in texts], 2048, tok_dir)
    corpus = tokenize_documents(texts, tok, max_len=1024)
    torch.manual_seed(0)
    cfg = GPTNeoXConfig(**SHAPES[shape], max_position_embeddings=2048)
    return GPTNeoXForCausalLM(cfg).eval(), corpus


def child(method: str, docs: int, threads: int, workdir: Path, shape: str, kind: str) -> None:
    import numpy as np
    import torch

    from quanta.lm.losses import paper_token_losses, token_losses

    torch.set_num_threads(threads)
    model, corpus = build(docs, workdir, shape, kind)
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    if method == "paper":
        losses = np.asarray(paper_token_losses(model, corpus), dtype=np.float32)
    elif method == "paper_nograd":
        with torch.no_grad():
            losses = np.asarray(paper_token_losses(model, corpus), dtype=np.float32)
    else:
        losses = token_losses(model, corpus)
    seconds = time.perf_counter() - t
    np.save(workdir / f"{shape}-{kind}-{method}.npy", losses)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        json.dumps(
            {
                "tokens": int(corpus.n_predicted),
                "docs": corpus.n_docs,
                "seconds": seconds,
                "peak_mib": peak / 1024,
                "peak_over_model_mib": (peak - base_rss) / 1024,
            }
        )
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=48)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--shape", nargs="+", default=["mini", "pythia70m"], choices=list(SHAPES))
    ap.add_argument("--corpus", nargs="+", default=["long", "short"], choices=["long", "short"])
    ap.add_argument("--method", choices=METHODS, help=argparse.SUPPRESS)
    ap.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.method:
        child(args.method, args.docs, args.threads, args.workdir, args.shape[0], args.corpus[0])
        return
    with tempfile.TemporaryDirectory() as tmp:
        for shape in args.shape:
            for kind in args.corpus:
                report(shape, kind, args.docs, args.threads, Path(tmp))


def report(shape: str, kind: str, docs: int, threads: int, tmp: Path) -> None:
    import numpy as np

    results = {}
    for method in METHODS:
        res = subprocess.run(
            [
                *(sys.executable, __file__, "--method", method, "--docs", str(docs)),
                *("--threads", str(threads), "--workdir", str(tmp), "--shape", shape),
                *("--corpus", kind),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        results[method] = json.loads(res.stdout.strip().splitlines()[-1])
    ours, paper, nograd = (
        np.load(tmp / f"{shape}-{kind}-{m}.npy") for m in ("ours", "paper", "paper_nograd")
    )
    diff = max(np.abs(ours - paper).max(), np.abs(nograd - paper).max())
    p, n, o = results["paper"], results["paper_nograd"], results["ours"]
    print(
        f"[{shape}, {kind} documents] {o['tokens']:,} predicted tokens in {o['docs']} documents "
        f"(mean {o['tokens'] / o['docs'] + 1:.0f} tokens, ≤1024), "
        f"{threads} threads"
    )
    for name, r in (("paper's method", p), ("paper, no_grad", n), ("quanta engine", o)):
        print(
            f"  {name:15s} {r['seconds']:7.2f} s  {r['tokens'] / r['seconds']:9,.0f} tokens/s  "
            f"peak RSS {r['peak_mib']:6.0f} MiB (+{r['peak_over_model_mib']:.0f} over the model)"
        )

    def mem(a: dict[str, float], b: dict[str, float]) -> float:
        return a["peak_over_model_mib"] / max(b["peak_over_model_mib"], 1)

    for label, a, b in (
        ("total (paper -> quanta)", p, o),
        ("no autograd (paper -> paper no_grad)", p, n),
        ("our batching (paper no_grad -> quanta)", n, o),
    ):
        print(
            f"  {label:40s} speed {a['seconds'] / b['seconds']:.2f}x, "
            f"memory above the model {mem(a, b):.2f}x (before / after; > 1: less memory)"
        )
    print(f"  max |loss difference| between the three: {diff:.2e}")


if __name__ == "__main__":
    main()
