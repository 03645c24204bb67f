"""QDG: per-token gradients vs a naive loop, and the K sweep vs per-K SpectralClustering.

(a) Gradients of n selected tokens' losses: ours (truncated context per token, output head only
at the token, rows streamed to disk; and the shared-forward-per-document variant) vs the naive
loop (a fresh forward and backward of each token's loss over its truncated context, full
logits, nothing stored), same model (GPT-NeoX of the cpu
mini-suite's largest shape, random init) and tokens. Both do one backward per sample; the
paper's code did ≈ 21× more (recomputed per block pair of the similarity matrix).
(b) Cluster labels for every K in a sweep on planted clusters: ours (one spectral embedding for
the largest K, k-means with n_init=30 on its leading K columns) vs scikit-learn's
``SpectralClustering(n_clusters=K, affinity="precomputed", n_init=30)`` for each K.

Usage: python benchmarks/bench_qdg.py [--samples 200] [--n 3000] [--ks 10,20,50,100,200]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def bench_grads(samples: int) -> None:
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
        t = time.perf_counter()
        info = per_token_gradients(model, corpus, chosen, Path(tmp) / "g.npy")
        ours = time.perf_counter() - t
        t = time.perf_counter()
        per_token_gradients(model, corpus, chosen, Path(tmp) / "s.npy", shared_forward=True)
        shared = time.perf_counter() - t
        params = select_params(model)
        t = time.perf_counter()
        for r in chosen.itertuples():
            naive_token_gradient(model, corpus, int(r.doc_id), int(r.pos), params)
        naive = time.perf_counter() - t
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


def bench_sweep(n: int, ks: list[int]) -> None:
    from sklearn.cluster import SpectralClustering
    from sklearn.metrics import adjusted_rand_score

    from quanta.qdg.cluster import affinity, cosine_similarity, spectral_sweep

    rng = np.random.default_rng(0)
    truth = rng.integers(0, 100, n)
    g = rng.normal(size=(100, 64))[truth] + 0.5 * rng.normal(size=(n, 64))
    a = affinity(cosine_similarity(g), "relu")
    t = time.perf_counter()
    ours = spectral_sweep(a, ks, assign="kmeans", n_init=30, seed=0)
    t_ours = time.perf_counter() - t
    t = time.perf_counter()
    qr = spectral_sweep(a, ks, assign="cluster_qr", seed=0)
    t_qr = time.perf_counter() - t
    t = time.perf_counter()
    ref = {
        k: SpectralClustering(k, affinity="precomputed", n_init=30, random_state=0).fit_predict(a)
        for k in ks
    }
    t_ref = time.perf_counter() - t
    agree = min(adjusted_rand_score(ref[k], ours[k]) for k in ks)
    print(f"(b) K sweep {ks} on {n} samples (100 planted clusters), k-means n_init=30")
    print(f"    per-K SpectralClustering {t_ref:7.2f} s")
    print(f"    one embedding, all K     {t_ours:7.2f} s   ratio {t_ref / t_ours:.2f}x")
    print(f"    same, cluster_qr labels  {t_qr:7.2f} s   ratio {t_ref / t_qr:.2f}x")
    print(f"    min ARI(ours, sklearn) over K: {agree:.3f}")
    if 100 in ours:
        print(
            f"    ARI vs truth at K=100: sklearn {adjusted_rand_score(truth, ref[100]):.3f}, "
            f"ours k-means {adjusted_rand_score(truth, ours[100]):.3f}, "
            f"ours cluster_qr {adjusted_rand_score(truth, qr[100]):.3f}"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--ks", default="10,20,50,100,200")
    args = ap.parse_args()
    bench_grads(args.samples)
    bench_sweep(args.n, [int(k) for k in args.ks.split(",")])


if __name__ == "__main__":
    main()
