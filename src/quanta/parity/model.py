"""Many one-hidden-layer ReLU MLPs trained as one fused network.

Member ``m`` is the paper's net ``Linear(n_tasks + n_bits, w_m) → ReLU → Linear(w_m, 2)`` with
``P = (n_tasks + n_bits + 1)·w_m + 2·w_m + 2`` parameters. All members see the same batch, so:

* **Layer 1** is one matrix for all members (hidden units of every member side by side,
  ``H = Σ w_m`` columns). Control bits are one-hot, so their part of ``x @ W1`` is a row gather
  of ``W1_ctrl`` (``F.embedding``) instead of a ``[B, n_tasks] @ [n_tasks, H]`` matmul: the
  same numbers, ``n_tasks/(n_tasks + n_bits)`` of the FLOPs saved.
* **Layer 2** is block-diagonal: the per-unit weights ``w2 [H, C]`` are scattered into a
  ``[H, M·C]`` matrix whose off-member entries are zero, so no gradient ever crosses members.
  It runs as a few matmuls over blocks of up to 10 members rather than one (measured faster).

The fused loss is the *sum* of the members' mean losses, whose gradient w.r.t. member ``m``'s
parameters is exactly member ``m``'s own gradient. AdamW is elementwise, so one AdamW over the
fused parameters is M independent AdamWs. ``tests/test_model.py`` checks this against nets
trained one by one.

Precision: parameters, gradients and optimizer state are always float32. ``compute_dtype=
torch.bfloat16`` runs the blocked path's matmuls (and keeps the ``[rows, H]`` activations) in
bfloat16 on weights cast once per call; the loss, its softmax gradient and every gradient sum
across row blocks stay in float32 (``PRECISIONS`` maps the config's names to dtypes).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from quanta._validation import check_int, check_int_sequence
from quanta.parity.step import explicit_loss_and_grad, hidden_block

__all__ = [
    "PRECISIONS",
    "FusedParityMLP",
    "member_generator",
    "member_losses",
    "n_params_mlp",
]

_OWNER = "FusedParityMLP"
# Layer 2 is block-diagonal: a single [H, M·C] matmul does M times the useful FLOPs. Blocks of
# up to 10 members (20 output columns) were measured fastest on a 2-core EPYC for the paper's 30
# widths: 3.3x faster than one block-diagonal matmul; blocks of fewer columns hit slower
# kernels (benchmarks/bench_parity.py, docs/ARCHITECTURE.md).
_MEMBERS_PER_BLOCK = 10
#: ``ParityConfig.precision`` → the dtype of the blocked path's matmuls and activations.
PRECISIONS = {"f32": torch.float32, "bf16": torch.bfloat16}
# The blocked path's per-call weights: W1_ctrl + b1 [T, H], W1_bits [n, H], the block-diagonal
# layer-2 weight [H, M·C] and the flat layer-2 bias [M·C], all in the compute dtype.
_Weights = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def n_params_mlp(n_inputs: int, width: int, n_classes: int = 2) -> int:
    """Parameter count of ``Linear(n_inputs, width) → ReLU → Linear(width, n_classes)``.

    >>> n_params_mlp(600, 1)  # the paper's P = 603·w + 2 at n_tasks=500, n=100
    605
    """
    return (n_inputs + 1) * width + (width + 1) * n_classes


def member_generator(width: int, init_seed: int) -> torch.Generator:
    """The generator that initializes member ``(width, init_seed)``.

    Derived from both numbers only, so a member's initial weights do not depend on which other
    members it is fused with.
    """
    state = np.random.SeedSequence([init_seed, width]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


class FusedParityMLP(nn.Module):
    """An ensemble of one-hidden-layer ReLU MLPs (one per ``(width, init_seed)``) as one module.

    Parameters
    ----------
    n_tasks, n_bits : int
        Input layout: ``n_tasks`` one-hot control bits then ``n_bits`` task bits.
    widths : sequence of int
        Hidden width of every member, each >= 1.
    init_seeds : sequence of int, optional
        Initialization seed of every member (same length as ``widths``); default all 0.
    n_classes : int, default 2

    Attributes
    ----------
    w_ctrl : Parameter ``[n_tasks, H]`` — layer-1 weights of the control bits (transposed).
    w_bits : Parameter ``[n_bits, H]`` — layer-1 weights of the task bits (transposed).
    b1 : Parameter ``[H]``.
    w2 : Parameter ``[H, C]`` — each hidden unit's weights into its own member's logits.
    b2 : Parameter ``[M, C]``.

    Initialization is PyTorch's default for ``nn.Linear`` (U(±1/√fan_in) for weights and
    biases), drawn per member from :func:`member_generator`.

    Examples
    --------
    >>> net = FusedParityMLP(n_tasks=4, n_bits=6, widths=[3, 5])
    >>> net.n_params_per_member()
    [41, 67]
    >>> logits = net(torch.zeros(2, 10))
    >>> tuple(logits.shape)  # (B, M, C)
    (2, 2, 2)
    """

    member_of_unit: torch.Tensor
    _cols: torch.Tensor
    _rcols: torch.Tensor

    def __init__(
        self,
        n_tasks: int,
        n_bits: int,
        widths: Sequence[int],
        *,
        init_seeds: Sequence[int] | None = None,
        n_classes: int = 2,
    ) -> None:
        super().__init__()
        self.n_tasks = check_int(n_tasks, "n_tasks", _OWNER, low=1)
        self.n_bits = check_int(n_bits, "n_bits", _OWNER, low=1)
        self.n_classes = check_int(n_classes, "n_classes", _OWNER, low=2)
        self.widths = check_int_sequence(widths, "widths", _OWNER, low=1)
        seeds = [0] * len(self.widths) if init_seeds is None else init_seeds
        self.init_seeds = check_int_sequence(seeds, "init_seeds", _OWNER, low=0)
        if len(self.init_seeds) != len(self.widths):
            raise ValueError(
                f"The 'init_seeds' parameter of {_OWNER} must have one seed per width "
                f"({len(self.widths)}). Got {len(self.init_seeds)} instead."
            )
        n_in, n_members, hidden, c = self.n_inputs, len(self.widths), sum(self.widths), n_classes
        # Built on the CPU, where the CPU generators of member_generator draw the weights (the
        # same initial net on every device); ``.to(device)`` moves parameters and buffers.
        cpu = torch.device("cpu")
        member_of_unit = torch.repeat_interleave(
            torch.arange(n_members, device=cpu), torch.tensor(self.widths, device=cpu)
        )
        self.register_buffer("member_of_unit", member_of_unit, persistent=False)
        self._layer2_layout(member_of_unit)

        w1 = torch.empty(hidden, n_in, device=cpu)
        b1 = torch.empty(hidden, device=cpu)
        w2 = torch.empty(hidden, c, device=cpu)
        b2 = torch.empty(n_members, c, device=cpu)
        start = 0
        for m, (width, seed) in enumerate(zip(self.widths, self.init_seeds, strict=True)):
            g = member_generator(width, seed)
            stop = start + width
            bound1, bound2 = n_in**-0.5, width**-0.5
            # Same draw order as nn.Linear: weight, then bias, layer by layer.
            w1[start:stop].uniform_(-bound1, bound1, generator=g)
            b1[start:stop].uniform_(-bound1, bound1, generator=g)
            w2[start:stop] = (
                torch.empty(c, width, device=cpu).uniform_(-bound2, bound2, generator=g).T
            )
            b2[m].uniform_(-bound2, bound2, generator=g)
            start = stop
        self.w_ctrl = nn.Parameter(w1[:, : self.n_tasks].T.contiguous())
        self.w_bits = nn.Parameter(w1[:, self.n_tasks :].T.contiguous())
        self.b1 = nn.Parameter(b1)
        self.w2 = nn.Parameter(w2)
        self.b2 = nn.Parameter(b2)

    def _layer2_layout(self, member_of_unit: torch.Tensor) -> None:
        """Where layer 2's weights go in its block-diagonal matrices, and its blocks."""
        n_members, c, device = self.n_members, self.n_classes, member_of_unit.device
        # Column of the block-diagonal layer-2 weight that unit j's class-c weight goes to.
        cols = member_of_unit[:, None] * c + torch.arange(c, device=device)  # (H, C)
        self.register_buffer("_cols", cols, persistent=False)
        # (unit slice, logit-column slice) of each block of members in layer 2.
        unit_edges = np.concatenate([[0], np.cumsum(self.widths)])
        self._blocks = [
            (slice(int(unit_edges[m0]), int(unit_edges[m1])), slice(m0 * c, m1 * c))
            for m0 in range(0, n_members, _MEMBERS_PER_BLOCK)
            for m1 in [min(m0 + _MEMBERS_PER_BLOCK, n_members)]
        ]
        # The training step's head has C − 1 logits a member, z_c − z_0 (quanta.parity.step):
        # the row of its transposed block-diagonal weight that unit j's class-c weight goes to.
        rcols = member_of_unit[:, None] * (c - 1) + torch.arange(c - 1, device=device)  # (H, C-1)
        self.register_buffer("_rcols", rcols, persistent=False)

    @property
    def n_inputs(self) -> int:
        return self.n_tasks + self.n_bits

    @property
    def n_members(self) -> int:
        return len(self.widths)

    def n_params_per_member(self) -> list[int]:
        """The paper's P for every member: ``(n_inputs + 1)·w + (w + 1)·C``."""
        return [n_params_mlp(self.n_inputs, w, self.n_classes) for w in self.widths]

    def _block_diag(self) -> torch.Tensor:
        """Layer-2 weight as ``[H, M·C]``, zero outside each member's own block."""
        zeros = self.w2.new_zeros(self.w2.shape[0], self.n_members * self.n_classes)
        return zeros.scatter(1, self._cols, self.w2)

    def _head(self, pre: torch.Tensor) -> torch.Tensor:
        # In place: ``pre`` is a fresh addmm output that autograd does not keep.
        hidden = torch.relu_(pre)  # (B, H)
        block_diag, bias = self._block_diag(), self.b2.reshape(-1)
        logits = torch.cat(
            [torch.addmm(bias[cs], hidden[:, us], block_diag[us, cs]) for us, cs in self._blocks],
            dim=1,
        )  # (B, M·C)
        return logits.view(-1, self.n_members, self.n_classes)  # (B, M, C)

    def forward_compact(
        self, bits: torch.Tensor, task: torch.Tensor, task2: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Logits ``[B, M, C]`` from task bits ``[B, n_bits]`` (any dtype) and task ids ``[B]``
        (and, for polygenic samples, second control bits ``task2 [B]``, ``n_tasks`` = none).

        Equal to :meth:`forward` on the dense input, with the one-hot product replaced by a
        row gather.
        """
        # One-hot control bits @ W1_ctrl is a row gather. The bias is added to the
        # [n_tasks, H] table before gathering rather than to the [B, H] result: the same sums,
        # one full pass over the batch activations fewer (forward and backward).
        pre = F.embedding(task, self.w_ctrl + self.b1)  # (B, H)
        if task2 is not None:
            pre = pre + F.embedding(task2, self._ctrl2(self.w_ctrl))
        pre = pre.addmm(bits.to(self.w_bits.dtype), self.w_bits)
        return self._head(pre)

    def chunk_rows(self, budget_bytes: int = 8 << 20, *, dtype: torch.dtype = torch.float32) -> int:
        """Rows per block so that one ``[rows, H]`` activation in ``dtype`` is ~``budget_bytes``.

        Blocks that stay in the last-level cache were measured 2x faster than whole batches
        for both evaluation and training on a 2-core EPYC (benchmarks/bench_parity.py); the
        bf16 training step with twice the rows of f32 (the same bytes) 1.1x faster than with
        the same rows (one-off, P1 shape, one thread).
        """
        return max(256, min(65_536, budget_bytes // (dtype.itemsize * self.w2.shape[0])))

    def _frozen_weights(self, dtype: torch.dtype = torch.float32) -> _Weights:
        """Per-call constants of the blocked path, cast once to ``dtype`` (no autograd).

        ``W1_ctrl + b1`` is summed in float32 before the cast (one rounding, as autocast's
        bias add would have), the rest are plain casts (no copies in float32).
        """
        with torch.no_grad():
            table = self.w_ctrl + self.b1
            parts = (table, self.w_bits, self._block_diag(), self.b2.reshape(-1))
            table, w_bits, block_diag, bias = (t.to(dtype) for t in parts)
            return table, w_bits, block_diag, bias

    def _ctrl2(self, w_ctrl: torch.Tensor) -> torch.Tensor:
        """``W1_ctrl`` with a zero row appended: the gather table of second control bits, whose
        index ``n_tasks`` (monogenic rows) adds nothing."""
        return torch.cat([w_ctrl, w_ctrl.new_zeros(1, w_ctrl.shape[1])])

    def _block_forward(
        self,
        xb: torch.Tensor,
        t: torch.Tensor,
        weights: _Weights,
        t2: torch.Tensor | None = None,
        ctrl2: torch.Tensor | None = None,
        out: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Hidden activations ``[r, H]`` and logits ``[r, M·C]`` of one row block, in place,
        both in the weights' dtype (``t2``, ``ctrl2``: second control bits and their table;
        ``out``: ``[≥ r, H]`` and ``[≥ r, M·C]`` buffers to write them into)."""
        table, w_bits, block_diag, bias = weights
        r = t.numel()
        if out is None:
            out = (
                table.new_empty(r, table.shape[1]),
                table.new_empty(r, block_diag.shape[1]),
            )
        hidden = hidden_block(xb, t, table, w_bits, t2, ctrl2, out=out[0])  # (r, H)
        logits = out[1][:r]  # (r, M·C)
        for us, cs in self._blocks:
            torch.addmm(bias[cs], hidden[:, us], block_diag[us, cs], out=logits[:, cs])
        return hidden, logits

    @torch.no_grad()
    def iter_logits(
        self,
        bits: torch.Tensor,
        task: torch.Tensor,
        *,
        chunk_rows: int | None = None,
        compute_dtype: torch.dtype = torch.float32,
        task2: torch.Tensor | None = None,
    ) -> Iterator[tuple[slice, torch.Tensor]]:
        """Float32 logits ``[r, M, C]`` of consecutive row blocks (no autograd), for evaluation.

        The same numbers as :meth:`forward_compact`, through the blocked in-place path, with
        its matmuls in ``compute_dtype``.
        """
        rows = min(chunk_rows or self.chunk_rows(), max(task.numel(), 1))
        weights = self._frozen_weights(compute_dtype)
        table, n_cols = weights[0], weights[2].shape[1]
        ctrl2 = None if task2 is None else self._ctrl2(self.w_ctrl).to(compute_dtype)
        hidden_buf = table.new_empty(rows, table.shape[1])  # (rows, H), reused
        for start in range(0, task.numel(), rows):
            rows_here = slice(start, start + rows)
            xb = bits[rows_here].to(compute_dtype)
            t2 = None if task2 is None else task2[rows_here]
            out = (hidden_buf, table.new_empty(xb.shape[0], n_cols))  # logits: fresh, yielded
            _, logits = self._block_forward(xb, task[rows_here], weights, t2, ctrl2, out)
            yield rows_here, logits.float().view(-1, self.n_members, self.n_classes)

    def loss_and_grad(
        self,
        bits: torch.Tensor,
        task: torch.Tensor,
        y: torch.Tensor,
        *,
        chunk_rows: int | None = None,
        compute_dtype: torch.dtype = torch.float32,
        task2: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-member mean loss and accuracy on a batch; sets every parameter's ``.grad`` to
        the gradient of the summed member losses (so member m gets its own loss's gradient).

        The same numbers as autograd through :meth:`forward_compact` up to float rounding
        (tested), computed by an explicit backward (:mod:`quanta.parity.step`) over row blocks
        of ``chunk_rows`` (default :meth:`chunk_rows`) so the ``[rows, H]`` activations stay in
        cache, with gradients accumulated in place. The rows are taken in task order (a stable
        sort) and layer 2 computes only ``z_c − z_0``: neither changes the result beyond
        rounding, both were measured faster.

        ``compute_dtype=torch.bfloat16`` runs every matmul on bfloat16 operands and keeps the
        activations in bfloat16 (oneDNN accumulates each product in float32 and rounds it
        once); log-softmax, the loss and ``softmax − one_hot`` are float32, and each row block's
        gradient is added into float32 sums, so rounding does not grow with the batch.

        ``task2`` (polygenic samples, :mod:`quanta.parity.polytask`): a second control bit per
        row, ``n_tasks`` where there is none; its rows of ``W1_ctrl`` get their gradient too.

        Returns
        -------
        loss : float32 ``[M]`` mean cross-entropy per member, nats (detached)
        accuracy : float32 ``[M]``
        """
        return explicit_loss_and_grad(
            self, bits, task, y, chunk_rows=chunk_rows, compute_dtype=compute_dtype, task2=task2
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, M, C]`` from the dense input ``x [B, n_tasks + n_bits]``."""
        w1 = torch.cat([self.w_ctrl, self.w_bits], dim=0)  # (n_in, H)
        return self._head(torch.addmm(self.b1, x, w1))

    def member_modules(self) -> list[nn.Sequential]:
        """Every member as a stand-alone ``nn.Sequential`` with a copy of its weights."""
        out = []
        start = 0
        w1 = torch.cat([self.w_ctrl, self.w_bits], dim=0).detach()  # (n_in, H)
        for m, width in enumerate(self.widths):
            stop = start + width
            first, second = nn.Linear(self.n_inputs, width), nn.Linear(width, self.n_classes)
            with torch.no_grad():
                first.weight.copy_(w1[:, start:stop].T)
                first.bias.copy_(self.b1[start:stop])
                second.weight.copy_(self.w2[start:stop].T)
                second.bias.copy_(self.b2[m])
            out.append(nn.Sequential(first, nn.ReLU(), second))
            start = stop
        return out


def member_losses(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample cross-entropy of every member, nats: ``[B, M]`` from logits ``[B, M, C]``."""
    # cross_entropy wants classes on dim 1: (B, C, M) against targets (B, M).
    return F.cross_entropy(
        logits.transpose(1, 2), y[:, None].expand(-1, logits.shape[1]), reduction="none"
    )
