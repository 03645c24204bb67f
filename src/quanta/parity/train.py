"""Train a fused ensemble of MLPs on multitask sparse parity and record tidy curves.

``train_parity(cfg)`` is the pure core: no files, no argv, no global state (the thread count
is set for the duration of the call and restored). Resuming is done by passing back a
:class:`TrainState` captured by the ``on_checkpoint`` callback; a resumed run gives exactly the
numbers of an uninterrupted one, because the state holds every generator and optimizer moment.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from quanta.parity.config import ParityConfig
from quanta.parity.eval import Evaluation, evaluate, evaluate_groups
from quanta.parity.model import PRECISIONS, FusedParityMLP, n_params_mlp
from quanta.parity.polytask import KINDS, AnyBatch, PolygenicBatch, second_task
from quanta.parity.task import SparseParityTask

__all__ = [
    "CURVE_COLUMNS",
    "TrainResult",
    "TrainState",
    "eval_schedule",
    "members_table",
    "summarize",
    "train_parity",
]

#: Columns of ``curves.parquet``: one row per member × evaluated step × split × task.
#: ``task == -1`` is the mixture over subtasks (weighted by their frequencies); ``split`` is
#: ``test`` (fixed per-task test set), ``val`` (validation set, mixture only) or ``train`` (mean
#: training-batch loss since the previous evaluation, mixture only). Runs with polygenic samples
#: (``ParityConfig.polygenic > 0``) add ``poly-or`` and ``poly-and`` rows, ``task`` = the pair's
#: index in :meth:`PolygenicMix.eval_pairs`.
CURVE_COLUMNS = [
    "member",
    "width",
    "seed",
    "n_params",
    "step",
    "split",
    "task",
    "loss_nats",
    "accuracy",
]
MIXTURE = -1


def eval_schedule(steps: int, points: int, every: int = 0) -> np.ndarray:
    """Steps to evaluate: 0, ``points`` log-spaced steps up to ``steps``, and multiples of
    ``every`` (if > 0). Dense early, sparse late.

    >>> eval_schedule(1000, 5).tolist()
    [0, 1, 6, 32, 178, 1000]
    """
    log_steps = np.unique(np.round(np.geomspace(1, steps, points)).astype(np.int64))
    parts = [np.array([0, steps]), log_steps]
    if every > 0:
        parts.append(np.arange(0, steps + 1, every))
    return np.unique(np.concatenate(parts))


def members_table(cfg: ParityConfig) -> pd.DataFrame:
    """One row per member: member index, width, init seed, parameter count P."""
    rows = [
        (m, w, s, n_params_mlp(cfg.n_tasks + cfg.n_bits, w))
        for m, (w, s) in enumerate(cfg.members())
    ]
    return pd.DataFrame(rows, columns=["member", "width", "seed", "n_params"])


@dataclass
class TrainState:
    """Everything needed to continue a run bit-for-bit: captured at a step boundary."""

    step: int
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    stream: torch.Tensor  # state of the training-stream generator
    order: torch.Tensor | None  # fixed-D: this epoch's permutation
    cursor: int  # fixed-D: position in ``order``
    train_sums: torch.Tensor  # (3, M): loss sum, accuracy sum, batch count since last eval
    blocks: list[dict[str, np.ndarray]]  # recorded rows, one block per evaluated step
    wall_seconds: float


@dataclass
class TrainResult:
    """A finished run: tidy curves, the member table, the trained fused net."""

    curves: pd.DataFrame
    members: pd.DataFrame
    model: FusedParityMLP
    wall_seconds: float


@contextlib.contextmanager
def _threads(n: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _generator(seq: np.random.SeedSequence) -> torch.Generator:
    # CPU generators on every device: the same seed draws the same data on CPU and GPU.
    return torch.Generator().manual_seed(int(seq.generate_state(1, np.uint64)[0]))


class _Stream:
    """The training batches: fresh i.i.d. batches (online) or epochs over a fixed set of D."""

    def __init__(
        self, task: SparseParityTask, cfg: ParityConfig, seeds: list[np.random.SeedSequence]
    ) -> None:
        self.task, self.cfg = task, cfg
        self.mix = cfg.make_polygenic()  # None: the paper's monogenic task, drawn as before
        self.gen = _generator(seeds[0])
        self.data: AnyBatch | None = None
        self.order: torch.Tensor | None = None
        self.cursor = 0
        if not cfg.online:
            gen = _generator(seeds[1])
            self.data = (
                task.dataset(cfg.n_train, generator=gen)
                if self.mix is None
                else self.mix.sample(cfg.n_train, generator=gen)
            )

    def next(self) -> AnyBatch:
        if self.data is None:
            if self.mix is not None:
                return self.mix.sample(self.cfg.batch_size, generator=self.gen)
            return self.task.sample_compact(self.cfg.batch_size, generator=self.gen)
        n = self.cfg.n_train
        if self.order is None or self.cursor >= n:
            # Reshuffle every epoch, on the CPU where the D set and the stream generator live.
            self.order = torch.randperm(n, generator=self.gen, device=self.gen.device)
            self.cursor = 0
        idx = self.order[self.cursor : self.cursor + self.cfg.batch_size]
        self.cursor += idx.numel()
        return self.data.select(idx)


def _eval_columns(ev: Evaluation, split: str, step: int, per_task: bool) -> dict[str, np.ndarray]:
    n_tasks, n_members = ev.loss.shape
    mix_loss, mix_acc = ev.mixture_loss.numpy(), ev.mixture_accuracy.numpy()
    members = np.arange(n_members)
    if not per_task:
        return _columns(members, step, split, np.full(n_members, MIXTURE), mix_loss, mix_acc)
    # Member-major: for each member, the mixture row then one row per subtask.
    tasks = np.tile(np.arange(MIXTURE, n_tasks), n_members)
    loss = np.concatenate([mix_loss[:, None], ev.loss.T.numpy()], axis=1).ravel()
    acc = np.concatenate([mix_acc[:, None], ev.accuracy.T.numpy()], axis=1).ravel()
    return _columns(np.repeat(members, n_tasks + 1), step, split, tasks, loss, acc)


def _columns(
    member: np.ndarray, step: int, split: str, task: np.ndarray, loss: np.ndarray, acc: np.ndarray
) -> dict[str, np.ndarray]:
    n = member.size
    return {
        "member": member.astype(np.int32),
        "step": np.full(n, step, np.int64),
        "split": np.full(n, split, dtype=object),
        "task": task.astype(np.int32),
        "loss_nats": loss.astype(np.float64),
        "accuracy": acc.astype(np.float64),
    }


def train_parity(
    cfg: ParityConfig,
    *,
    state: TrainState | None = None,
    on_checkpoint: Callable[[TrainState], None] | None = None,
    progress: Callable[[int, dict[str, float]], None] | None = None,
    stop: Callable[[], bool] | None = None,
) -> TrainResult:
    """Train every member of ``cfg`` as one fused network and evaluate on a schedule.

    Parameters
    ----------
    cfg : ParityConfig
    state : TrainState, optional
        Resume from this checkpoint (from a previous ``on_checkpoint`` call with the same cfg).
    on_checkpoint : callable, optional
        Called with a :class:`TrainState` every ``cfg.checkpoint_seconds`` of wall time, and
        when ``stop`` asks to stop.
    progress : callable, optional
        Called as ``progress(step, info)`` after every optimizer step; ``info`` holds
        ``loss`` (latest training loss of the last member, nats).
    stop : callable, optional
        Polled at every step boundary; when it returns True the run checkpoints and raises
        ``KeyboardInterrupt`` (so a Ctrl-C handler can stop a run without losing work).

    Returns
    -------
    TrainResult
        ``curves`` has the columns :data:`CURVE_COLUMNS`.

    Examples
    --------
    >>> cfg = ParityConfig(n_tasks=4, n_bits=8, widths=(4, 8), steps=3, batch_size=16,
    ...                    test_per_task=4, eval_points=2)
    >>> res = train_parity(cfg)
    >>> sorted(res.curves["step"].unique().tolist())
    [0, 1, 3]
    """
    with _threads(cfg.resolved_threads()):
        run = _Training(cfg, state)
        run.train(on_checkpoint=on_checkpoint, progress=progress, stop=stop)
        return run.result()


class _Training:
    """One call of :func:`train_parity`: the data, the fused net, its optimizer, and what has
    been recorded — built (or restored from a :class:`TrainState`) in the order the generators
    are drawn from, so a seed gives the same numbers."""

    def __init__(self, cfg: ParityConfig, state: TrainState | None) -> None:
        seeds = np.random.SeedSequence(cfg.seed).spawn(4)  # stream, D set, test set, val set
        self.cfg, self.device = cfg, torch.device(cfg.device)
        task = cfg.make_task()
        test_set = task.per_task_set(cfg.test_per_task, generator=_generator(seeds[2]))
        val_set = (
            task.per_task_set(cfg.val_per_task, generator=_generator(seeds[3]))
            if cfg.val_per_task > 0
            else None
        )
        members = cfg.members()
        self.model = FusedParityMLP(
            cfg.n_tasks, cfg.n_bits, [w for w, _ in members], init_seeds=[s for _, s in members]
        )
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay
        )
        self.stream = _Stream(task, cfg, seeds)
        self.poly_set: tuple[PolygenicBatch, torch.Tensor] | None = None
        if self.stream.mix is not None:  # its own seed, after the four of the monogenic run
            poly_seed = np.random.SeedSequence([cfg.seed, 1])
            self.poly_set = self.stream.mix.eval_set(
                cfg.test_per_task, generator=_generator(poly_seed)
            )
        self.n_members = len(members)
        # (3, M): training loss sum, accuracy sum and batch count since the last evaluation,
        # summed where the losses are (one transfer per evaluation, not per step).
        self.train_sums = torch.zeros(3, self.n_members, dtype=torch.float64, device=self.device)
        self.blocks: list[dict[str, np.ndarray]] = []  # one block of rows per evaluated step
        self.start, self.wall_before = 0, 0.0
        if state is not None:
            self._restore(state)
        self.model.to(self.device)
        self.to_dev = _mover(self.device)
        self.test_set = self.to_dev(test_set)
        if self.poly_set is not None:
            self.poly_set = (self.to_dev(self.poly_set[0]), self.poly_set[1].to(self.device))
        self.val_set = self.to_dev(val_set) if val_set else None
        self.probs = task.probs.to(self.device)
        self.eval_chunk = cfg.eval_chunk or None  # None: cache-sized blocks
        self.compute_dtype = PRECISIONS[cfg.precision]  # of the step; evaluation stays f32
        self.schedule = set(eval_schedule(cfg.steps, cfg.eval_points, cfg.eval_every).tolist())
        self.t0 = time.perf_counter()

    def _restore(self, state: TrainState) -> None:
        self.model.load_state_dict(state.model)
        self.optimizer.load_state_dict(state.optimizer)
        self.stream.gen.set_state(state.stream)
        self.stream.order, self.stream.cursor = state.order, state.cursor
        self.train_sums = state.train_sums.to(self.device, copy=True)
        self.blocks = list(state.blocks)
        self.start, self.wall_before = state.step, state.wall_seconds

    def snapshot(self, step: int) -> TrainState:
        return TrainState(
            step=step,
            model=_cpu(self.model.state_dict()),
            optimizer=_cpu(self.optimizer.state_dict()),
            stream=self.stream.gen.get_state(),
            order=self.stream.order,
            cursor=self.stream.cursor,
            train_sums=_cpu(self.train_sums),
            blocks=list(self.blocks),
            wall_seconds=self.wall_before + time.perf_counter() - self.t0,
        )

    def eval_rows(self, step: int) -> dict[str, np.ndarray]:
        """The rows of ``step``: test (per task and mixture), val and train (mixture)."""
        model, probs, chunk = self.model, self.probs, self.eval_chunk
        model.eval()
        test = evaluate(model, self.test_set, probs, chunk_size=chunk)
        parts = [_eval_columns(_on_cpu(test), "test", step, per_task=True)]
        if self.poly_set is not None:
            parts += _poly_columns(model, self.poly_set, step, chunk)
        if self.val_set is not None:
            ev_val = evaluate(model, self.val_set, probs, chunk_size=chunk)
            parts.append(_eval_columns(_on_cpu(ev_val), "val", step, per_task=False))
        sums, m = self.train_sums, self.n_members
        if sums[2, 0] > 0:
            mean = (sums[:2] / sums[2]).cpu().numpy()
            parts.append(
                _columns(np.arange(m), step, "train", np.full(m, MIXTURE), mean[0], mean[1])
            )
        model.train()
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def train(
        self,
        *,
        on_checkpoint: Callable[[TrainState], None] | None,
        progress: Callable[[int, dict[str, float]], None] | None,
        stop: Callable[[], bool] | None,
    ) -> None:
        """Steps from the start (or the restored step) to ``cfg.steps``, evaluating on the
        schedule and checkpointing every ``cfg.checkpoint_seconds``."""
        step, blocks, last_ckpt = self.start, self.blocks, self.t0
        while True:
            # A resumed run may stop right after an evaluation it already recorded.
            if step in self.schedule and not (blocks and blocks[-1]["step"][0] == step):
                block = self.eval_rows(step)
                self.train_sums.zero_()
                blocks.append(block)
            if step >= self.cfg.steps:
                break
            if stop is not None and stop():
                if on_checkpoint is not None:
                    on_checkpoint(self.snapshot(step))
                raise KeyboardInterrupt(f"stopped at step {step}")
            per_member = self.step()
            step += 1
            if progress is not None:  # float(): a device sync, so only when it is shown
                progress(step, {"loss": float(per_member[-1])})
            now = time.perf_counter()
            if on_checkpoint is not None and now - last_ckpt >= self.cfg.checkpoint_seconds:
                on_checkpoint(self.snapshot(step))
                last_ckpt = now

    def step(self) -> torch.Tensor:
        """One optimizer step on the next batch; each member's training loss (nats), (M,)."""
        batch = self.to_dev(self.stream.next())
        # Gradient of the *sum* of member losses: member m gets exactly its own gradient.
        per_member, hits = self.model.loss_and_grad(
            batch.bits,
            batch.task,
            batch.y,
            compute_dtype=self.compute_dtype,
            task2=second_task(batch),
        )  # (M,) ×2
        self.optimizer.step()
        self.train_sums[0] += per_member
        self.train_sums[1] += hits
        self.train_sums[2] += 1
        return per_member

    def result(self) -> TrainResult:
        wall = self.wall_before + time.perf_counter() - self.t0
        blocks = self.blocks
        curves = pd.DataFrame({k: np.concatenate([b[k] for b in blocks]) for k in blocks[0]})
        table = members_table(self.cfg)
        curves = curves.merge(table, on="member", how="left")[CURVE_COLUMNS]
        return TrainResult(curves=curves, members=table, model=self.model.cpu(), wall_seconds=wall)


