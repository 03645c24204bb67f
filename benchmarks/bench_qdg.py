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
(c) Exact similarities (``--similarity exact``) vs the sketch, same model, ``--exact-samples``
tokens: seconds of the CountSketch pass (``projection_dim=8192``, one backward per sample), of
the exact rows stored (``projection_dim=None``), and of :func:`exact_gram` with one block and
with ``--blocks`` blocks (each block recomputes every gradient); the Gram matrix checked
against ``X Xᵀ`` of the stored rows; then the cosine error of CountSketches of several sizes
against the exact cosines over all pairs i < j — RMS and max — relative to the spread (std)
of the exact cosines themselves, the scale that the clustering sees.

Usage: python benchmarks/bench_qdg.py [--parts abc] [--samples 200] [--vjp 40] [--n 3000]
    [--ks 10,20,50,100,200] [--exact-samples 40] [--blocks 4]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np


def _setup(tmp: str, samples: int) -> tuple[Any, Any, Any]:
    """GPT-NeoX of the cpu mini-suite's largest shape (random init, seed 0), 20 stdlib
    documents ≤ 512 tokens and a seeded subset of ``samples`` of their tokens."""
    import torch
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    from quanta.lm.corpus import load_documents, tokenize_documents
    from quanta.lm.minisuite import train_tokenizer
    from quanta.qdg.select import select_tokens

    torch.manual_seed(0)
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
    return model, corpus, chosen


def bench_grads(samples: int, vjp: int) -> None:
    from quanta.qdg.grads import naive_token_gradient, per_token_gradients, select_params

    with tempfile.TemporaryDirectory() as tmp:
        model, corpus, chosen = _setup(tmp, samples)
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

    from quanta.lm.head import document_losses

    tensors = [p for _, p in params]
    keep = {id(p) for p in tensors}
    for p in model.parameters():
        p.requires_grad_(id(p) in keep)  # per_token_gradients' setting: only these need grads
    t_loop = t_batched = max_diff = 0.0
    for doc, group in chosen.groupby("doc_id", sort=False):
        pos = torch.from_numpy(group["pos"].to_numpy().astype(np.int64))
        ids = torch.from_numpy(corpus.doc(int(doc))[: int(pos.max()) + 1].astype(np.int64))[None]
        t = time.perf_counter()
        losses = document_losses(model, ids, pos, "chunked")
        rows = [
            torch.cat([g.reshape(-1) for g in torch.autograd.grad(li, tensors, retain_graph=True)])
            for li in losses
        ]
        t_loop += time.perf_counter() - t
        t = time.perf_counter()
        losses = document_losses(model, ids, pos, "chunked")
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


def bench_exact(samples: int, blocks: int) -> None:
    from quanta.qdg.cluster import cosine_from_gram, cosine_similarity
    from quanta.qdg.grads import CountSketch, exact_gram, per_token_gradients

    with tempfile.TemporaryDirectory() as tmp:
        model, corpus, chosen = _setup(tmp, samples)
        warm = chosen.head(2)  # every variant warmed up alike
        per_token_gradients(model, corpus, warm, Path(tmp) / "w.npy", projection_dim=8192)
        exact_gram(model, corpus, warm)
        seconds: dict[str, tuple[float, float]] = {}  # wall, CPU (all threads of this process)

        def timed(key: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
            wall, cpu = time.perf_counter(), time.process_time()
            result = fn(*args, **kwargs)
            seconds[key] = (time.perf_counter() - wall, time.process_time() - cpu)
            return result

        sketch_file, rows_file = Path(tmp) / "s.npy", Path(tmp) / "x.npy"
        timed(
            "sketch", per_token_gradients, model, corpus, chosen, sketch_file, projection_dim=8192
        )
        info = timed("rows", per_token_gradients, model, corpus, chosen, rows_file)
        gram1, _ = timed("gram1", exact_gram, model, corpus, chosen)
        dim = info["dim"]
        gram, ginfo = timed(
            "gram", exact_gram, model, corpus, chosen, block_params=-(-dim // blocks)
        )
        x = np.load(Path(tmp) / "x.npy").astype(np.float64)
    xx = x @ x.T
    rel = float(np.abs(gram - xx).max() / np.abs(xx).max())
    rel1 = float(np.abs(gram - gram1).max() / np.abs(xx).max())
    n = len(chosen)
    upper = np.triu_indices(n, 1)
    exact = cosine_from_gram(gram).astype(np.float64)[upper]
    spread = float(exact.std())
    print(
        f"(c) exact similarities of {n} tokens in {chosen['doc_id'].nunique()} documents, "
        f"{dim:,} dims (random-init model)"
    )
    cpu0 = seconds["sketch"][1]
    print("    wall s, CPU s (all threads), CPU vs the sketch's")
    for key, what in (
        ("sketch", "CountSketch 8192 (one pass)"),
        ("rows", "exact rows stored (one pass)"),
        ("gram1", "exact_gram, 1 block"),
        ("gram", f"exact_gram, {ginfo['n_blocks']} blocks"),
    ):
        wall, cpu = seconds[key]
        print(f"    {what:28s} {wall:7.2f} s  {cpu:7.2f} s  {cpu / cpu0:5.2f}x")
    print(
        f"    max |G - X Xᵀ| / max |X Xᵀ|: {rel:.1e} ({ginfo['n_blocks']} blocks), "
        f"1 vs {ginfo['n_blocks']} blocks: {rel1:.1e}"
    )
    print(
        f"    exact cosines over {len(exact):,} pairs: mean {exact.mean():.4f}, "
        f"std (spread) {spread:.4f}, mean |cos| {np.abs(exact).mean():.4f}"
    )
    for k in (1024, 8192, 65536):
        import torch

        sketch = CountSketch(dim, k, seed=0)(torch.from_numpy(x.astype(np.float32))).numpy()
        err = cosine_similarity(sketch).astype(np.float64)[upper] - exact
        rms = float(np.sqrt((err**2).mean()))
        print(
            f"    CountSketch {k:6d}: cosine error RMS {rms:.4f} ({rms / spread:.2f}x the spread), "
            f"max {np.abs(err).max():.4f} ({np.abs(err).max() / spread:.2f}x); 1/sqrt(k) = "
            f"{k**-0.5:.4f}"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--vjp", type=int, default=40, help="tokens for the batched-VJP comparison")
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--ks", default="10,20,50,100,200")
    ap.add_argument("--parts", default="abc", help="which of (a), (b), (c) to run")
    ap.add_argument("--exact-samples", type=int, default=40)
    ap.add_argument("--blocks", type=int, default=4, help="(c): parameter blocks of exact_gram")
    args = ap.parse_args()
    if "a" in args.parts:
        bench_grads(args.samples, args.vjp)
    if "b" in args.parts:
        bench_sweep(args.n, [int(k) for k in args.ks.split(",")])
    if "c" in args.parts:
        bench_exact(args.exact_samples, args.blocks)


if __name__ == "__main__":
    main()
