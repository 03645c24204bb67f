"""Toy-engine speed, measured side by side in one run on this machine.

(a) sampler throughput against a per-task Python-loop generator like the paper's. Headline: both
    sides build the same dense float32 ``[B, n_tasks + n]`` one-hot batch. Also printed: our
    compact batch (uint8 ``[B, n]`` bits + int64 task ids), which is what the engine trains on —
    its layer 1 gathers the one-hot rows, so the dense batch is never needed;
(b) per-subtask evaluation of all subtasks: one batched pass vs one forward per subtask, both on
    the same prebuilt test set (ours compact, the baseline's dense per subtask), both warmed up;
    the time each side takes to build its test set is printed separately;
(c) one training step for the paper's 30 widths (9…500, n_tasks=500, n=100, k=3, batch 20000):
    fused vs one by one the paper's way (loop sampler, nn.Sequential + AdamW per width), with the
    split batch building / compute printed for both sides;
(d) achieved FLOP/s of the fused step as a fraction of a large f32 matmul.
(b) and (c) also time the fused engine with ``compute_dtype=bfloat16`` (``--precision bf16``:
    bf16 matmuls and activations, f32 weights, gradients and AdamW state) next to f32, in the
    same run; (d) its FLOP/s against a large bf16 matmul.

Every timing is the best of ``--repeat`` calls after one warm-up call, the same on both sides;
the fused f32 and bf16 steps alternate call by call.

Usage: python benchmarks/bench_parity.py [--threads 2] [--repeat 3] [--quick] [--clock cpu]
       [--no-eval]
``--clock cpu`` times with this process's CPU time (``time.process_time``) instead of the wall
clock: with ``--threads 1`` on a machine others load, it leaves out the time spent waiting for
a core (the matmul peaks in (d) are timed alike).
The baselines below are written from the paper's described procedure (PAPER.md §2), not copied.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from quanta.parity import FusedParityMLP, SparseParityTask, evaluate, paper_widths
from quanta.parity.model import member_losses


def best_time(
    fn: Callable[[], object],
    repeat: int,
    warmup: int = 1,
    clock: Callable[[], float] = time.perf_counter,
) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t = clock()
        fn()
        times.append(clock() - t)
    return min(times)


def best_split(
    step: Callable[[], tuple[float, float]], repeat: int, warmup: int = 1
) -> tuple[float, float]:
    """``(batch building, compute)`` seconds of the fastest of ``repeat`` calls of ``step``,
    which measures the split itself; ``warmup`` untimed calls first."""
    for _ in range(warmup):
        step()
    return min((step() for _ in range(repeat)), key=sum)


def best_splits(
    steps: list[Callable[[], tuple[float, float]]], repeat: int, warmup: int = 1
) -> list[tuple[float, float]]:
    """:func:`best_split` of several steps with their calls interleaved (a, b, a, b, …), so
    that a change of load on a shared machine hits both sides alike."""
    for _ in range(warmup):
        for step in steps:
            step()
    calls: list[list[tuple[float, float]]] = [[] for _ in steps]
    for _ in range(repeat):
        for i, step in enumerate(steps):
            calls[i].append(step())
    return [min(c, key=sum) for c in calls]


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
    ap.add_argument("--repeat", type=int, default=3, help="timed calls per measure (best kept)")
    ap.add_argument("--quick", action="store_true", help="fewer widths, a smaller test set")
    ap.add_argument("--no-eval", action="store_true", help="skip (b), the evaluation")
    ap.add_argument(
        "--clock",
        choices=["wall", "cpu"],
        default="wall",
        help="wall: perf_counter | cpu: this process's CPU time (time.process_time)",
    )
    args = ap.parse_args()
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    load = os.getloadavg()[0]
    torch.set_num_threads(args.threads)
    rep = args.repeat
    rows: list[tuple[str, str, str, str]] = []
    task = SparseParityTask(500, 100, 3, alpha=0.4)
    batch = 20_000
    rng = np.random.default_rng(0)
    gen = torch.Generator().manual_seed(0)

    # (a) sampler -------------------------------------------------------------------------
    t_loop = best_time(lambda: loop_sample(task, batch, rng), rep, clock=clock)
    t_dense = best_time(lambda: task.sample(batch, generator=gen), rep, clock=clock)
    t_compact = best_time(lambda: task.sample_compact(batch, generator=gen), rep, clock=clock)
    rows += [
        (
            "(a) sampler, dense f32 x [B, 600], samples/s",
            f"{batch / t_loop:,.0f}",
            f"{batch / t_dense:,.0f}",
            f"{t_loop / t_dense:.1f}x",
        ),
        (
            "    ours compact (u8 [B, 100] + ids), samples/s",
            f"{batch / t_loop:,.0f}",
            f"{batch / t_compact:,.0f}",
            f"{t_loop / t_compact:.1f}x",
        ),
    ]

    # (b) per-subtask evaluation --------------------------------------------------------
    # The paper: one forward per subtask and width. Ours: one pass over the per-task test set
    # for all widths at once. Both test sets are built once, before timing; building them is
    # timed separately (the paper's way: one dense batch per subtask from the loop sampler).
    m = 200 if args.quick else 1000
    t = clock()
    test = task.per_task_set(m, generator=gen)
    t_set_ours = clock() - t
    t = clock()
    # One allocation, split into per-subtask views: 500 separate 2.4 MB tensors fragmented the
    # heap and made every later allocation (ours included) several times slower.
    x_test, y_test = loop_batch(task, np.full(task.n_tasks, m))
    dense_test = list(zip(x_test.split(m), y_test.split(m), strict=True))
    t_set_base = clock() - t
    rows.append(
        (
            f"(b) build the test set, 500 x {m}, s",
            f"{t_set_base:.2f}",
            f"{t_set_ours:.2f}",
            f"{t_set_base / t_set_ours:.1f}x",
        )
    )
    for label, widths_b in (
        ("1 width (500)", [500]),
        (f"{len(paper_widths())} widths", list(paper_widths())),
    ):
        if args.no_eval or (args.quick and len(widths_b) > 1):
            continue
        fused_b = FusedParityMLP(500, 100, widths_b)
        nets_b = fused_b.member_modules()

        @torch.inference_mode()
        def per_task_forwards(nets_b: list[nn.Module] = nets_b) -> None:
            for net in nets_b:
                for x, y in dense_test:
                    out = net(x)
                    F.cross_entropy(out, y).item()
                    (out.argmax(1) == y).float().mean().item()

        t_ours = best_time(lambda f=fused_b: evaluate(f, test, task.probs), repeat=1, clock=clock)
        t_bf16 = best_time(
            lambda f=fused_b: evaluate(f, test, task.probs, compute_dtype=torch.bfloat16),
            repeat=1,
            clock=clock,
        )
        t_base = best_time(per_task_forwards, repeat=1, clock=clock)
        rows += [
            (
                f"(b) eval 500 subtasks x {m}, {label}, s",
                f"{t_base:.2f}",
                f"{t_ours:.2f}",
                f"{t_base / t_ours:.1f}x",
            ),
            (
                "    the same in bf16, s",
                f"{t_base:.2f}",
                f"{t_bf16:.2f}",
                f"{t_base / t_bf16:.1f}x",
            ),
        ]
    del x_test, y_test
    dense_test.clear()  # 1.2 GB at m = 1000, not needed past (b)

    # (c) one training step, 30 widths ----------------------------------------------------
    widths = list(paper_widths())
    if args.quick:
        widths = widths[::3]
    fused = FusedParityMLP(500, 100, widths)
    opt = torch.optim.AdamW(fused.parameters(), lr=1e-3)

    def fused_step(dtype: torch.dtype = torch.float32) -> tuple[float, float]:
        t0 = clock()
        b = task.sample_compact(batch, generator=gen)
        t1 = clock()
        fused.loss_and_grad(b.bits, b.task, b.y, compute_dtype=dtype)
        opt.step()
        return t1 - t0, clock() - t1

    def fused_autograd_step() -> tuple[float, float]:  # the same fusion through autograd
        t0 = clock()
        b = task.sample_compact(batch, generator=gen)
        t1 = clock()
        losses = member_losses(fused.forward_compact(b.bits, b.task), b.y).mean(0)
        opt.zero_grad(set_to_none=True)
        losses.sum().backward()
        opt.step()
        return t1 - t0, clock() - t1

    nets = fused.member_modules()
    opts = [torch.optim.AdamW(n.parameters(), lr=1e-3) for n in nets]

    def one_by_one_step() -> tuple[float, float]:
        # Each width is its own job: own batch, own net, own AdamW.
        building = compute = 0.0
        for n, o in zip(nets, opts, strict=True):
            t0 = clock()
            x, y = loop_sample(task, batch, rng)
            t1 = clock()
            loss = F.cross_entropy(n(x), y)
            o.zero_grad(set_to_none=True)
            loss.backward()
            o.step()
            building, compute = building + t1 - t0, compute + clock() - t1
        return building, compute

    (fused_b_s, fused_c_s), (bf16_b_s, bf16_c_s) = best_splits(
        [fused_step, lambda: fused_step(torch.bfloat16)], rep
    )
    auto_b_s, auto_c_s = best_split(fused_autograd_step, rep)
    single_b_s, single_c_s = best_split(one_by_one_step, rep)
    t_fused, t_single = fused_b_s + fused_c_s, single_b_s + single_c_s
    t_bf16 = bf16_b_s + bf16_c_s
    rows += [
        (
            f"(c) train step, {len(widths)} widths, total s",
            f"{t_single:.3f}",
            f"{t_fused:.3f}",
            f"{t_single / t_fused:.1f}x",
        ),
        (
            f"    batch building (paper: {len(widths)} batches), s",
            f"{single_b_s:.3f}",
            f"{fused_b_s:.3f}",
            f"{single_b_s / fused_b_s:.1f}x",
        ),
        (
            "    compute (fwd + bwd + AdamW), s",
            f"{single_c_s:.3f}",
            f"{fused_c_s:.3f}",
            f"{single_c_s / fused_c_s:.1f}x",
        ),
        (
            "    bf16 (--precision bf16), total s",
            f"{t_single:.3f}",
            f"{t_bf16:.3f}",
            f"{t_single / t_bf16:.1f}x",
        ),
        (
            "    bf16, compute s",
            f"{single_c_s:.3f}",
            f"{bf16_c_s:.3f}",
            f"{single_c_s / bf16_c_s:.1f}x",
        ),
        (
            "    bf16 vs f32 fused (same run), total / compute",
            f"f32 {t_fused:.3f} / {fused_c_s:.3f}",
            f"bf16 {t_bf16:.3f} / {bf16_c_s:.3f}",
            f"{t_fused / t_bf16:.2f}x / {fused_c_s / bf16_c_s:.2f}x",
        ),
        (
            "    the same fusion via autograd, total s",
            f"{t_single:.3f}",
            f"{auto_b_s + auto_c_s:.3f}",
            f"{t_single / (auto_b_s + auto_c_s):.1f}x",
        ),
        (
            "    the same fusion via autograd, compute s",
            f"{single_c_s:.3f}",
            f"{auto_c_s:.3f}",
            f"{single_c_s / auto_c_s:.1f}x",
        ),
    ]

    # (d) FLOP/s --------------------------------------------------------------------------
    a = torch.randn(4096, 4096)
    t_mm = best_time(lambda: a @ a, rep, clock=clock)
    peak = 2 * 4096**3 / t_mm
    a16 = a.bfloat16()
    peak16 = 2 * 4096**3 / best_time(lambda: a16 @ a16, rep, clock=clock)
    hidden, n_members, c, n = sum(widths), len(widths), 2, task.n_bits
    # executed matmul FLOPs: layer 1 forward + weight grad (inputs need no grad); layer 2
    # forward, input grad and weight grad on blocks of up to 10 members' block-diagonal weights,
    # C − 1 = 1 logit a member (the step computes z_1 − z_0 only, quanta.parity.step).
    blocks = [min(10, n_members - i) for i in range(0, n_members, 10)]
    block_units = [sum(widths[i : i + 10]) for i in range(0, n_members, 10)]
    layer2 = sum(u * mb * (c - 1) for u, mb in zip(block_units, blocks, strict=True))
    executed = 2 * batch * n * hidden * 2 + 2 * batch * layer2 * 3
    # FLOPs M independent nets need at minimum (with the one-hot gather): layer 2 is [H, C].
    useful = 2 * batch * n * hidden * 2 + 2 * batch * hidden * c * 3
    rows.append(
        (
            "(d) fused step compute, GFLOP/s (exec / useful)",
            f"matmul peak {peak / 1e9:.0f}",
            f"{executed / fused_c_s / 1e9:.0f} / {useful / fused_c_s / 1e9:.0f}",
            f"{executed / fused_c_s / peak:.0%} / {useful / fused_c_s / peak:.0%} of peak",
        )
    )
    rows.append(
        (
            "    bf16 step compute, GFLOP/s (exec / useful)",
            f"bf16 matmul peak {peak16 / 1e9:.0f}",
            f"{executed / bf16_c_s / 1e9:.0f} / {useful / bf16_c_s / 1e9:.0f}",
            f"{executed / bf16_c_s / peak16:.0%} / {useful / bf16_c_s / peak16:.0%} of peak",
        )
    )

    print(
        f"threads={args.threads}  torch {torch.__version__}  n_tasks=500 n=100 k=3 batch={batch}"
        f"  best of {rep} after 1 warm-up ((b): 1 after 1); {args.clock} clock ({clock.__name__}),"
        f" load average at start {load:.2f}"
    )
    head = ("measure", "paper's way", "quanta", "ratio")
    w = [max(len(r[i]) for r in [*rows, head]) for i in range(4)]
    for r in [head, *rows]:
        print("  ".join(s.ljust(w[i]) for i, s in enumerate(r)))


if __name__ == "__main__":
    main()
