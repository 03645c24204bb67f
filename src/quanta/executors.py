"""Where independent units of work run: this process, a Ray cluster, or SLURM through submitit.

Parity sweeps (one task per grid point) and ``lm losses`` (one task per model × revision
column) hand a list of :class:`Task` to :func:`run_tasks`. A task is an importable function
with its arguments and the resources it uses: ``cpus`` torch threads (the function runs with
exactly that many, so the request is what it takes) and ``gpus`` (1 when its device is CUDA).
Each task writes its own result into a shared directory, so the caller resumes by skipping
finished ones and assembles its tables itself; :func:`run_tasks` only runs them.

Executors:

``local``
    In this process, one after another.
``ray``
    One Ray task per unit on an existing cluster (``ray.init(address=...)``), each requesting
    ``num_cpus=cpus``, ``num_gpus=gpus``; a request no node can satisfy is refused up front
    (Ray would otherwise wait for it forever).
``slurm``
    One SLURM job array (submitit's ``map_array``) with ``cpus_per_task`` and ``gpus_per_node``
    the largest request of its tasks and at most ``slurm_array_parallelism`` jobs at once.
``submitit-local``
    The same submitit code path as ``slurm``, as processes on this machine.

Remote executors need ``quanta`` importable on the workers and the output directory on a
filesystem they share with the driver. A CUDA device index (``cuda:1``) is dropped on remote
workers: Ray, SLURM and submitit expose the GPU they assigned as device 0.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import socket
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from quanta._validation import QuantaInputError, check_choice, check_int

__all__ = [
    "EXECUTORS",
    "REMOTE",
    "Task",
    "check_executor",
    "gpus_for",
    "remote_device",
    "run_tasks",
    "submitit_parameters",
    "torch_threads",
]

EXECUTORS = ("local", "ray", "slurm", "submitit-local")
REMOTE = ("ray", "slurm", "submitit-local")  # executors that run tasks outside this process
_SUBMITIT_TIMEOUT_MIN = 24 * 60  # minutes per task; SLURM kills a job past its time limit


@dataclass(frozen=True)
class Task:
    """One unit of work: ``fn(*args)``, run with ``cpus`` torch threads and ``gpus`` GPUs.

    ``fn`` must be importable by name on the workers (a module-level function).
    """

    fn: Callable[..., Any]
    args: tuple[Any, ...] = field(default=())
    cpus: int = 1
    gpus: int = 0

    def __post_init__(self) -> None:
        check_int(self.cpus, "cpus", "Task", low=1)
        check_int(self.gpus, "gpus", "Task", low=0)


def gpus_for(device: str) -> int:
    """GPUs a task on ``device`` uses: 1 for ``cuda[:i]``, else 0.

    >>> gpus_for("cuda:1"), gpus_for("cpu")
    (1, 0)
    """
    return 1 if str(device).startswith("cuda") else 0


def remote_device(device: str) -> str:
    """``device`` as a remote worker must name it: the scheduler's GPU is that worker's only
    visible one, so ``cuda:i`` becomes ``cuda``.

    >>> remote_device("cuda:1"), remote_device("cpu")
    ('cuda', 'cpu')
    """
    return "cuda" if str(device).startswith("cuda") else str(device)


def _split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise QuantaInputError(f"The Ray address must look like HOST:PORT. Got {address!r}.")
    return host, int(port)


def check_executor(executor: str, ray_address: str | None, *, owner: str) -> str:
    """Refuse an unusable executor before anything is written; return the executor name.

    ``ray`` needs ``ray_address`` of a cluster that accepts a connection (a socket connect
    with a 5 s timeout: ``ray.init`` on a dead address retries for minutes); ``slurm`` needs
    ``sbatch`` on ``PATH``.

    Raises
    ------
    QuantaInputError
        An unknown executor, a missing or unreachable Ray address, or no SLURM.
    """
    executor = check_choice(executor, "executor", owner, list(EXECUTORS))
    if executor == "ray":
        if not ray_address:
            raise QuantaInputError(
                "--executor ray needs --ray-address HOST:PORT of a running Ray cluster "
                "(start one with 'ray start --head')."
            )
        host, port = _split_address(ray_address)
        try:
            with socket.create_connection((host, port), timeout=5.0):
                pass
        except OSError as exc:
            raise QuantaInputError(
                f"Cannot reach a Ray cluster at {ray_address!r} ({exc.strerror or exc}); start "
                "one with 'ray start --head' or check --ray-address."
            ) from None
    if executor == "slurm" and shutil.which("sbatch") is None:
        raise QuantaInputError(
            "SLURM is not available here (no 'sbatch' on PATH); use --executor local, ray or "
            "submitit-local."
        )
    return executor


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` torch CPU threads (``None``: leave torch's setting alone)."""
    if n is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(check_int(n, "threads", "torch_threads", low=1))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _call(task: Task) -> Any:
    """Run ``task`` with exactly ``task.cpus`` torch threads (what it asked the scheduler for)."""
    with torch_threads(task.cpus):
        return task.fn(*task.args)


