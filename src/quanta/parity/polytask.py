"""Polygenic samples in the toy world: samples that draw on two subtasks at once.

PAPER.md calls a sample **monogenic** when one quantum serves it and **polygenic** when several
do. The multitask sparse parity task (:mod:`quanta.parity.task`) is monogenic by construction;
this module adds, as a share ``fraction`` of the training samples, inputs with *two* control bits
``a ≠ b`` on and a label that depends on both subsets ``S_a`` and ``S_b``:

* **OR** (either quantum suffices): the task bits are drawn uniformly among those with
  ``parity(S_a) = parity(S_b)`` and the label is that common parity, so a net that knows either
  subtask can answer.
* **AND** (both are needed): the task bits are uniform and the label is
  ``parity(S_a) XOR parity(S_b)`` (the parity of the symmetric difference), which neither
  subtask alone predicts better than chance.

A share ``and_share`` of the polygenic samples are AND, the rest OR. The pair is drawn from the
subtasks' own Zipf marginals, ``a ~ p`` then ``b ~ p`` conditioned on ``b ≠ a``, so pairs of
frequent subtasks are frequent. Evaluation uses every pair of the ``top`` most frequent subtasks
(:meth:`PolygenicMix.eval_pairs`) and both kinds, ``per_pair`` samples each.

The OR bits are drawn by rejection-free repair: uniform bits, then where the parities differ one
fixed bit of ``S_b \\ S_a`` (the smallest) is flipped. That flips ``parity(S_b)`` only, and the
map is 2-to-1 onto the allowed set, so the result is uniform on it.
"""

from __future__ import annotations

from itertools import combinations
from typing import NamedTuple

import torch

from quanta._validation import check_int, check_real
from quanta.parity.task import ParityBatch, SparseParityTask

__all__ = ["KINDS", "AnyBatch", "PolygenicBatch", "PolygenicMix", "second_task"]

_OWNER = "ParityConfig"
#: Polygenic kinds in their group order (group ``g = kind · n_pairs + pair``).
KINDS = ("or", "and")


class PolygenicBatch(NamedTuple):
    """A :class:`ParityBatch` with a second control bit per row.

    Attributes
    ----------
    bits, task, y : torch.Tensor
        As in :class:`ParityBatch` (``task`` is the first subtask ``a``; ``y`` the label).
    task2 : torch.Tensor
        int64 ``[B]``: the second subtask ``b`` of polygenic rows, ``n_tasks`` on monogenic
        rows (no second control bit).
    """

    bits: torch.Tensor
    task: torch.Tensor
    y: torch.Tensor
    task2: torch.Tensor

    def dense(self, n_tasks: int) -> torch.Tensor:
        """The full float32 input ``[B, n_tasks + n_bits]``: control bits, then task bits."""
        x = ParityBatch(self.bits, self.task, self.y).dense(n_tasks)
        two = self.task2 < n_tasks
        x[two] = x[two].scatter_(1, self.task2[two][:, None], 1.0)
        return x

    def select(self, index: torch.Tensor) -> PolygenicBatch:
        """Rows ``index`` of every field."""
        return PolygenicBatch(*(t[index] for t in self))


#: A training or evaluation batch of either task.
AnyBatch = ParityBatch | PolygenicBatch


def second_task(batch: AnyBatch) -> torch.Tensor | None:
    """``batch.task2`` of a polygenic batch, None for a monogenic one."""
    return batch.task2 if isinstance(batch, PolygenicBatch) else None


