"""QDG: per-token gradients vs a naive loop, and the K sweep vs per-K SpectralClustering.

(a) Gradients of n selected tokens' losses: ours (truncated context per token, output head only
at the token, rows streamed to disk; and the shared-forward-per-document variant) vs the naive
loop (a fresh forward and backward of each token's loss over its truncated context, full
logits, nothing stored), same model (GPT-NeoX of the cpu
mini-suite's largest shape, random init) and tokens. Both do one backward per sample; the
paper's code did ≈ 21× more (recomputed per block pair of the similarity matrix; the figure is
PAPER.md §4's, not measured here). Also: on the first ``--vjp`` tokens, the shared forward's
``retain_graph`` loop against the same backwards batched as VJPs with one-hot cotangents
(``is_grads_batched``, vmap), one shared forward per document for both.
(b) Cluster labels for every K in a sweep on planted clusters, 2 × 2: scikit-learn's
``SpectralClustering(n_clusters=K, affinity="precomputed")`` for each K vs ours (one spectral
embedding for the largest K, labels from its leading K columns), each with k-means
(``n_init=30``) and with ``cluster_qr`` labels — so the saving of the shared embedding is
measured apart from the choice of assigner.

Usage: python benchmarks/bench_qdg.py [--samples 200] [--vjp 40] [--n 3000] [--ks 10,20,50,100,200]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np


def bench_grads(samples: int, vjp: int) -> None:
    import torch
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    from quanta.lm.corpus import load_documents, tokenize_documents
    from quanta.lm.minisuite import train_tokenizer
    from quanta.qdg.grads import naive_token_gradient, per_token_gradients, select_params
    from quanta.qdg.select import select_tokens

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        docs, _ = load_documents("stdlib:test", max_docs=20)
        tok = train_tokenizer([d.text for d in docs], 2048, Path(tmp) / "tok")
        corpus = tokenize_documents(docs, tok, max_len=512)
        cfg = GPTNeoXConfig(
            vocab_size=2048,
            hidden_size=192,
            num_hidden_layers=4,
            num_attention_heads=6,
            intermediate_size=768,
        )
        model = GPTNeoXForCausalLM(cfg).eval()
        fake = np.zeros(corpus.n_predicted)  # every token eligible; a seeded subset
        chosen = select_tokens(corpus, fake, threshold=1.0, induction=False, n=samples, seed=0)
        params = select_params(model)
        warm = chosen.head(2)  # every variant warmed up alike, on the first two tokens
        per_token_gradients(model, corpus, warm, Path(tmp) / "w.npy")
        per_token_gradients(model, corpus, warm, Path(tmp) / "w.npy", shared_forward=True)
        for r in warm.itertuples():
            naive_token_gradient(model, corpus, int(r.doc_id), int(r.pos), params)
        vjp_variants(model, corpus, warm, params)
        t = time.perf_counter()
        info = per_token_gradients(model, corpus, chosen, Path(tmp) / "g.npy")
        ours = time.perf_counter() - t
        t = time.perf_counter()
        per_token_gradients(model, corpus, chosen, Path(tmp) / "s.npy", shared_forward=True)
        shared = time.perf_counter() - t
        t = time.perf_counter()
        for r in chosen.itertuples():
            naive_token_gradient(model, corpus, int(r.doc_id), int(r.pos), params)
        naive = time.perf_counter() - t
        t_loop, t_batched, max_diff = vjp_variants(model, corpus, chosen.head(vjp), params)
    print(
        f"(a) gradients of {samples} tokens in {chosen['doc_id'].nunique()} documents, "
        f"{info['dim']:,} dims, {info['n_backward']} backward passes"
    )
    print(f"    naive loop {naive:7.2f} s ({samples / naive:7.1f} samples/s), nothing stored")
    print(
        f"    shared forward per document {shared:7.2f} s ({samples / shared:7.1f} samples/s)  "
        f"ratio {naive / shared:.2f}x"
    )
    print(
        f"    quanta     {ours:7.2f} s ({samples / ours:7.1f} samples/s)  ratio {naive / ours:.2f}x"
    )
    print(f"    shared forward per document, speed relative to quanta: {ours / shared:.2f}x")
    n_vjp = min(vjp, samples)
    print(
        f"    first {n_vjp} tokens, one forward per document: retain_graph loop {t_loop:.2f} s, "
        f"batched VJPs {t_batched:.2f} s ({t_batched / t_loop:.2f}x the loop's time; "
        f"max |difference| {max_diff:.1e})"
    )


def vjp_variants(model: Any, corpus: Any, chosen: Any, params: list) -> tuple[float, float, float]:
    """Seconds of the retained-graph backward loop and of batched VJPs (one-hot cotangents,
    ``is_grads_batched``) for the tokens of ``chosen``, and the max difference of their rows."""
    import torch

    from quanta.qdg.grads import _token_losses_at

    tensors = [p for _, p in params]
    keep = {id(p) for p in tensors}
    for p in model.parameters():
        p.requires_grad_(id(p) in keep)  # per_token_gradients' setting: only these need grads
    t_loop = t_batched = max_diff = 0.0
    for doc, group in chosen.groupby("doc_id", sort=False):
        pos = torch.from_numpy(group["pos"].to_numpy().astype(np.int64))
        ids = torch.from_numpy(corpus.doc(int(doc))[: int(pos.max()) + 1].astype(np.int64))[None]
        t = time.perf_counter()
        losses = _token_losses_at(model, ids, pos)
        rows = [
            torch.cat([g.reshape(-1) for g in torch.autograd.grad(li, tensors, retain_graph=True)])
            for li in losses
        ]
        t_loop += time.perf_counter() - t
        t = time.perf_counter()
        losses = _token_losses_at(model, ids, pos)
        grads = torch.autograd.grad(
            losses, tensors, grad_outputs=torch.eye(len(pos)), is_grads_batched=True
        )
        batched = torch.cat([g.reshape(len(pos), -1) for g in grads], dim=1)
        t_batched += time.perf_counter() - t
        max_diff = max(max_diff, float((batched - torch.stack(rows)).abs().max()))
    for p in model.parameters():
        p.requires_grad_(True)
    return t_loop, t_batched, max_diff


def bench_sweep(n: int, ks: list[int]) -> None:
    from sklearn.cluster import SpectralClustering
    from sklearn.metrics import adjusted_rand_score

    from quanta.qdg.cluster import affinity, cosine_similarity, spectral_sweep

    rng = np.random.default_rng(0)
    truth = rng.integers(0, 100, n)
    g = rng.normal(size=(100, 64))[truth] + 0.5 * rng.normal(size=(n, 64))
    a = affinity(cosine_similarity(g), "relu")

    def ours(assign: str, ks: list[int]) -> dict[int, np.ndarray]:
        return spectral_sweep(a, ks, assign=assign, n_init=30, seed=0)

    def per_k(assign: str, ks: list[int]) -> dict[int, np.ndarray]:
        return {
            k: SpectralClustering(
                k, affinity="precomputed", n_init=30, assign_labels=assign, random_state=0
            ).fit_predict(a)
            for k in ks
        }

    times, labels = {}, {}
    for who, fn in (("ours", ours), ("sklearn", per_k)):
        for assign in ("kmeans", "cluster_qr"):
            fn(assign, ks[:1])  # warm-up: the first k-means / eigensolver call pays start-up
            t = time.perf_counter()
            labels[who, assign] = fn(assign, ks)
            times[who, assign] = time.perf_counter() - t
    base = times["sklearn", "kmeans"]
    print(f"(b) K sweep {ks} on {n} samples (100 planted clusters), k-means with n_init=30")
    print(f"    {'labels':12s} {'per-K SpectralClustering':>26s} {'one embedding, all K':>22s}")
    for assign in ("kmeans", "cluster_qr"):
        ref, ours = times["sklearn", assign], times["ours", assign]
        print(
            f"    {assign:12s} {ref:9.2f} s ({base / ref:5.2f}x) "
            f"{ours:13.2f} s ({base / ours:5.2f}x)   shared embedding saves {ref / ours:.2f}x"
        )
    print(
        "    (x: vs per-K SpectralClustering with k-means); the assigner's saving, "
        "k-means -> cluster_qr: "
        f"per-K {times['sklearn', 'kmeans'] / times['sklearn', 'cluster_qr']:.2f}x, "
        f"one embedding {times['ours', 'kmeans'] / times['ours', 'cluster_qr']:.2f}x"
    )
    for assign in ("kmeans", "cluster_qr"):
        agree = min(
            adjusted_rand_score(labels["sklearn", assign][k], labels["ours", assign][k]) for k in ks
        )
        print(f"    {assign}: min ARI(ours, sklearn) over K: {agree:.3f}")
    if 100 in ks:
        print(
            "    ARI vs truth at K=100: "
            + ", ".join(
                f"{who} {assign} {adjusted_rand_score(truth, labels[who, assign][100]):.3f}"
                for who in ("sklearn", "ours")
                for assign in ("kmeans", "cluster_qr")
            )
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--vjp", type=int, default=40, help="tokens for the batched-VJP comparison")
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--ks", default="10,20,50,100,200")
    args = ap.parse_args()
    bench_grads(args.samples, args.vjp)
    bench_sweep(args.n, [int(k) for k in args.ks.split(",")])


if __name__ == "__main__":
    main()
