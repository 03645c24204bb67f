"""Sweeps of the toy engine: a grid of fused training runs, resumable, on several executors.

A sweep is a base config plus a grid of axes (any non-runtime ``ParityConfig`` key except the
fused member keys ``widths`` and ``init_seeds``, which every run trains together). Each grid
point is one run directory ``DIR/runs/<config hash>/`` (see :mod:`quanta.parity.run`), so a
finished run is skipped and an interrupted one resumes from its checkpoint: a sweep killed at
any moment (even SIGKILL) and started again ends with every run exactly once. The sweep's
tables are assembled from the finished run directories, never appended to in place:

    DIR/manifest.json     the sweep spec (base, grid, experiment), hash, status
    DIR/runs.parquet      one row per run: hash, the axis values, wall time
    DIR/results.parquet   every run's curves with its hash and axis values (the members'
                          init seed as ``init_seed``; ``seed`` is the run's data seed)

Executors (:mod:`quanta.executors`): ``local`` (in this process), ``ray`` (a running Ray
cluster, by address), ``slurm`` (one submitit job array on a SLURM cluster) and
``submitit-local`` (the same submitit code path on one machine); every remote task asks for the
torch threads its run uses and, on CUDA, one GPU.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from quanta._validation import (
    QuantaInputError,
    check_choice,
    check_device,
    check_int,
    check_precision,
    closest,
)
from quanta.config import build_config, config_fields, config_hash, config_to_dict, normalize
from quanta.executors import EXECUTORS, Task, check_executor, gpus_for, remote_device, run_tasks
from quanta.lock import locked
from quanta.parity.config import PRESETS, ParityConfig, paper_widths
from quanta.store import RunDir, write_parquet

__all__ = [
    "EXECUTORS",
    "EXPERIMENTS",
    "SWEEP_AXES",
    "SWEEP_PRESETS",
    "SweepSpec",
    "run_sweep",
    "sweep_presets",
    "sweep_spec",
]

#: What ``analyze`` fits; ``alpha-data`` is the α × D grid of the paper's Fig. 10.
EXPERIMENTS = ("params", "data", "alpha", "alpha-data", "custom")
_FUSED = ("widths", "init_seeds")
SWEEP_AXES = tuple(
    name
    for name, (_, f) in config_fields(ParityConfig).items()
    if not f.metadata.get("runtime") and name not in _FUSED
)
KIND = "parity.sweep"
_TABLES = ("runs.parquet", "results.parquet")


@dataclass(frozen=True)
class SweepSpec:
    """What to sweep: ``base`` config values, ``grid`` axes → values, an ``experiment`` label
    (one of ``EXPERIMENTS``) that tells ``analyze`` what to fit.

    ``init_per_seed``: the ``seed`` axis makes replicates that differ in everything random —
    subtask subsets, training data and test sets (all drawn from ``seed``) *and* the members'
    initialization: a run's init seeds are the base ones offset by ``seed × (max + 1)``, so
    (base ``init_seeds = (0,)``) the run with ``seed = r`` initializes with ``r``. Without it,
    runs that differ only in ``seed`` share their initialization.
    """

    base: Mapping[str, Any]
    grid: Mapping[str, Sequence[Any]]
    experiment: str = "custom"
    init_per_seed: bool = False

    def __post_init__(self) -> None:
        # Same sweep, same identity, whether values came as strings (CLI) or numbers (TOML).
        object.__setattr__(self, "base", normalize(ParityConfig, self.base, "the sweep base"))
        check_choice(self.experiment, "experiment", "SweepSpec", list(EXPERIMENTS))
        for axis, values in self.grid.items():
            if axis not in SWEEP_AXES:
                hint = closest(axis, SWEEP_AXES)
                why = (
                    (
                        " (widths and init_seeds are trained together in every run; set them "
                        "in the base config)"
                    )
                    if axis in _FUSED
                    else ""
                )
                raise QuantaInputError(
                    f"Unknown sweep axis {axis!r}"
                    + (f" (did you mean {hint!r}?)" if hint else "")
                    + f"{why}. Axes: {', '.join(SWEEP_AXES)}."
                )
            if len(values) == 0:
                raise QuantaInputError(f"Sweep axis {axis!r} has no values: the sweep is empty.")
        grid = {
            a: [normalize(ParityConfig, {a: v}, "the sweep grid")[a] for v in vs]
            for a, vs in self.grid.items()
        }
        object.__setattr__(self, "grid", grid)

    def configs(self) -> list[ParityConfig]:
        """One validated config per grid point (cartesian product, in axis order)."""
        axes = list(self.grid)
        out = []
        for values in itertools.product(*(self.grid[a] for a in axes)):
            point = dict(zip(axes, values, strict=True))
            cfg = build_config(
                ParityConfig, layers=[("the sweep base", self.base), ("the sweep grid", point)]
            )
            if self.init_per_seed:
                shift = cfg.seed * (max(cfg.init_seeds) + 1)
                cfg = dataclasses.replace(cfg, init_seeds=tuple(s + shift for s in cfg.init_seeds))
            out.append(cfg)
        return out

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "base": {k: list(v) if isinstance(v, tuple) else v for k, v in self.base.items()},
            "grid": {k: list(v) for k, v in self.grid.items()},
            "experiment": self.experiment,
        }
        if self.init_per_seed:  # absent when off, so the hashes of existing sweeps stay
            out["init_per_seed"] = True
        return out


def sweep_presets() -> dict[tuple[str, str], SweepSpec]:
    """The built-in sweeps: ``(experiment, preset)`` → spec.

    ``cpu`` sweeps finish in minutes on 2 cores; ``paper`` ones are PAPER.md §2's configs.
    """
    cpu_base = dict(PRESETS["cpu"])
    paper_base = dict(PRESETS["paper"])
    d_grid = [int(d) for d in np.geomspace(1e4, 5e6, 30)]
    alphas = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]
    return {
        ("params", "cpu"): SweepSpec(
            {**cpu_base, "widths": (4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)},
            {"seed": [0]},
            "params",
        ),
        ("data", "cpu"): SweepSpec(
            {**cpu_base, "widths": (256,), "steps": 4000, "eval_points": 40},
            {"n_train": [int(d) for d in np.geomspace(500, 64_000, 8)]},
            "data",
        ),
        # Replicates (the seed axis) draw their own subsets, data and initialization.
        ("alpha", "cpu"): SweepSpec(
            {**cpu_base, "widths": (8, 16, 32, 64, 128, 256), "steps": 6000},
            {"alpha": [0.2, 0.4, 0.8], "seed": [0, 1]},
            "alpha",
            init_per_seed=True,
        ),
        # The paper's Fig. 10 grid scaled down: early-stopped loss vs D for every α. Parities
        # of k = 2 bits at lr 3e-3, because at k = 3 a 2,000-step width-64 net learned at most
        # one subtask at any D (measured), leaving no power law to fit.
        ("alpha-data", "cpu"): SweepSpec(
            {
                **cpu_base,
                "k": 2,
                "lr": 3e-3,
                "widths": (64,),
                "batch_size": 1000,
                "steps": 2000,
                "eval_points": 20,
            },
            {"alpha": [0.2, 0.4, 0.8], "n_train": [2000, 6000, 20_000, 60_000]},
            "alpha-data",
        ),
        ("params", "paper"): SweepSpec(paper_base, {"seed": [0]}, "params"),
        ("data", "paper"): SweepSpec(
            {**paper_base, "widths": (500,), "steps": 1_000_000}, {"n_train": d_grid}, "data"
        ),
        # 3 replicates per α, each its own task (subsets, data) and init (PAPER.md §2).
        ("alpha", "paper"): SweepSpec(
            {**paper_base, "widths": paper_widths(20, 10, 300), "steps": 100_000},
            {"alpha": alphas, "seed": [0, 1, 2]},
            "alpha",
            init_per_seed=True,
        ),
        # Fig. 10's α × D grid: 25 D from 1e4 to 5e6 for every α, width 500, early stopping.
        ("alpha-data", "paper"): SweepSpec(
            {**paper_base, "widths": (500,), "steps": 100_000},
            {"alpha": alphas, "n_train": [int(d) for d in np.geomspace(1e4, 5e6, 25)]},
            "alpha-data",
        ),
    }


SWEEP_PRESETS = sweep_presets()


def sweep_spec(
    experiment: str = "custom",
    preset: str = "cpu",
    *,
    sweep_file: str | Path | None = None,
    args: Sequence[str] = (),
    grid: Sequence[str] = (),
) -> tuple[SweepSpec, dict[str, Any]]:
    """The sweep ``quanta parity sweep`` runs, and the runtime keys it applies to every run.

    Layers, each over the one before: the built-in sweep ``(experiment, preset)`` (for
    ``custom``: the preset's config and no axes); the ``[base]`` and ``[grid]`` tables of the
    TOML ``sweep_file``; config keys as ``--key value`` ``args`` (runtime keys — threads,
    device, … — go to every run without changing the sweep's identity, the others to the
    base); ``grid`` items ``AXIS=V1,V2,...``, each replacing that axis. No axis at all: one run.

    Returns
    -------
    (SweepSpec, dict)
        The spec, and the runtime keys given in ``args`` (checked as :class:`ParityConfig`
        values).
    """
    from quanta.config import load_toml, parse_overrides

    check_choice(experiment, "experiment", "quanta parity sweep", list(EXPERIMENTS))
    check_choice(preset, "preset", "quanta parity sweep", list(PRESETS))
    init_per_seed = False
    if experiment == "custom":
        base: dict[str, Any] = dict(PRESETS[preset])
        axes: dict[str, list[Any]] = {}
    else:
        spec0 = SWEEP_PRESETS[(experiment, preset)]
        base, axes = dict(spec0.base), {k: list(v) for k, v in spec0.grid.items()}
        init_per_seed = spec0.init_per_seed
    if sweep_file is not None:
        data = load_toml(sweep_file)
        unknown = set(data) - {"base", "grid"}
        if unknown:
            raise QuantaInputError(
                f"Sweep file '{sweep_file}' may hold [base] and [grid] tables "
                f"only. Got {sorted(unknown)!r}."
            )
        base.update(data.get("base", {}))
        axes.update({k: list(v) for k, v in data.get("grid", {}).items()})
    fields = config_fields(ParityConfig)
    runtime: dict[str, Any] = {}
    for key, value in parse_overrides(list(args)).items():
        is_runtime = key in fields and fields[key][1].metadata.get("runtime")
        (runtime if is_runtime else base)[key] = value
    for item in grid:
        axis, eq, values = item.partition("=")
        if not eq:
            raise QuantaInputError(f"--grid takes AXIS=V1,V2,...; got {item!r}.")
        axes[axis.replace("-", "_")] = [v for v in values.split(",") if v.strip()]
    if not axes:
        axes = {"seed": [base.get("seed", 0)]}  # a single run
    spec = SweepSpec(base, axes, experiment, init_per_seed=init_per_seed)
    runtime_values = build_config(ParityConfig, layers=[("the command line", runtime)])
    return spec, {k: getattr(runtime_values, k) for k in runtime}


def run_one(
    config: dict[str, Any], out: str, on_step: Callable[[int, int], None] | None = None
) -> dict[str, Any]:
    """Train one grid point into ``out`` (resuming or skipping); importable by remote workers.
    ``on_step(step, steps)`` reports training progress (local executor only)."""
    from quanta.parity.run import run_parity

    cfg = build_config(ParityConfig, layers=[("the sweep run", config)])
    report = None if on_step is None else (lambda step, _: on_step(step, cfg.steps))
    outcome = run_parity(
        cfg,
        out,
        progress=report,
        on_start=None if on_step is None else (lambda step: on_step(step, cfg.steps)),
    )
    return {"status": outcome.status, "wall_seconds": outcome.wall_seconds}


def _tasks(jobs: list[tuple[dict[str, Any], str]], configs: list[ParityConfig]) -> list[Task]:
    """One remote task per pending run, asking for what it uses: its torch threads (resolved
    here and pinned in the config, so the worker uses that many) and a GPU on CUDA."""
    tasks = []
    for (config, out), cfg in zip(jobs, configs, strict=True):
        threads = cfg.resolved_threads()
        runtime = {"threads": threads, "device": remote_device(cfg.device)}
        tasks.append(
            Task(run_one, ({**config, **runtime}, out), cpus=threads, gpus=gpus_for(cfg.device))
        )
    return tasks


@locked("out")
def run_sweep(
    spec: SweepSpec,
    out: str | Path,
    *,
    executor: str = "local",
    ray_address: str | None = None,
    runtime: Mapping[str, Any] | None = None,
    slurm_array_parallelism: int | None = None,
    on_run_done: Callable[[int, int], None] | None = None,
    on_step: Callable[[int, int], None] | None = None,
) -> pd.DataFrame:
    """Run every grid point of ``spec`` into ``out`` and return the results table.

    ``runtime`` overrides runtime-only keys (threads, device, …) of every run. Runs already
    complete are skipped; ``on_run_done(done, total)`` reports runs finished and, with the
    local executor, ``on_step(step, steps)`` the steps of the run in progress. ``executor``,
    ``ray_address`` and ``slurm_array_parallelism``: see :func:`quanta.executors.run_tasks`
    (one task per pending run, asking for its threads and, on CUDA, one GPU).
    """
    configs = [dataclasses.replace(c, **(runtime or {})) for c in spec.configs()]
    executor = check_executor(executor, ray_address, owner="quanta parity sweep")
    if slurm_array_parallelism is not None:
        check_int(slurm_array_parallelism, "slurm_array_parallelism", "quanta parity sweep", low=1)
    if executor in ("local", "submitit-local"):  # remote workers bring their own GPUs
        for device, precision in {(c.device, c.precision) for c in configs}:
            check_device(device, "quanta parity sweep")
            check_precision(precision, device, "quanta parity sweep")
    out = Path(out)
    sweep = RunDir(out, KIND, spec.to_dict(), _spec_hash(spec), files=_TABLES)
    sweep.open()
    runs_dir = out.absolute() / "runs"  # remote workers may start in another directory
    paths = [str(runs_dir / config_hash(c)) for c in configs]
    total = len(configs)
    # Every run checked, also in a complete sweep: a damaged run is trained again.
    pending = [i for i, p in enumerate(paths) if not _complete(p)]
    done = total - len(pending)
    if on_run_done is not None:
        on_run_done(done, total)

    def finished(*_: Any) -> None:
        nonlocal done
        done += 1
        if on_run_done is not None:
            on_run_done(done, total)

    jobs = [(config_to_dict(configs[i]), paths[i]) for i in pending]
    if executor == "local":  # in this process, so training steps can be reported
        for config, path in jobs:
            run_one(config, path, on_step)
            finished()
    else:
        run_tasks(
            executor,
            _tasks(jobs, [configs[i] for i in pending]),
            ray_address=ray_address,
            folder=out / "submitit",
            slurm_array_parallelism=slurm_array_parallelism,
            on_done=finished,
        )
    runs, results = _assemble(spec, configs, paths)
    write_parquet(out / "runs.parquet", runs)
    write_parquet(out / "results.parquet", results)
    sweep.write_manifest(
        status="complete",
        wall_seconds=float(runs["wall_seconds"].sum()),
        extra={"n_runs": total, "executor": executor},
    )
    return results


def _spec_hash(spec: SweepSpec) -> str:
    # The manifest's JSON form of the spec, as sweep hashes were always taken.
    return config_hash(spec.to_dict())


def _complete(path: str) -> bool:
    """Whether the run at ``path`` is complete, its files as recorded (sizes, hashes)."""
    import json

    from quanta.integrity import check_files

    manifest = Path(path) / "manifest.json"
    if not manifest.exists():
        return False
    try:
        data = json.loads(manifest.read_text())
    except (OSError, ValueError):
        return False
    return data.get("status") == "complete" and not check_files(path, data)


def _assemble(
    spec: SweepSpec, configs: list[ParityConfig], paths: list[str]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    import json

    from quanta.parity.run import CURVES

    run_rows, frames = [], []
    for cfg, path in zip(configs, paths, strict=True):
        key = Path(path).name
        axes = {a: getattr(cfg, a) for a in spec.grid}
        manifest = json.loads((Path(path) / "manifest.json").read_text())
        run_rows.append({"run": key, **axes, "wall_seconds": manifest.get("wall_seconds", 0.0)})
        curves = pd.read_parquet(Path(path) / CURVES)
        # The curves' ``seed`` is each member's init seed; the sweep's ``seed`` axis is the
        # run's data seed, so the former is renamed rather than overwritten.
        frames.append(curves.rename(columns={"seed": "init_seed"}).assign(run=key, **axes))
    return pd.DataFrame(run_rows), pd.concat(frames, ignore_index=True)