class PolygenicMix:
    """Training batches with a share of polygenic samples, and the polygenic evaluation set.

    Parameters
    ----------
    task : SparseParityTask
        The monogenic task; needs ``n_tasks >= 2``.
    fraction : float
        Share of training samples that are polygenic, in ``[0, 1]``.
    and_share : float
        Share of polygenic samples of the AND kind, in ``[0, 1]``; the rest are OR.
    top : int
        Evaluate every pair of the ``top`` most frequent subtasks, in ``[2, n_tasks]``.

    Examples
    --------
    >>> task = SparseParityTask(n_tasks=4, n_bits=8, k=3, alpha=0.4)
    >>> mix = PolygenicMix(task, fraction=0.5, and_share=0.5, top=3)
    >>> mix.eval_pairs()
    [(0, 1), (0, 2), (1, 2)]
    >>> batch = mix.sample(6, generator=torch.Generator().manual_seed(0))
    >>> tuple(batch.task2.shape)
    (6,)
    """

    def __init__(
        self, task: SparseParityTask, *, fraction: float, and_share: float, top: int
    ) -> None:
        if task.n_tasks < 2:
            raise ValueError(
                f"The 'polygenic' parameter of {_OWNER} needs n_tasks >= 2 (a polygenic sample "
                f"draws on two subtasks). Got n_tasks = {task.n_tasks} instead."
            )
        self.task = task
        self.fraction = check_real(fraction, "polygenic", _OWNER, low=0.0, high=1.0)
        self.and_share = check_real(and_share, "polygenic_and", _OWNER, low=0.0, high=1.0)
        self.top = check_int(top, "polygenic_top", _OWNER, low=2, high=task.n_tasks)
        # The parity mask table with one zero row at index n_tasks ("no second subtask").
        masks = task._masks
        self._masks2 = torch.cat([masks, masks.new_zeros(1, masks.shape[1])])
        # The OR repair bit of every ordered pair (a, b): the smallest element of S_b \ S_a
        # (distinct k-subsets of one size, so it is never empty). [T, T], -1 on the diagonal.
        subsets = task.subsets
        inside = (subsets[None, :, :, None] == subsets[:, None, None, :]).any(-1)  # (a, b, k)
        first = torch.where(inside, task.n_bits, subsets[None, :, :]).min(-1).values
        self._repair = first.masked_fill_(torch.eye(task.n_tasks, dtype=torch.bool), -1)

    def eval_pairs(self) -> list[tuple[int, int]]:
        """The evaluated pairs: every ``(a, b)``, ``a < b``, of the ``top`` most frequent."""
        order = torch.argsort(self.task.probs, descending=True, stable=True)[: self.top]
        return list(combinations(sorted(int(i) for i in order), 2))

    def pair_weights(self) -> torch.Tensor:
        """float64 ``[n_pairs]``: each evaluated pair's training probability (``a, b`` in
        either order), normalized over the evaluated pairs."""
        p = self.task.probs
        pairs = torch.tensor(self.eval_pairs())
        w = p[pairs[:, 0]] * p[pairs[:, 1]] * (1 / (1 - p[pairs[:, 0]]) + 1 / (1 - p[pairs[:, 1]]))
        return w / w.sum()

    def sample(
        self, batch_size: int, *, generator: torch.Generator | None = None
    ) -> PolygenicBatch:
        """``batch_size`` i.i.d. training samples, a share ``fraction`` of them polygenic."""
        task, n_tasks = self.task, self.task.n_tasks
        a = task.draw_tasks(batch_size, generator)
        words = task.draw_words(batch_size, generator)
        poly = torch.rand(batch_size, generator=generator) < self.fraction
        b = task.draw_tasks(batch_size, generator)
        while bool((clash := poly & (b == a)).any()):  # b ~ p conditioned on b != a
            b[clash] = task.draw_tasks(int(clash.sum()), generator)
        is_and = torch.rand(batch_size, generator=generator) < self.and_share
        task2 = torch.where(poly, b, n_tasks)
        return self._labelled(words, a, task2, poly & ~is_and)

    def eval_set(
        self, per_pair: int, *, generator: torch.Generator | None = None
    ) -> tuple[PolygenicBatch, torch.Tensor]:
        """``per_pair`` samples of every evaluated pair and kind, group-major, and the group
        id of every row (int64 ``[B]``, ``g = kind · n_pairs + pair``, kinds as :data:`KINDS`)."""
        per_pair = check_int(per_pair, "per_pair", "PolygenicMix", low=1)
        pairs = torch.tensor(self.eval_pairs())  # (P, 2)
        n_groups = len(KINDS) * len(pairs)
        group = torch.arange(n_groups).repeat_interleave(per_pair)
        pair = group % len(pairs)
        words = self.task.draw_words(group.numel(), generator)
        is_or = group < len(pairs)
        return self._labelled(words, pairs[pair, 0], pairs[pair, 1], is_or), group

    def _labelled(
        self, words: torch.Tensor, a: torch.Tensor, task2: torch.Tensor, is_or: torch.Tensor
    ) -> PolygenicBatch:
        """Repair the OR rows' bits, then label every row (monogenic rows: ``task2 = n_tasks``,
        whose zero mask makes ``parity(S_a) XOR 0`` their ordinary label)."""
        task = self.task
        la = task.parity_of(words, a)
        lb = _parity(words, self._masks2.index_select(0, task2))
        fix = torch.nonzero(is_or & (la != lb)).squeeze(1)
        if fix.numel():
            j = self._repair[a[fix], task2[fix]]  # bit to flip, in S_b \ S_a
            flip = torch.ones_like(j).bitwise_left_shift_(j % 64)
            words[fix, j // 64] ^= flip
            lb[fix] ^= 1
        y = torch.where(is_or, la, la ^ lb)  # after the repair la == lb on OR rows
        return PolygenicBatch(task.expand_bits(words), a, y, task2)


def _parity(words: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    masked = words & masks  # (B, W)
    acc = masked[:, 0]
    for w in range(1, masked.shape[1]):
        acc = acc ^ masked[:, w]
    for shift in (32, 16, 8, 4, 2, 1):
        acc = acc ^ (acc >> shift)
    return acc & 1
