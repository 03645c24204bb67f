"""Configuration of one multitask-sparse-parity training run (a fused ensemble).

Every default lives here, with units and intent. Presets overlay the defaults:

* ``cpu`` (the defaults): a task small enough that emergence shows within minutes on 2 cores.
* ``paper``: the headline parameter-scaling run of the paper (PAPER.md §2): n_tasks=500,
  n=100, k=3, α=0.4, 30 widths 9…500, batch 20000, 200,000 steps. Meant for a GPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from quanta._validation import (
    QuantaInputError,
    check_choice,
    check_int,
    check_int_sequence,
    check_real,
)
from quanta.parity.polytask import PolygenicMix
from quanta.parity.task import SparseParityTask

__all__ = ["K_ORDERS", "PRESETS", "ParityConfig", "paper_widths"]

_OWNER = "ParityConfig"
#: Orders of the per-subtask parity sizes (``k_order``); see ``ParityConfig.subtask_ks``.
K_ORDERS = ("cycle", "shuffle", "increasing", "decreasing")


def paper_widths(n: int = 30, low: float = 10, high: float = 500) -> tuple[int, ...]:
    """``n`` log-spaced widths, int-truncated like the original code (10 → 9 by rounding down).

    >>> paper_widths()[:3], paper_widths()[-1]
    ((9, 11, 13), 500)
    """
    grid = np.power(2.0, np.linspace(np.log2(low), np.log2(high), n))
    return tuple(int(w) for w in grid)


def _h(text: str, *, runtime: bool = False) -> Any:
    return field(metadata={"help": text, "runtime": runtime})


@dataclass(frozen=True)
class ParityConfig:
    """One fused training run: the task, the members (widths × init seeds), the optimizer,
    the evaluation schedule. See the module docstring for presets.

    Fields marked runtime do not change the numbers and are not part of the config hash.
    """

    # --- task (PAPER.md §2) ---
    n_tasks: int = field(default=40, metadata={"help": "number of subtasks (control bits)"})
    n_bits: int = field(default=16, metadata={"help": "task bits n"})
    k: int = field(default=3, metadata={"help": "parity subset size"})
    alpha: float = field(
        default=0.4,
        metadata={
            "help": "paper's Zipf α: p_i ∝ (i+1+offset)^-(α+1) (the original code's key is α+1)"
        },
    )
    offset: float = field(default=0.0, metadata={"help": "Zipf rank offset"})
    uniform: bool = field(default=False, metadata={"help": "uniform subtask frequencies"})
    # --- polygenic samples (quanta.parity.polytask); 0 = the paper's monogenic task ---
    polygenic: float = field(
        default=0.0,
        metadata={
            "help": "share of training samples with two control bits on (a polygenic sample "
            "draws on two subtasks a != b, each from the Zipf marginals); 0 = none",
            # The polygenic keys change the numbers, so they are hashed — but only when set,
            # so runs made before they existed keep their hashes.
            "omit_default": True,
        },
    )
    polygenic_and: float = field(
        default=0.5,
        metadata={
            "help": "share of polygenic samples of the AND kind (label parity(S_a) XOR "
            "parity(S_b)); the rest are OR (parity(S_a) = parity(S_b) = label)",
            "omit_default": True,
        },
    )
    polygenic_top: int = field(
        default=4,
        metadata={
            "help": "evaluate every pair of this many most frequent subtasks, both kinds "
            "(test_per_task samples each)",
            "omit_default": True,
        },
    )
    # Quanta of unequal cost (issue 20): both keys are hashed only when set, so configs made
    # before they existed keep their hashes.
    k_per_task: tuple[int, ...] = field(
        default=(),
        metadata={
            "help": "per-subtask parity sizes k_i, comma-separated, cycled over the subtasks "
            "(then ordered by k_order); empty = every subtask has k",
            "omit_default": True,
        },
    )
    k_order: str = field(
        default="cycle",
        metadata={
            "help": "cycle | shuffle | increasing | decreasing: k_i in the order given, cycled; "
            "a seeded permutation of that (cost independent of frequency); sorted so cost "
            "grows (or falls) with frequency rank",
            "omit_default": True,
        },
    )
    # --- members: every width × every init seed, trained as one fused net ---
    widths: tuple[int, ...] = field(
        default=(8, 16, 32, 64, 128, 256, 512), metadata={"help": "hidden widths, comma-separated"}
    )
    init_seeds: tuple[int, ...] = field(
        default=(0,), metadata={"help": "initialization seeds, comma-separated"}
    )
    # --- optimization: AdamW, no schedule, no clipping ---
    steps: int = field(default=10_000, metadata={"help": "optimizer steps"})
    batch_size: int = field(default=2000, metadata={"help": "samples per step"})
    n_train: int = field(
        default=0,
        metadata={
            "help": "fixed training-set size D (multi-epoch); 0 = online, a fresh batch per step"
        },
    )
    lr: float = field(default=1e-3, metadata={"help": "AdamW learning rate"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay"})
    seed: int = field(
        default=0,
        metadata={"help": "seed of the subsets, the training stream, the test and validation sets"},
    )
    precision: str = field(
        default="f32",
        metadata={
            "help": "f32 | bf16: dtype of the training step's matmuls and activations; weights, "
            "gradients and AdamW state stay float32, evaluation runs in float32",
            # Changes the numbers, so hashed — but only when not f32, so runs made before the
            # key existed keep their hashes.
            "omit_default": True,
        },
    )
    # --- evaluation ---
    test_per_task: int = field(
        default=200, metadata={"help": "test samples per subtask (the paper: 1000)"}
    )
    val_per_task: int = field(
        default=0,
        metadata={
            "help": "validation samples per subtask for early stopping; 0 = none "
            "(fixed-D runs default to test_per_task)"
        },
    )
    eval_points: int = field(
        default=80, metadata={"help": "evaluations at log-spaced steps (plus step 0 and the last)"}
    )
    eval_every: int = field(
        default=0, metadata={"help": "also evaluate every this many steps; 0 = log-spaced only"}
    )
    learned_threshold: float = field(
        default=0.1,
        metadata={"help": "a subtask counts as learned when its test loss is below this, nats"},
    )
    # --- runtime knobs (not hashed) ---
    threads: int = field(
        default=0,
        metadata={
            "help": "torch CPU threads; 0 = auto: 1 for small nets (on busy cores 2 threads were "
            "measured 2-20x slower for small ops), all cores once batch x hidden >= 1M",
            "runtime": True,
        },
    )
    device: str = field(
        default="cpu", metadata={"help": "torch device: cpu or cuda[:i]", "runtime": True}
    )
    eval_chunk: int = field(
        default=0,
        metadata={
            "help": "rows per evaluation block; 0 = auto (activations of ~8 MiB, cache-sized)",
            "runtime": True,
        },
    )
    checkpoint_seconds: float = field(
        default=60.0, metadata={"help": "seconds between resumable checkpoints", "runtime": True}
    )

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "n_tasks", check_int(self.n_tasks, "n_tasks", _OWNER, low=1))
        set_(self, "n_bits", check_int(self.n_bits, "n_bits", _OWNER, low=1))
        set_(self, "k", check_int(self.k, "k", _OWNER, low=1, high=self.n_bits))
        set_(self, "alpha", check_real(self.alpha, "alpha", _OWNER, low=0.0))
        set_(self, "offset", check_real(self.offset, "offset", _OWNER, low=-1.0, low_open=True))
        if self.k_per_task != ():
            ks = check_int_sequence(self.k_per_task, "k_per_task", _OWNER, low=1, high=self.n_bits)
            set_(self, "k_per_task", ks)
        check_choice(self.k_order, "k_order", _OWNER, list(K_ORDERS))
        set_(self, "widths", check_int_sequence(self.widths, "widths", _OWNER, low=1))
        set_(
            self,
            "init_seeds",
            check_int_sequence(self.init_seeds, "init_seeds", _OWNER, low=0, unique=True),
        )
        set_(self, "steps", check_int(self.steps, "steps", _OWNER, low=1))
        set_(self, "batch_size", check_int(self.batch_size, "batch_size", _OWNER, low=1))
        set_(self, "n_train", check_int(self.n_train, "n_train", _OWNER, low=0))
        set_(self, "lr", check_real(self.lr, "lr", _OWNER, low=0.0, low_open=True))
        set_(self, "weight_decay", check_real(self.weight_decay, "weight_decay", _OWNER, low=0.0))
        set_(self, "seed", check_int(self.seed, "seed", _OWNER, low=0))
        check_choice(self.precision, "precision", _OWNER, ["f32", "bf16"])
        set_(self, "test_per_task", check_int(self.test_per_task, "test_per_task", _OWNER, low=1))
        set_(self, "val_per_task", check_int(self.val_per_task, "val_per_task", _OWNER, low=0))
        set_(self, "eval_points", check_int(self.eval_points, "eval_points", _OWNER, low=1))
        set_(self, "eval_every", check_int(self.eval_every, "eval_every", _OWNER, low=0))
        set_(
            self,
            "learned_threshold",
            check_real(self.learned_threshold, "learned_threshold", _OWNER, low=0.0, low_open=True),
        )
        set_(self, "threads", check_int(self.threads, "threads", _OWNER, low=0))
        device = str(self.device)
        check_choice(device.split(":")[0], "device", _OWNER, ["cpu", "cuda"])
        set_(self, "eval_chunk", check_int(self.eval_chunk, "eval_chunk", _OWNER, low=0))
        set_(
            self,
            "checkpoint_seconds",
            check_real(self.checkpoint_seconds, "checkpoint_seconds", _OWNER, low=0.0),
        )
        if self.n_train > 0 and self.val_per_task == 0:
            # Early stopping in fixed-D runs needs a held-out set that is not the test set.
            set_(self, "val_per_task", self.test_per_task)
        self._check_variants()

    def _check_variants(self) -> None:
        """The task variants of issue 20 (polygenic samples, per-subtask costs), then the task
        itself: the errors of both surface at construction."""
        set_ = object.__setattr__
        set_(self, "polygenic", check_real(self.polygenic, "polygenic", _OWNER, low=0.0, high=1.0))
        set_(
            self,
            "polygenic_and",
            check_real(self.polygenic_and, "polygenic_and", _OWNER, low=0.0, high=1.0),
        )
        set_(self, "polygenic_top", check_int(self.polygenic_top, "polygenic_top", _OWNER, low=2))
        if self.k_per_task and min(self.k_per_task) > max(self.widths):
            # A k-sparse parity is built from k hidden ReLU units (one per kink of the parity
            # of the bit sum); a net narrower than every k_i can learn none of them.
            raise QuantaInputError(
                f"The 'k_per_task' parameter of {_OWNER} leaves no subtask learnable: every "
                f"k_i >= {min(self.k_per_task)} exceeds the largest width {max(self.widths)} "
                "(a k-parity needs about k hidden units). Use smaller k_i or wider widths."
            )
        if self.k_per_task and self.polygenic > 0:
            raise QuantaInputError(
                f"{_OWNER} cannot mix 'k_per_task' with 'polygenic' samples (a polygenic pair is "
                "built for one parity size k). Use one of the two per run."
            )
        self.make_polygenic()  # surfaces task errors (e.g. C(n_bits, k) < n_tasks) too

    @property
    def online(self) -> bool:
        """True when every step draws a fresh batch (D = ∞)."""
        return self.n_train == 0

    def resolved_threads(self) -> int:
        """The thread count to use: ``threads``, or the auto rule when it is 0."""
        if self.threads > 0:
            return self.threads
        activations = self.batch_size * sum(self.widths) * len(self.init_seeds)
        return (os.cpu_count() or 1) if activations >= 1_000_000 else 1

    def subtask_ks(self) -> np.ndarray:
        """Every subtask's parity size ``k_i`` (int64 ``[n_tasks]``; its cost, in hidden units).

        >>> ParityConfig(n_tasks=5, n_bits=8, k_per_task=(2, 4)).subtask_ks().tolist()
        [2, 4, 2, 4, 2]
        >>> cfg = ParityConfig(n_tasks=5, n_bits=8, k_per_task=(4, 2), k_order="increasing")
        >>> cfg.subtask_ks().tolist()
        [2, 2, 4, 4, 4]
        """
        if not self.k_per_task:
            return np.full(self.n_tasks, self.k, dtype=np.int64)
        ks = np.resize(np.asarray(self.k_per_task, dtype=np.int64), self.n_tasks)
        if self.k_order == "shuffle":
            # Its own stream (seed, 20): the subsets and the data draw from other streams.
            ks = np.random.default_rng([self.seed, 20]).permutation(ks)
        elif self.k_order in ("increasing", "decreasing"):
            ks = np.sort(ks) if self.k_order == "increasing" else np.sort(ks)[::-1].copy()
        return ks

    def make_task(self) -> SparseParityTask:
        """The :class:`SparseParityTask` this config trains on."""
        try:
            return SparseParityTask(
                self.n_tasks,
                self.n_bits,
                self.k,
                self.alpha,
                offset=self.offset,
                uniform=self.uniform,
                seed=self.seed,
                ks=self.subtask_ks().tolist() if self.k_per_task else None,
            )
        except ValueError as exc:
            raise QuantaInputError(str(exc).replace("SparseParityTask", _OWNER)) from None

    def make_polygenic(self) -> PolygenicMix | None:
        """The :class:`PolygenicMix` of the polygenic keys, or None when ``polygenic == 0``."""
        task = self.make_task()
        if self.polygenic == 0:
            return None
        try:
            return PolygenicMix(
                task, fraction=self.polygenic, and_share=self.polygenic_and, top=self.polygenic_top
            )
        except ValueError as exc:
            raise QuantaInputError(str(exc)) from None

    def members(self) -> list[tuple[int, int]]:
        """``(width, init_seed)`` of every member, seed-major."""
        return [(w, s) for s in self.init_seeds for w in self.widths]


PRESETS: dict[str, dict[str, Any]] = {
    "cpu": {},
    "paper": {
        "n_tasks": 500,
        "n_bits": 100,
        "k": 3,
        "alpha": 0.4,
        "widths": paper_widths(),
        "steps": 200_000,
        "batch_size": 20_000,
        "test_per_task": 1000,
        "eval_points": 150,
        "eval_every": 5000,
        "device": "cuda",
    },
}
