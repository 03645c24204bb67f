"""The cost of a checkpoint's weights fingerprint (quanta.lm.fingerprint) beside loading it.

One model, Pythia-70m's shape (GPT-NeoX, d=512, 6 layers, vocabulary 50,304; 70M parameters,
282 MB in float32), randomly initialized from a seed and saved once as safetensors. Measured
side by side in one process, each repeated and the best time kept (a shared machine's noise
only ever adds time): ``load`` — ``quanta.lm.suite.load_model`` from disk (safetensors are
memory-mapped, so a warm page cache makes this mostly lazy); ``batch`` — one forward of the
losses engine's default batch (8 × 1024 tokens, inference mode), the work every column does
many times over; then the state dict hashed by XXH3-128 (``xxhash``, what quanta uses),
XXH3-64, BLAKE2b (``hashlib``, the standard library's fastest cryptographic hash) and SHA-256.
Printed: MB/s of each hash and its time as a fraction of one batch.

Usage: python benchmarks/bench_fingerprint.py [--repeat 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _hash_state(model: Any, new: Callable[[], Any]) -> str:
    """The fingerprint's loop (name, dtype, shape, bytes in name order) with hasher ``new``."""
    import torch

    digest = new()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
        digest.update(t.reshape(-1).contiguous().cpu().view(torch.uint8).numpy().data)
    return str(digest.hexdigest())


def _best(fn: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    import torch
    import xxhash
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    from quanta.lm.fingerprint import weights_fingerprint
    from quanta.lm.suite import ModelRef, load_model

    torch.set_num_threads(args.threads)
    cfg = GPTNeoXConfig(
        vocab_size=50304,
        hidden_size=512,
        num_hidden_layers=6,
        num_attention_heads=8,
        intermediate_size=2048,
    )
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        GPTNeoXForCausalLM(cfg).save_pretrained(tmp)
        ref = ModelRef("pythia-70m-shape", str(Path(tmp)))
        model = load_model(ref)
        size = sum(t.numel() * t.element_size() for t in model.state_dict().values())
        load = _best(lambda: load_model(ref), args.repeat)
        ids = torch.randint(
            0, cfg.vocab_size, (8, 1024), generator=torch.Generator().manual_seed(0)
        )

        def forward() -> None:
            with torch.inference_mode():
                model(ids)

        batch = _best(forward, max(1, args.repeat // 2))
        hashes = {
            "xxh3_128 (quanta)": lambda: weights_fingerprint(model),
            "xxh3_64": lambda: _hash_state(model, xxhash.xxh3_64),
            "blake2b": lambda: _hash_state(model, hashlib.blake2b),
            "sha256": lambda: _hash_state(model, hashlib.sha256),
        }
        print(
            f"state dict {size / 1e6:.1f} MB; load_model {load:.3f} s; one 8×1024-token batch "
            f"{batch:.3f} s ({args.threads} thread(s), best of {args.repeat})"
        )
        print(f"{'hash':>18}  {'seconds':>8}  {'MB/s':>7}  {'of batch':>8}")
        for name, fn in hashes.items():
            seconds = _best(fn, args.repeat)
            rate = size / 1e6 / seconds
            print(f"{name:>18}  {seconds:8.3f}  {rate:7.0f}  {seconds / batch:8.2%}")


if __name__ == "__main__":
    main()