def run_tasks(
    executor: str,
    tasks: Sequence[Task],
    *,
    ray_address: str | None = None,
    folder: str | Path | None = None,
    slurm_array_parallelism: int | None = None,
    on_done: Callable[[int, Any], None] | None = None,
) -> list[Any]:
    """Run every task on ``executor`` and return their results in task order.

    Parameters
    ----------
    executor : {"local", "ray", "slurm", "submitit-local"}
        Checked with :func:`check_executor` by the caller, before it wrote anything.
    tasks : sequence of Task
    ray_address : str, optional
        ``HOST:PORT`` of the Ray cluster (``executor="ray"``).
    folder : path-like, optional
        submitit's folder for job scripts and logs (``slurm``, ``submitit-local``).
    slurm_array_parallelism : int, optional
        At most this many jobs of the array run at once (SLURM's ``--array=…%N``);
        default: no limit.
    on_done : callable, optional
        ``on_done(i, result)`` as task ``i`` finishes (in completion order for Ray, in task
        order otherwise).

    Returns
    -------
    list
        ``tasks[i].fn(*tasks[i].args)`` for every ``i``. A task's exception is raised here.
    """
    executor = check_choice(executor, "executor", "run_tasks", list(EXECUTORS))
    if slurm_array_parallelism is not None:
        check_int(slurm_array_parallelism, "slurm_array_parallelism", "run_tasks", low=1)
    results: list[Any] = [None] * len(tasks)

    def done(i: int, result: Any) -> None:
        results[i] = result
        if on_done is not None:
            on_done(i, result)

    if not tasks:
        return results
    if executor == "local":
        for i, task in enumerate(tasks):
            done(i, _call(task))
    elif executor == "ray":
        _run_ray(tasks, str(ray_address), done)
    else:
        if folder is None:
            raise QuantaInputError(f"--executor {executor} needs a folder for submitit's files.")
        _run_submitit(executor, tasks, Path(folder), slurm_array_parallelism, done)
    return results


def _run_ray(tasks: Sequence[Task], address: str, done: Callable[[int, Any], None]) -> None:
    host, _ = _split_address(address)
    if ipaddress.ip_address(socket.gethostbyname(host)).is_loopback:
        # Ray's cluster mode (on by default on Linux) rewrites a loopback address to this
        # machine's network IP, where a cluster started with --node-ip-address=127.0.0.1 is not
        # listening, and ray.init then retries for minutes. RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
        # (Ray's documented switch) keeps 127.0.0.1; Ray reads it once, when first imported.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray

    ray.init(address=address, log_to_driver=False, configure_logging=False)
    try:
        _check_feasible(tasks, ray.nodes(), address)
        remote = ray.remote(_call)
        pending = {
            remote.options(num_cpus=t.cpus, num_gpus=t.gpus).remote(t): i
            for i, t in enumerate(tasks)
        }
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            i = pending.pop(ready[0])
            done(i, ray.get(ready[0]))  # re-raises the task's error here
    finally:
        ray.shutdown()


def _check_feasible(tasks: Sequence[Task], nodes: list[dict[str, Any]], address: str) -> None:
    """Refuse a task no live node can hold: Ray would queue it forever, silently."""
    sizes = [n.get("Resources", {}) for n in nodes if n.get("Alive")]
    for t in tasks:
        if not any(s.get("CPU", 0) >= t.cpus and s.get("GPU", 0) >= t.gpus for s in sizes):
            biggest = max(((s.get("CPU", 0), s.get("GPU", 0)) for s in sizes), default=(0.0, 0.0))
            raise QuantaInputError(
                f"No node of the Ray cluster at {address!r} has {t.cpus} CPU(s) and {t.gpus} "
                f"GPU(s) for one task (the largest: {biggest[0]:g} CPUs, {biggest[1]:g} GPUs); "
                "lower --threads or add such a node."
            )


def _run_submitit(
    executor: str,
    tasks: Sequence[Task],
    folder: Path,
    parallelism: int | None,
    done: Callable[[int, Any], None],
) -> None:
    import submitit

    sub = submitit.AutoExecutor(
        folder=str(folder), cluster="slurm" if executor == "slurm" else "local"
    )
    sub.update_parameters(**submitit_parameters(tasks, parallelism))
    # One array for every task: one sbatch call and one queue entry, however many tasks.
    jobs = sub.map_array(_call, list(tasks))
    for i, job in enumerate(jobs):
        done(i, job.result())


def submitit_parameters(tasks: Sequence[Task], parallelism: int | None) -> dict[str, Any]:
    """submitit parameters of the array holding ``tasks``: the largest request of any task
    (an array's jobs share one shape), and ``slurm_array_parallelism`` when given.

    >>> submitit_parameters([Task(print, cpus=2), Task(print, cpus=4, gpus=1)], 3)
    {'timeout_min': 1440, 'cpus_per_task': 4, 'gpus_per_node': 1, 'slurm_array_parallelism': 3}
    """
    params: dict[str, Any] = {
        "timeout_min": _SUBMITIT_TIMEOUT_MIN,
        "cpus_per_task": max(t.cpus for t in tasks),
        "gpus_per_node": max(t.gpus for t in tasks),
    }
    if parallelism is not None:
        params["slurm_array_parallelism"] = parallelism
    return params
