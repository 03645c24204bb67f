"""Toy-engine speed, measured side by side in one run on this machine.

(a) sampler throughput: ours vs a per-task Python-loop generator like the paper's;
(b) per-subtask evaluation of all subtasks: one batched pass vs one forward per subtask;
(c) one training step for the paper's 30 widths (9…500, n_tasks=500, n=100, k=3, batch 20000):
    fused vs one by one the paper's way (loop sampler, nn.Sequential + AdamW per width);
(d) achieved FLOP/s of the fused step as a fraction of a large f32 matmul.

Usage: python benchmarks/bench_parity.py [--threads 2] [--quick]
The baselines below are written from the paper's described procedure (PAPER.md §2), not copied.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from quanta.parity import FusedParityMLP, SparseParityTask, evaluate, paper_widths
from quanta.parity.model import member_losses


def best_time(fn: Callable[[], object], repeat: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


# ---- the paper's way ---------------------------------------------------------------------
def loop_batch(task: SparseParityTask, sizes: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Dense batch built task by task in Python, ``sizes[i]`` samples of task i."""
    n_tasks, n = task.n_tasks, task.n_bits
    x_all = torch.zeros((int(sizes.sum()), n_tasks + n))
    y_all = torch.zeros(int(sizes.sum()), dtype=torch.int64)
    start = 0
    for i, size in enumerate(sizes.tolist()):
        if size == 0:
            continue
        bits = torch.randint(0, 2, (size, n)).float()
        y = bits[:, task.subsets[i]].sum(1).long() % 2
        code = torch.zeros(size, n_tasks)
        code[:, i] = 1
        x_all[start : start + size] = torch.cat([code, bits], dim=1)
        y_all[start : start + size] = y
        start += size
    return x_all, y_all


