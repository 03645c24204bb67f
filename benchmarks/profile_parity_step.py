"""Where one P1 training step's time goes: ``torch.profiler`` op split of ``loss_and_grad``.

P1 shape: n_tasks = 500, n = 100, k = 3, α = 0.4, batch 20,000, the paper's 30 widths fused
(H = 3,877). Prints, per precision, the step's best CPU time (``time.process_time``, best of
``--repeat`` after one warm-up, no profiler) and the profiler's self-CPU time per op of one
more call (the profiler adds its own overhead: shares, not absolute times).

Usage: python benchmarks/profile_parity_step.py [--threads 1] [--repeat 5] [--rows 12]
"""

from __future__ import annotations

import argparse
import os
import time

import torch
from torch.profiler import ProfilerActivity, profile

from quanta.parity import FusedParityMLP, SparseParityTask, paper_widths
from quanta.parity.step import _STEP_BLOCK_BYTES


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--rows", type=int, default=12, help="ops listed per precision")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    task = SparseParityTask(500, 100, 3, alpha=0.4)
    net = FusedParityMLP(500, 100, list(paper_widths()))
    b = task.sample_compact(20_000, generator=torch.Generator().manual_seed(0))

    def rows(dtype: torch.dtype) -> int:  # the step's default row blocks
        return net.chunk_rows(_STEP_BLOCK_BYTES, dtype=dtype)

    print(
        f"torch {torch.__version__}, {args.threads} thread(s), H = {sum(net.widths)}, "
        f"{rows(torch.float32)} (f32) and {rows(torch.bfloat16)} (bf16) rows a block; "
        f"process_time; load average {os.getloadavg()[0]:.2f}"
    )
    for name, dtype in (("f32", torch.float32), ("bf16", torch.bfloat16)):

        def step(dtype: torch.dtype = dtype) -> None:
            net.loss_and_grad(b.bits, b.task, b.y, compute_dtype=dtype)

        step()
        times = []
        for _ in range(args.repeat):
            t = time.process_time()
            step()
            times.append(time.process_time() - t)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            step()
        ops = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
        total = sum(e.self_cpu_time_total for e in ops)
        print(f"\n{name}: loss_and_grad best {min(times) * 1e3:.1f} ms (of {args.repeat})")
        print(f"  {'op':32s} {'calls':>6s} {'self ms':>9s} {'share':>6s}")
        for e in ops[: args.rows]:
            ms = e.self_cpu_time_total / 1e3
            print(f"  {e.key:32s} {e.count:6d} {ms:9.1f} {e.self_cpu_time_total / total:6.1%}")


if __name__ == "__main__":
    main()