def _mover(device: torch.device) -> Callable[[Any], Any]:
    if device.type == "cpu":
        return lambda b: b
    return lambda b: type(b)(*(t.to(device, non_blocking=True) for t in b))


def _poly_columns(
    model: FusedParityMLP,
    poly_set: tuple[PolygenicBatch, torch.Tensor],
    step: int,
    chunk: int | None,
) -> list[dict[str, np.ndarray]]:
    """Rows of the polygenic evaluation: split ``poly-or`` / ``poly-and``, ``task`` = the index
    of the pair in :meth:`PolygenicMix.eval_pairs`, member-major."""
    data, group = poly_set
    n_groups = int(group.max()) + 1
    loss, acc = (
        t.cpu().numpy() for t in evaluate_groups(model, data, group, n_groups, chunk_size=chunk)
    )
    n_pairs, n_members = n_groups // len(KINDS), loss.shape[1]
    members, pairs = (
        np.repeat(np.arange(n_members), n_pairs),
        np.tile(np.arange(n_pairs), n_members),
    )
    parts = []
    for k, kind in enumerate(KINDS):
        rows = slice(k * n_pairs, (k + 1) * n_pairs)
        parts.append(
            _columns(
                members, step, f"poly-{kind}", pairs, loss[rows].T.ravel(), acc[rows].T.ravel()
            )
        )
    return parts


