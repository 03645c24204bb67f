"""Per-subtask evaluation of a fused ensemble in one batched pass.

A fixed, seeded evaluation set (exactly ``m`` samples of every subtask, see
:meth:`SparseParityTask.per_task_set`) is pushed through the fused net in chunks; per-sample
losses are summed per subtask with ``index_add_`` (a segment reduction by task id), never by a
loop of forwards over subtasks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from quanta.parity.model import FusedParityMLP, member_losses
from quanta.parity.polytask import AnyBatch, second_task
from quanta.parity.task import ParityBatch

__all__ = ["Evaluation", "evaluate", "evaluate_groups"]


@dataclass(frozen=True)
class Evaluation:
    """Losses (nats) and accuracies of every member on every subtask.

    Attributes
    ----------
    loss : torch.Tensor
        float64 ``[n_tasks, M]``: mean cross-entropy of each subtask, nats.
    accuracy : torch.Tensor
        float64 ``[n_tasks, M]``.
    mixture_loss : torch.Tensor
        float64 ``[M]``: ``Σ_i p_i · loss[i]``, the expected loss under the task distribution.
    mixture_accuracy : torch.Tensor
        float64 ``[M]``.
    """

    loss: torch.Tensor
    accuracy: torch.Tensor
    mixture_loss: torch.Tensor
    mixture_accuracy: torch.Tensor


@torch.inference_mode()
def evaluate(
    model: FusedParityMLP,
    data: ParityBatch,
    probs: torch.Tensor,
    *,
    chunk_size: int | None = None,
    compute_dtype: torch.dtype = torch.float32,
) -> Evaluation:
    """Evaluate every member on ``data`` and reduce per subtask.

    Parameters
    ----------
    model : FusedParityMLP
    data : ParityBatch
        Evaluation samples; every subtask must appear at least once.
    probs : torch.Tensor
        ``[n_tasks]`` subtask frequencies used for the mixture loss.
    chunk_size : int, optional
        Rows per forward pass (bounds memory at ``chunk_size × H`` floats); default
        :meth:`FusedParityMLP.chunk_rows` (cache-sized blocks, measured 2x faster than large
        ones).
    compute_dtype : torch.dtype, default float32
        Dtype of the forward's matmuls (:meth:`FusedParityMLP.iter_logits`); losses are
        always computed from float32 logits. Training evaluates in float32 whatever its
        ``precision``: evaluation is a small part of a run, and the measurements stay exact.

    Examples
    --------
    >>> from quanta.parity.task import SparseParityTask
    >>> task = SparseParityTask(n_tasks=3, n_bits=6, k=2, alpha=0.5)
    >>> net = FusedParityMLP(3, 6, widths=[4, 8])
    >>> ev = evaluate(net, task.per_task_set(10, generator=torch.Generator().manual_seed(0)),
    ...               task.probs)
    >>> tuple(ev.loss.shape), tuple(ev.mixture_loss.shape)
    ((3, 2), (2,))
    """
    loss, accuracy = evaluate_groups(
        model, data, data.task, probs.numel(), chunk_size=chunk_size, compute_dtype=compute_dtype
    )
    p = probs.to(device=loss.device, dtype=torch.float64)
    return Evaluation(loss, accuracy, p @ loss, p @ accuracy)


@torch.inference_mode()
def evaluate_groups(
    model: FusedParityMLP,
    data: AnyBatch,
    group: torch.Tensor,
    n_groups: int,
    *,
    chunk_size: int | None = None,
    compute_dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean loss (nats) and accuracy of every member on every group of rows: float64
    ``[n_groups, M]`` each. ``group`` (int64 ``[B]``) names each row's group: the subtask for
    :func:`evaluate`, the (kind, pair) of :meth:`PolygenicMix.eval_set`. Rows with a second
    control bit (``data.task2``) are evaluated with it."""
    n_members = model.n_members
    device = data.bits.device  # accumulate where the logits are (a CUDA run must not mix)
    loss_sum = torch.zeros(n_groups, n_members, dtype=torch.float64, device=device)
    correct = torch.zeros(n_groups, n_members, dtype=torch.float64, device=device)
    for rows, logits in model.iter_logits(
        data.bits,
        data.task,
        chunk_rows=chunk_size,
        compute_dtype=compute_dtype,
        task2=second_task(data),
    ):
        g, y = group[rows], data.y[rows]  # logits: (r, M, C)
        loss_sum.index_add_(0, g, member_losses(logits, y).to(torch.float64))
        correct.index_add_(0, g, (logits.argmax(dim=-1) == y[:, None]).to(torch.float64))
    counts = torch.bincount(group, minlength=n_groups).to(torch.float64)[:, None]
    if bool((counts == 0).any()):
        raise ValueError("evaluate() needs every subtask at least once in the evaluation set.")
    return loss_sum / counts, correct / counts
