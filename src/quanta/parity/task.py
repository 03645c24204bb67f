"""Multitask sparse parity: the toy world of the quantization model (PAPER.md §2).

An input is ``n_tasks`` control bits (the one-hot code of subtask ``i``) followed by ``n_bits``
task bits, each Bernoulli(1/2). The label is the parity of the task bits in the subset ``S_i``
(``|S_i| = k``, or ``k_i`` per subtask: quanta of unequal cost, issue 20). Subtask ``i`` is
drawn with probability ``p_i ∝ (i + 1 + offset)^-(α+1)``.

Everything here is tensor ops: no Python loop runs over tasks or samples.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch

from quanta._validation import check_int, check_int_sequence, check_real

__all__ = ["ParityBatch", "SparseParityTask", "zipf_probs"]

_OWNER = "SparseParityTask"
# Below this many possible subsets we enumerate them all instead of rejection sampling, so that
# nearly-full draws (n_tasks close to C(n_bits, k)) never spin.
_ENUMERATE_LIMIT = 200_000

# Random bits come from 64-bit words: drawing one int64 costs about as much as drawing one
# uint8, so a word per 64 bits is far cheaper than torch.randint per bit (see
# benchmarks/bench_parity.py). randint over [-2^63, 2^63 - 1) fills all 64 bits uniformly (up to
# a 2^-64 bias; plain ``random_()`` would leave the top bit 0).
_BITS_PER_WORD = 64
_WORD_LOW, _WORD_HIGH = -(2**63), 2**63 - 1
# Byte value -> its 8 bits as 8 bytes packed in one int64 (little-endian bit order), so one gather
# expands a random byte into 8 uint8 bits.
_BYTE_TO_BITS = torch.from_numpy(
    np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1, bitorder="little")
    .copy()
    .view(np.int64)
    .ravel()
)


def zipf_probs(n_tasks: int, alpha: float, *, offset: float = 0.0) -> np.ndarray:
    """Subtask frequencies ``p_i ∝ (i + 1 + offset)^-(alpha + 1)``, ``i = 0 … n_tasks-1``.

    ``alpha`` is the paper's α (the original code's ``alpha`` key is α + 1).

    Examples
    --------
    >>> p = zipf_probs(500, 0.4)
    >>> [round(float(p[i]), 4) for i in (0, 1, 9)]
    [0.3451, 0.1308, 0.0137]
    """
    ranks = np.arange(1, n_tasks + 1, dtype=np.float64) + offset
    weights = ranks ** -(alpha + 1.0)
    return weights / weights.sum()


class ParityBatch(NamedTuple):
    """A batch in compact form: task bits, subtask ids and labels (no one-hot control bits).

    Attributes
    ----------
    bits : torch.Tensor
        uint8 ``[B, n_bits]``, each 0 or 1.
    task : torch.Tensor
        int64 ``[B]``, subtask ids in ``[0, n_tasks)``.
    y : torch.Tensor
        int64 ``[B]``, parity labels in ``{0, 1}``.
    """

    bits: torch.Tensor
    task: torch.Tensor
    y: torch.Tensor

    def dense(self, n_tasks: int) -> torch.Tensor:
        """The full float32 input ``[B, n_tasks + n_bits]``: one-hot control bits, then bits."""
        x = torch.zeros(self.task.numel(), n_tasks + self.bits.shape[1], device=self.task.device)
        x[:, n_tasks:] = self.bits
        return x.scatter_(1, self.task[:, None], 1.0)

    def select(self, index: torch.Tensor) -> ParityBatch:
        """Rows ``index`` of every field."""
        return ParityBatch(self.bits[index], self.task[index], self.y[index])


class SparseParityTask:
    """The multitask sparse parity task.

    Parameters
    ----------
    n_tasks : int
        Number of subtasks (control bits), >= 1.
    n_bits : int
        Number of task bits ``n``, >= 1.
    k : int
        Size of each parity subset, in ``[1, n_bits]``; needs ``C(n_bits, k) >= n_tasks``.
    alpha : float
        The paper's Zipf exponent α >= 0: ``p_i ∝ (i + 1 + offset)^-(α+1)``. Note that the
        original research code's ``alpha`` is the whole exponent, i.e. our ``alpha + 1``.
    offset : float, default 0
        Shift of the Zipf ranks, > -1.
    uniform : bool, default False
        Draw every subtask with probability ``1 / n_tasks`` instead (the paper's control).
    seed : int, default 0
        Seed of the subsets ``S_i``.
    ks : sequence of int, optional
        Per-subtask subset sizes ``k_i`` (length ``n_tasks``, each in ``[1, n_bits]``) instead
        of one ``k``: subtasks that differ in cost as well as frequency. Needs
        ``C(n_bits, k') >=`` the number of subtasks of size ``k'`` for every ``k'``.

    Attributes
    ----------
    subsets : torch.Tensor
        int64 ``[n_tasks, max k_i]``, distinct sorted subsets of ``{0 … n_bits-1}``; rows of
        subtasks with ``k_i`` below the maximum are padded with -1 at the end.
    ks : torch.Tensor
        int64 ``[n_tasks]``, every subtask's ``k_i`` (all ``k`` unless ``ks`` was given).
    probs : torch.Tensor
        float64 ``[n_tasks]``, subtask frequencies summing to 1.

    Examples
    --------
    >>> task = SparseParityTask(n_tasks=4, n_bits=8, k=3, alpha=0.4, seed=0)
    >>> batch = task.sample_compact(5, generator=torch.Generator().manual_seed(0))
    >>> tuple(batch.bits.shape), tuple(task.subsets.shape)
    ((5, 8), (4, 3))
    >>> x, y, t = task.sample(5, generator=torch.Generator().manual_seed(0))
    >>> tuple(x.shape), x.dtype
    ((5, 12), torch.float32)
    """

    def __init__(
        self,
        n_tasks: int,
        n_bits: int,
        k: int,
        alpha: float,
        *,
        offset: float = 0.0,
        uniform: bool = False,
        seed: int = 0,
        ks: Sequence[int] | None = None,
    ) -> None:
        self.n_tasks = check_int(n_tasks, "n_tasks", _OWNER, low=1)
        self.n_bits = check_int(n_bits, "n_bits", _OWNER, low=1)
        self.k = check_int(k, "k", _OWNER, low=1, high=self.n_bits)
        self.alpha = check_real(alpha, "alpha", _OWNER, low=0.0)
        self.offset = check_real(offset, "offset", _OWNER, low=-1.0, low_open=True)
        self.uniform = bool(uniform)
        self.seed = check_int(seed, "seed", _OWNER, low=0)
        if ks is None:
            n_subsets = math.comb(self.n_bits, self.k)
            if n_subsets < self.n_tasks:
                raise ValueError(
                    f"The 'n_tasks' parameter of {_OWNER} must be at most C(n_bits, k) = "
                    f"C({self.n_bits}, {self.k}) = {n_subsets} (distinct subsets). "
                    f"Got {self.n_tasks} instead."
                )
            subsets = _draw_subsets(self.n_tasks, self.n_bits, self.k, self.seed)
            self.ks = torch.full((self.n_tasks,), self.k, dtype=torch.int64, device="cpu")
        else:
            sizes = np.asarray(check_int_sequence(ks, "ks", _OWNER, low=1, high=self.n_bits))
            subsets = _draw_mixed_subsets(sizes, self.n_tasks, self.n_bits, self.seed)
            self.ks = torch.from_numpy(sizes.astype(np.int64))
        self.subsets = torch.from_numpy(subsets)
        if self.uniform:
            probs = np.full(self.n_tasks, 1.0 / self.n_tasks)
        else:
            probs = zipf_probs(self.n_tasks, self.alpha, offset=self.offset)
        self.probs = torch.from_numpy(probs)
        self._cdf = torch.cumsum(self.probs, 0)
        # Parity masks over the packed word layout: bit j lives in word j // 64, position j % 64.
        n_words = -(-self.n_bits // _BITS_PER_WORD)
        masks = np.zeros((self.n_tasks, n_words), dtype=np.int64)
        rows = np.repeat(np.arange(self.n_tasks), self.ks.numpy())
        flat = subsets[subsets >= 0]  # row-major: the bits of task 0, then task 1, …
        np.bitwise_or.at(
            masks,
            (rows, flat // _BITS_PER_WORD),
            np.left_shift(np.int64(1), (flat % _BITS_PER_WORD).astype(np.int64)),
        )
        self._masks = torch.from_numpy(masks)

    @property
    def n_inputs(self) -> int:
        """Input dimension of the dense encoding, ``n_tasks + n_bits``."""
        return self.n_tasks + self.n_bits

    @property
    def device(self) -> torch.device:
        """Where samples are drawn: the CPU, always. Generators are CPU generators, so a seed
        draws the same data whatever device trains on it; batches are moved by the caller."""
        return self._masks.device

    def labels(self, bits: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        """Parity of ``bits[b, S_task[b]]`` for every row: int64 ``[B]``."""
        index = self.subsets[task]  # (B, max k_i); -1 pads subtasks of smaller k_i
        chosen = bits.gather(1, index.clamp(min=0)) * (index >= 0)
        return (chosen.sum(dim=1, dtype=torch.int64) % 2).to(torch.int64)

    def _with_tasks(self, task: torch.Tensor, generator: torch.Generator | None) -> ParityBatch:
        words = self.draw_words(task.numel(), generator)
        return ParityBatch(self.expand_bits(words), task, self.parity_of(words, task))

    def draw_words(self, n_rows: int, generator: torch.Generator | None) -> torch.Tensor:
        """Uniform task bits of ``n_rows`` rows packed in int64 words: ``[n_rows, ⌈n/64⌉]``."""
        n_words = self._masks.shape[1]
        return torch.randint(
            _WORD_LOW, _WORD_HIGH, (n_rows, n_words), generator=generator, device=self.device
        )

    def expand_bits(self, words: torch.Tensor) -> torch.Tensor:
        """The uint8 bits ``[B, n_bits]`` packed in ``words`` (see :meth:`draw_words`)."""
        n_rows, n_words = words.shape
        # Bit j of a row is bit j % 64 of word j // 64. On a little-endian machine the bytes of
        # the words are in that order already; elsewhere reverse each word's bytes first.
        raw = words.view(torch.uint8)
        if sys.byteorder != "little":  # pragma: no cover
            raw = raw.view(n_rows, n_words, 8).flip(-1)
        # index_select: measured 3x faster than advanced indexing for this gather.
        expanded = _BYTE_TO_BITS.index_select(0, raw.reshape(-1).to(torch.int32))  # (B·8W,)
        bits = expanded.view(torch.uint8).view(n_rows, -1)[:, : self.n_bits]
        if bits.shape[1] != n_words * _BITS_PER_WORD:
            bits = bits.contiguous()
        return bits

    def parity_of(self, words: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        """int64 ``[B]``: parity of the bits of ``S_task[b]`` in row ``b`` of ``words``."""
        # Labels straight from the words: parity of popcount(word & mask), by XOR folding.
        masked = words & self._masks.index_select(0, task)  # (B, W)
        n_words = masked.shape[1]
        acc = masked[:, 0]
        for w in range(1, n_words):  # a handful of words, never a loop over tasks or samples
            acc = acc ^ masked[:, w]
        for shift in (32, 16, 8, 4, 2, 1):  # afterwards bit 0 is the XOR of all 64 bits
            acc = acc ^ (acc >> shift)
        return acc & 1

    def sample_compact(
        self, batch_size: int, *, generator: torch.Generator | None = None
    ) -> ParityBatch:
        """Draw ``batch_size`` i.i.d. samples (tasks from ``probs``) in compact form."""
        batch_size = check_int(batch_size, "batch_size", _OWNER, low=1)
        return self._with_tasks(self.draw_tasks(batch_size, generator), generator)

    def draw_tasks(self, n_rows: int, generator: torch.Generator | None) -> torch.Tensor:
        """int64 ``[n_rows]`` i.i.d. subtask ids drawn from ``probs``."""
        # i.i.d. categorical draws by inverse CDF (float64), so the per-task counts are
        # Multinomial(batch_size, probs) as in the paper's online training. searchsorted was
        # measured 1.7x faster than torch.multinomial here.
        u = torch.rand(n_rows, dtype=torch.float64, generator=generator, device=self.device)
        return torch.searchsorted(self._cdf, u, right=True).clamp_(max=self.n_tasks - 1)

    def sample(
        self, batch_size: int, *, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Draw ``batch_size`` samples: ``(x, y, task)``.

        Returns
        -------
        x : float32 ``[B, n_tasks + n_bits]`` (one-hot control bits, then task bits)
        y : int64 ``[B]`` parity labels
        task : int64 ``[B]`` subtask ids
        """
        batch = self.sample_compact(batch_size, generator=generator)
        return batch.dense(self.n_tasks), batch.y, batch.task

    def dataset(self, n_samples: int, *, generator: torch.Generator | None = None) -> ParityBatch:
        """A fixed training set of ``n_samples`` (D) i.i.d. samples, drawn once."""
        return self.sample_compact(
            check_int(n_samples, "n_samples", _OWNER, low=1), generator=generator
        )

    def per_task_set(
        self, per_task: int, *, generator: torch.Generator | None = None
    ) -> ParityBatch:
        """Exactly ``per_task`` samples of every subtask, task-major (task 0 first)."""
        per_task = check_int(per_task, "per_task", _OWNER, low=1)
        task = torch.arange(self.n_tasks, device=self.device).repeat_interleave(per_task)
        return self._with_tasks(task, generator)

    def __repr__(self) -> str:
        dist = "uniform" if self.uniform else f"alpha={self.alpha:g}, offset={self.offset:g}"
        sizes = self.ks.unique()
        k = (
            f"k={self.k}"
            if len(sizes) == 1 and int(sizes[0]) == self.k
            else "k_i=" + ",".join(str(int(v)) for v in sizes)
        )
        return (
            f"SparseParityTask(n_tasks={self.n_tasks}, n_bits={self.n_bits}, {k}, "
            f"{dist}, seed={self.seed})"
        )


def _draw_subsets(n_tasks: int, n_bits: int, k: int, seed: int) -> np.ndarray:
    """``n_tasks`` distinct sorted k-subsets of ``range(n_bits)`` in random order, seeded."""
    rng = np.random.default_rng(seed)
    total = math.comb(n_bits, k)
    if total <= _ENUMERATE_LIMIT:
        # All combinations in lexicographic order, then a seeded choice without replacement.
        from itertools import combinations

        every = np.fromiter(
            (b for c in combinations(range(n_bits), k) for b in c), dtype=np.int64
        ).reshape(total, k)
        return every[rng.choice(total, size=n_tasks, replace=False)]
    # Huge spaces: rejection of duplicates, vectorized a block at a time. With C(n, k) >
    # _ENUMERATE_LIMIT >> n_tasks in practice collisions are rare, so one block almost always
    # suffices.
    chosen: list[np.ndarray] = []
    seen: set[bytes] = set()
    while len(chosen) < n_tasks:
        block = np.sort(np.argsort(rng.random((2 * n_tasks, n_bits)), axis=1)[:, :k], axis=1)
        for row in block:
            key = row.tobytes()
            if key not in seen:
                seen.add(key)
                chosen.append(row)
                if len(chosen) == n_tasks:
                    break
    return np.stack(chosen).astype(np.int64)


def _draw_mixed_subsets(sizes: np.ndarray, n_tasks: int, n_bits: int, seed: int) -> np.ndarray:
    """Subsets of per-task sizes ``sizes`` (``[n_tasks]``), padded with -1 to the largest size.

    Subtasks of one size get :func:`_draw_subsets` of that size (distinct among themselves;
    subsets of different sizes differ anyway), in task order.
    """
    if len(sizes) != n_tasks:
        raise ValueError(
            f"The 'ks' parameter of {_OWNER} must have one size per subtask ({n_tasks}). "
            f"Got {len(sizes)} instead."
        )
    out = np.full((n_tasks, int(sizes.max())), -1, dtype=np.int64)
    for k in np.unique(sizes):
        rows = np.flatnonzero(sizes == k)
        total = math.comb(n_bits, int(k))
        if total < len(rows):
            raise ValueError(
                f"The 'ks' parameter of {_OWNER} gives {len(rows)} subtasks size k = {k}, more "
                f"than C(n_bits, k) = C({n_bits}, {k}) = {total} distinct subsets."
            )
        out[rows, :k] = _draw_subsets(len(rows), n_bits, int(k), seed)
    return out