def _on_cpu(ev: Evaluation) -> Evaluation:
    return Evaluation(
        *(t.cpu() for t in (ev.loss, ev.accuracy, ev.mixture_loss, ev.mixture_accuracy))
    )


def _cpu(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().clone()
    if isinstance(obj, dict):
        return {k: _cpu(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_cpu(v) for v in obj]
    return obj


def summarize(curves: pd.DataFrame, threshold: float = 0.1) -> pd.DataFrame:
    """One row per member: final test loss/accuracy, subtasks learned (test loss < threshold
    nats) at the last step, and, where a validation set exists, the early-stopping step (min
    validation loss) with the test loss there.

    >>> cfg = ParityConfig(n_tasks=4, n_bits=8, widths=(4,), steps=2, batch_size=8,
    ...                    test_per_task=2, eval_points=2)
    >>> list(summarize(train_parity(cfg).curves).columns)[:4]
    ['member', 'width', 'seed', 'n_params']
    """
    test = curves[curves["split"] == "test"]
    last = test[test["step"] == test["step"].max()]
    mix = last[last["task"] == MIXTURE].set_index("member")
    learned = (
        last[last["task"] != MIXTURE]
        .assign(learned=lambda d: d["loss_nats"] < threshold)
        .groupby("member")["learned"]
        .sum()
    )
    out = mix[["width", "seed", "n_params"]].copy()
    out["final_loss_nats"] = mix["loss_nats"]
    out["final_accuracy"] = mix["accuracy"]
    out["n_learned"] = learned.reindex(out.index).fillna(0).astype(int)
    val = curves[(curves["split"] == "val") & (curves["task"] == MIXTURE)]
    if not val.empty:
        rows = val.loc[val.groupby("member")["loss_nats"].idxmin(), ["member", "step"]]
        best_step = rows.set_index("member")["step"]
        test_mix = test[test["task"] == MIXTURE].set_index(["member", "step"])["loss_nats"]
        out["early_stop_step"] = best_step
        out["early_stop_test_loss_nats"] = test_mix.reindex(
            list(zip(best_step.index, best_step.to_numpy(), strict=True))
        ).to_numpy()
    return out.reset_index()
