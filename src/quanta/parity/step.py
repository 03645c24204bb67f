"""The fused training step's explicit forward and backward (:meth:`FusedParityMLP.loss_and_grad`).

Autograd through :meth:`~quanta.parity.model.FusedParityMLP.forward_compact` gives the same
numbers (``tests/test_model.py``, ``tests/test_bf16.py``); this path is faster because of what
it knows about the net (``benchmarks/profile_parity_step.py`` prints the op split):

* **Row blocks** of :meth:`~quanta.parity.model.FusedParityMLP.chunk_rows` so the
  ``[rows, H]`` activations stay in the cache, written into two buffers reused by every block
  (a fresh ~8 MiB float32 block per op cost more than the op: first-touch page faults).
* **Rows in task order** (a stable sort of the batch; the loss is a mean over rows, so the
  order changes only float rounding): most blocks of a Zipf batch then lie inside one task's
  run; such a block broadcasts that task's table row in ``addmm`` (no ``[r, H]`` gather) and
  adds its control-bit gradient as one float32 column sum (no ``index_add_``). The other
  blocks gather and ``index_add_`` as before, on sorted ids.
* **C − 1 logits a member.** Softmax cross-entropy depends on the logits only through
  ``d_c = z_c − z_0``, so the step's layer 2 computes ``d = h @ (w2_c − w2_0) + (b2_c − b2_0)``
  for c ≥ 1 (half the columns at C = 2), and ``∂L/∂z_0 = −Σ_{c≥1} ∂L/∂z_c`` (softmax and
  one-hot both sum to 1) gives class 0's gradient. Layer 2 runs transposed, ``d.T = V.T @ h.T``
  (``[M·(C−1), r]``), which the BLAS runs faster than ``h @ V`` for these skinny shapes. At
  C = 2 the loss head works on ``d`` directly (softplus, sigmoid: a few passes over ``[M, r]``).
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from quanta.parity.model import FusedParityMLP

__all__ = ["explicit_loss_and_grad", "hidden_block"]

# Row blocks of ~4 MiB of [rows, H] activations in the compute dtype (the evaluation's 8 MiB of
# float32 is 540 rows at the P1 shape, H = 3877). One thread, loaded 2-core EPYC, process_time,
# best of 6-7 interleaved whole steps (one-off /tmp scripts, 2026-12-04): bf16 at 270 / 405 /
# 540 / 810 rows 262 / 240 / 239 / 254 ms; f32 at 270 / 540 rows 511 / 533 ms (one member a
# head block). Differences of a few percent were not reproducible run to run on that machine.
_STEP_BLOCK_BYTES = 4 << 20
# Members per layer-2 block of the step's head (1 logit a member at C = 2), by compute dtype:
# float32 ran one member a block fastest, bf16 ten (P1 widths, 540 rows, one thread, loaded
# machine, process_time; one-off /tmp scripts). Layer 2 alone (fwd + both grads): f32 43 / 49 /
# 80 / 189 ms at 1 / 3 / 10 / 30 members, bf16 109 / 49 / 30 / 49 ms; the whole f32 step, best
# of 7 interleaved: 496 / 497 / 505 ms at 1 / 3 / 10.
_HEAD_MEMBERS_PER_BLOCK = {torch.float32: 1, torch.bfloat16: 10}


def hidden_block(
    xb: torch.Tensor,
    t: torch.Tensor,
    table: torch.Tensor,
    w_bits: torch.Tensor,
    t2: torch.Tensor | None = None,
    ctrl2: torch.Tensor | None = None,
    *,
    out: torch.Tensor,
    one_task: bool = False,
) -> torch.Tensor:
    """``relu(table[t] (+ ctrl2[t2]) + xb @ w_bits)`` into ``out[:r]``, in place: ``[r, H]``
    (``one_task``: every row's task is ``t[0]``, whose table row is then broadcast)."""
    if one_task:  # no [r, H] gather: addmm broadcasts the one row
        pre = torch.addmm(table[t[:1]], xb, w_bits, out=out[: t.numel()])
        if t2 is not None and ctrl2 is not None:
            pre.add_(ctrl2.index_select(0, t2))
        return pre.relu_()
    pre = torch.index_select(table, 0, t, out=out[: t.numel()])  # (r, H)
    if t2 is not None and ctrl2 is not None:
        pre.add_(ctrl2.index_select(0, t2))
    return pre.addmm_(xb, w_bits).relu_()


def explicit_loss_and_grad(
    net: FusedParityMLP,
    bits: torch.Tensor,
    task: torch.Tensor,
    y: torch.Tensor,
    *,
    chunk_rows: int | None,
    compute_dtype: torch.dtype,
    task2: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:meth:`FusedParityMLP.loss_and_grad` (see there); sets ``.grad`` of every parameter."""
    n_rows, n_members = task.numel(), net.n_members
    rows = min(chunk_rows or net.chunk_rows(_STEP_BLOCK_BYTES, dtype=compute_dtype), max(n_rows, 1))
    bits, task, y, task2 = _sorted_by_task(bits, task, y, task2)
    starts = torch.arange(0, n_rows, rows, device=task.device)
    # Blocks inside one task's run (most of a Zipf batch's rows): one host sync per step.
    one_task = (task[starts] == task[(starts + rows).clamp_(max=n_rows) - 1]).tolist()
    with torch.no_grad():
        table, w_bits, head, head_bias = _step_weights(net, compute_dtype)
        ctrl2 = None if task2 is None else net._ctrl2(net.w_ctrl).to(compute_dtype)
        g_ctrl2 = None if ctrl2 is None else torch.zeros_like(ctrl2, dtype=torch.float32)
        g_table = torch.zeros_like(table, dtype=torch.float32)
        g_bits = torch.zeros_like(w_bits, dtype=torch.float32)
        g_head = torch.zeros_like(head, dtype=torch.float32)  # (M·(C-1), H)
        g_head_bias = torch.zeros(head.shape[0], device=table.device)
        sums = torch.zeros(2, n_members, dtype=torch.float64, device=table.device)
        hidden_buf, dhidden_buf = table.new_empty(2, rows, table.shape[1]).unbind(0)
        d_buf = table.new_empty(head.shape[0], rows)  # (M·(C-1), rows)
        blocks = _head_blocks(net.widths, net.n_classes, compute_dtype)
        for start, single in zip(range(0, n_rows, rows), one_task, strict=True):
            t, yb = task[start : start + rows], y[start : start + rows]
            xb = bits[start : start + rows].to(compute_dtype)  # (r, n)
            t2 = None if task2 is None else task2[start : start + rows]
            r = t.numel()
            hidden = hidden_block(xb, t, table, w_bits, t2, ctrl2, out=hidden_buf, one_task=single)
            d_t = d_buf[:, :r]  # (M·(C-1), r)
            for us, ds in blocks:
                torch.addmm(head_bias[ds, None], head[ds, us], hidden[:, us].T, out=d_t[ds])
            dd_t = _loss_head(d_t, yb, n_rows, sums, n_members, net.n_classes)  # f32
            g_head_bias += dd_t.sum(dim=1)
            dd_t = dd_t.to(compute_dtype)
            dhidden = dhidden_buf[:r]
            for us, ds in blocks:
                _add_mm(g_head[ds, us], dd_t[ds], hidden[:, us])
                torch.mm(dd_t[ds].T, head[ds, us], out=dhidden[:, us])
            # d pre = d hidden where the unit was active, in place.
            dpre = torch.ops.aten.threshold_backward.grad_input(
                dhidden, hidden, 0, grad_input=dhidden
            )
            _add_mm(g_bits, xb.T, dpre)
            if single:  # one row of the table: a float32 column sum, no cast of dpre
                g_table[t[:1]] += dpre.sum(dim=0, keepdim=True, dtype=torch.float32)
            else:
                g_table.index_add_(0, t, dpre.to(torch.float32))
            if g_ctrl2 is not None and t2 is not None:
                g_ctrl2.index_add_(0, t2, dpre.to(torch.float32))
        # b1 enters once per row (through the table), the second control bit without it.
        net.w_ctrl.grad = g_table if g_ctrl2 is None else g_table + g_ctrl2[:-1]
        net.b1.grad = g_table.sum(dim=0)
        net.w_bits.grad = g_bits
        net.w2.grad = _with_class_zero(g_head.T.gather(1, net._rcols))
        net.b2.grad = _with_class_zero(g_head_bias.view(n_members, net.n_classes - 1))
    loss, accuracy = (sums / n_rows).float()
    return loss, accuracy


def _head_blocks(
    widths: tuple[int, ...] | list[int], n_classes: int, dtype: torch.dtype
) -> list[tuple[slice, slice]]:
    """(unit slice, row slice of the ``[M·(C−1), H]`` head) of each layer-2 block."""
    per_block, c1 = _HEAD_MEMBERS_PER_BLOCK.get(dtype, 10), n_classes - 1
    edges = [0, *itertools.accumulate(widths)]
    return [
        (slice(edges[m0], edges[m1]), slice(m0 * c1, m1 * c1))
        for m0 in range(0, len(widths), per_block)
        for m1 in [min(m0 + per_block, len(widths))]
    ]


def _step_weights(
    net: FusedParityMLP, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The step's per-call weights in ``dtype``: ``W1_ctrl + b1 [T, H]``, ``W1_bits [n, H]``,
    the transposed block-diagonal head ``V.T [M·(C−1), H]`` of ``w2_c − w2_0`` and its bias
    ``[M·(C−1)]`` of ``b2_c − b2_0``, each computed in float32 and rounded once."""
    hidden, n_reduced = net.w2.shape[0], net.n_members * (net.n_classes - 1)
    table = net.w_ctrl + net.b1
    diff = net.w2[:, 1:] - net.w2[:, :1]  # (H, C-1)
    head = net.w2.new_zeros(hidden, n_reduced).scatter_(1, net._rcols, diff).T.contiguous()
    bias = (net.b2[:, 1:] - net.b2[:, :1]).reshape(-1)
    table, w_bits, head, bias = (x.to(dtype) for x in (table, net.w_bits, head, bias))
    return table, w_bits, head, bias


def _loss_head(
    d_t: torch.Tensor,
    yb: torch.Tensor,
    n_rows: int,
    sums: torch.Tensor,
    n_members: int,
    n_classes: int,
) -> torch.Tensor:
    """Add one row block's loss and hit counts to ``sums [2, M]`` (float64) from its reduced
    logits ``d.T [M·(C−1), r]``; return the float32 gradient of ``Σ_m mean_b CE`` w.r.t. them,
    ``(softmax_c − [y = c]) / B`` for c ≥ 1, in the same layout."""
    r, c = yb.numel(), n_classes
    if c == 2:  # the paper's case, in fewer passes: d = z_1 − z_0, one row a member
        d, yf = d_t.float(), yb.to(torch.float32)
        # CE = softplus(d) at y = 0 and softplus(−d) at y = 1 (no cancellation); argmax of
        # (0, d) is 1 exactly where d > 0 (a tie goes to class 0, as argmax's first maximum).
        sums[0] += F.softplus(d * (1 - 2 * yf)).sum(dim=-1, dtype=torch.float64)
        sums[1] += ((d > 0) == yb.bool()).sum(dim=-1, dtype=torch.float64)
        return torch.sigmoid(d).sub_(yf).div_(n_rows)  # (M, r)
    d = d_t.float().view(n_members, c - 1, r)
    z = torch.cat([d.new_zeros(n_members, 1, r), d], dim=1)  # (M, C, r): z_0 = 0
    logp = torch.log_softmax(z, dim=1)
    target = yb.view(1, 1, r).expand(n_members, 1, r)
    sums[0] += -logp.gather(1, target).sum(dim=-1).view(-1).to(torch.float64)
    # argmax over a middle dim of size C was measured 10x slower than over a contiguous last one
    pred = z.transpose(1, 2).contiguous().argmax(-1)  # (M, r)
    sums[1] += (pred == yb).sum(dim=-1).to(torch.float64)
    classes = torch.arange(1, c, device=yb.device)[:, None]  # (C-1, 1)
    grad = logp[:, 1:].exp() - (yb == classes).to(logp.dtype)  # (M, C-1, r)
    return grad.div_(n_rows).reshape(n_members * (c - 1), r)


def _with_class_zero(grad_rest: torch.Tensor) -> torch.Tensor:
    """``[..., C]`` from the gradient of classes 1…C−1 ``[..., C−1]``: class 0's is minus
    their sum (the loss depends on the logits only through ``z_c − z_0``)."""
    return torch.cat([-grad_rest.sum(dim=-1, keepdim=True), grad_rest], dim=-1)


def _add_mm(acc: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> None:
    """``acc += a @ b`` in place, for float32 ``acc`` and operands in the compute dtype."""
    if a.dtype == acc.dtype:
        acc.addmm_(a, b)
    else:  # no mixed-dtype addmm on the CPU: the bf16 product, then a float32 add
        acc.add_(a @ b)


def _sorted_by_task(
    bits: torch.Tensor, task: torch.Tensor, y: torch.Tensor, task2: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The batch's rows in task order (stable, so the same batch always gives the same order).

    The loss is a mean over rows, so the order changes only float rounding; sorted, a row
    block holds a few long runs of one task, which ``index_add_`` into ``[n_tasks, H]`` adds
    faster than scattered rows.
    """
    order = torch.argsort(task, stable=True)
    task2 = None if task2 is None else task2[order]
    return bits[order], task[order], y[order], task2