def loop_sample(task: SparseParityTask, batch: int, rng: np.random.Generator):
    cdf = np.cumsum(task.probs.numpy())
    draws = np.minimum(np.searchsorted(cdf, rng.random(batch)), task.n_tasks - 1)
    return loop_batch(task, np.bincount(draws, minlength=task.n_tasks))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="fewer widths and repeats")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows: list[tuple[str, str, str, str]] = []
    task = SparseParityTask(500, 100, 3, alpha=0.4)
    batch = 20_000
    rng = np.random.default_rng(0)
    gen = torch.Generator().manual_seed(0)

    # (a) sampler -------------------------------------------------------------------------
    t_loop = best_time(lambda: loop_sample(task, batch, rng), repeat=3)
    t_compact = best_time(lambda: task.sample_compact(batch, generator=gen), repeat=10)
    t_dense = best_time(lambda: task.sample(batch, generator=gen), repeat=10)
    rows += [
        (
            "(a) sampler, samples/s",
            f"{batch / t_loop:,.0f}",
            f"{batch / t_compact:,.0f}",
            f"{t_loop / t_compact:.0f}x (compact); {t_loop / t_dense:.0f}x (dense x)",
        )
    ]

    # (b) per-subtask evaluation --------------------------------------------------------
    # The paper: every evaluation draws a fresh batch per subtask and runs one forward each,
    # one job per width. Ours: one pass over a fixed per-task test set for all widths at once.
    m = 200 if args.quick else 1000
    test = task.per_task_set(m, generator=gen)
    for label, widths_b in (
        ("1 width (500)", [500]),
        (f"{len(paper_widths())} widths", list(paper_widths())),
    ):
        if args.quick and len(widths_b) > 1:
            continue
        fused_b = FusedParityMLP(500, 100, widths_b)
        nets_b = fused_b.member_modules()
        t_ours = best_time(lambda f=fused_b: evaluate(f, test, task.probs), repeat=1)

        @torch.inference_mode()
        def per_task_forwards(nets_b: list[nn.Module] = nets_b) -> None:
            for net in nets_b:
                for i in range(task.n_tasks):
                    sizes = np.zeros(task.n_tasks, dtype=np.int64)
                    sizes[i] = m
                    x, y = loop_batch(task, sizes)
                    out = net(x)
                    F.cross_entropy(out, y).item()
                    (out.argmax(1) == y).float().mean().item()

        t_base = best_time(per_task_forwards, repeat=1, warmup=0)
        rows.append(
            (
                f"(b) eval 500 subtasks x {m}, {label}, s",
                f"{t_base:.2f}",
                f"{t_ours:.2f}",
                f"{t_base / t_ours:.1f}x",
            )
        )

    # (c) one training step, 30 widths ----------------------------------------------------
    widths = list(paper_widths())
    if args.quick:
        widths = widths[::3]
    fused = FusedParityMLP(500, 100, widths)
    opt = torch.optim.AdamW(fused.parameters(), lr=1e-3)

    def fused_step() -> None:
        b = task.sample_compact(batch, generator=gen)
        fused.loss_and_grad(b.bits, b.task, b.y)
        opt.step()

    def fused_autograd_step() -> None:  # the same fusion through autograd, for comparison
        b = task.sample_compact(batch, generator=gen)
        losses = member_losses(fused.forward_compact(b.bits, b.task), b.y).mean(0)
        opt.zero_grad(set_to_none=True)
        losses.sum().backward()
        opt.step()

    nets = fused.member_modules()
    opts = [torch.optim.AdamW(n.parameters(), lr=1e-3) for n in nets]

    def one_by_one_step() -> None:
        # Each width is its own job: own batch, own net, own AdamW.
        for n, o in zip(nets, opts, strict=True):
            x, y = loop_sample(task, batch, rng)
            loss = F.cross_entropy(n(x), y)
            o.zero_grad(set_to_none=True)
            loss.backward()
            o.step()

    t_fused = best_time(fused_step, repeat=5)
    t_autograd = best_time(fused_autograd_step, repeat=2)
    t_single = best_time(one_by_one_step, repeat=2)
    rows.append(
        (
            f"(c) train step, {len(widths)} widths, s",
            f"{t_single:.3f}",
            f"{t_fused:.3f}",
            f"{t_single / t_fused:.1f}x",
        )
    )
    rows.append(
        (
            "    the same fusion via autograd, s",
            f"{t_single:.3f}",
            f"{t_autograd:.3f}",
            f"{t_single / t_autograd:.1f}x",
        )
    )

    # (d) FLOP/s --------------------------------------------------------------------------
    a = torch.randn(4096, 4096)
    t_mm = best_time(lambda: a @ a, repeat=3)
    peak = 2 * 4096**3 / t_mm
    hidden, n_members, c, n = sum(widths), len(widths), 2, task.n_bits
    # executed matmul FLOPs: layer 1 forward + weight grad (inputs need no grad); layer 2
    # forward, input grad and weight grad on blocks of up to 10 members' block-diagonal weights.
    blocks = [min(10, n_members - i) for i in range(0, n_members, 10)]
    block_units = [sum(widths[i : i + 10]) for i in range(0, n_members, 10)]
    layer2 = sum(u * mb * c for u, mb in zip(block_units, blocks, strict=True))
    executed = 2 * batch * n * hidden * 2 + 2 * batch * layer2 * 3
    # FLOPs M independent nets need at minimum (with the one-hot gather): layer 2 is [H, C].
    useful = 2 * batch * n * hidden * 2 + 2 * batch * hidden * c * 3
    rows.append(
        (
            "(d) fused step GFLOP/s (executed / useful)",
            f"matmul peak {peak / 1e9:.0f}",
            f"{executed / t_fused / 1e9:.0f} / {useful / t_fused / 1e9:.0f}",
            f"{executed / t_fused / peak:.0%} / {useful / t_fused / peak:.0%} of peak",
        )
    )

    print(f"threads={args.threads}  torch {torch.__version__}  n_tasks=500 n=100 k=3 batch={batch}")
    head = ("measure", "paper's way", "quanta", "ratio")
    w = [max(len(r[i]) for r in [*rows, head]) for i in range(4)]
    for r in [head, *rows]:
        print("  ".join(s.ljust(w[i]) for i, s in enumerate(r)))


if __name__ == "__main__":
    main()
