"""One writer per run directory: an advisory lock file, ``DIR/.quanta.lock``.

Every command that writes a run directory holds its lock while it writes (see
:func:`run_lock`). A second writer is refused at once, naming the holder's PID and command,
or waits for it (``wait=True``, the CLI's ``--wait``). The lock is an ``flock`` on the lock
file, so the kernel releases it when its process ends in any way (even SIGKILL): a lock left
by a killed process is simply taken by the next writer, whose PID and command then replace
the dead one's in the file. The holder removes the file when it is done.

Nested writers in one process (``quanta reproduce`` runs each stage's commands in-process)
do not deadlock: the lock is re-entrant per process and directory.

The Python API takes the lock too: every public function that writes a run directory is
decorated with :func:`locked` (the CLI's ``writes`` is the same decorator, with ``--wait``), so
a script calling ``quanta.run_parity`` is refused like a second ``quanta parity train``.

``flock`` works on local file systems; on NFS it depends on the mount (``local_lock``).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import inspect
import json
import os
import shlex
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from quanta._validation import QuantaInputError

__all__ = [
    "LOCK_FILE",
    "RunLocked",
    "directory_of",
    "holder",
    "locked",
    "pid_alive",
    "run_lock",
]

F = TypeVar("F", bound=Callable[..., Any])
#: Where a decorated function writes: the name of its parameter holding the directory, or a
#: function of its bound arguments (name → value, defaults applied) returning it.
Where = str | Callable[[dict[str, Any]], Any]

LOCK_FILE = ".quanta.lock"

# The locks this process holds: resolved directory -> [fd, depth]. Process state by nature
# (an flock belongs to an open file of this process), so it lives at module level.
_HELD: dict[str, list[int]] = {}


class RunLocked(QuantaInputError):
    """The run directory is being written by another process."""


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def holder(directory: str | Path) -> dict[str, Any] | None:
    """What the lock file of ``directory`` says about its holder (pid, command, host, since),
    or None when there is no lock file or it holds nothing readable. It does not say whether
    the lock is held now: a killed holder leaves its line behind."""
    try:
        data = json.loads((Path(directory) / LOCK_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _describe(info: dict[str, Any] | None) -> str:
    if not info:
        return "another process (it has not written its PID yet)"
    since = info.get("since", "?")
    host = info.get("host")
    where = f" on {host}" if host and host != socket.gethostname() else ""
    return f"PID {info.get('pid', '?')}{where}: {info.get('command', '?')} (since {since})"


def _open_locked(lock_path: Path, *, wait: bool, on_wait: Callable[[str], None] | None) -> int:
    """An fd of ``lock_path`` holding its exclusive flock; refused (or waited for) if held."""
    told = False
    while True:
        # The previous holder removes the directory it created if it stayed empty.
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
        except FileNotFoundError:  # removed between the two calls: again
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                os.close(fd)
                raise
            who = _describe(holder(lock_path.parent))
            if not wait:
                os.close(fd)
                raise RunLocked(
                    f"'{lock_path.parent}' is being written by {who}; wait for it to finish "
                    "or rerun with --wait."
                ) from None
            if on_wait is not None and not told:
                on_wait(f"waiting for {who} to finish with '{lock_path.parent}' …")
                told = True
            fcntl.flock(fd, fcntl.LOCK_EX)
        # The previous holder unlinks the file when done: a lock on an unlinked file guards
        # nothing (the next writer creates a new one), so take the file that is there now.
        try:
            same = os.stat(lock_path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)


def _record(fd: int) -> None:
    """Write this process's PID and command into the held lock file."""
    program, *args = sys.argv or [""]
    if Path(program).name in ("quanta", "__main__.py"):
        command = ["quanta", *args]
    else:  # the Python API, a script or python -c
        command = [Path(sys.executable).name, *([program] if program else []), *args]
    info = {
        "pid": os.getpid(),
        "command": shlex.join(command),
        "host": socket.gethostname(),
        "since": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)


@contextlib.contextmanager
def run_lock(
    directory: str | Path,
    *,
    wait: bool = False,
    on_wait: Callable[[str], None] | None = None,
) -> Iterator[Path]:
    """Hold the write lock of run directory ``directory`` (created if missing) for the block.

    Parameters
    ----------
    directory : path-like
    wait : bool
        Wait for the holder to finish instead of refusing.
    on_wait : callable, optional
        ``on_wait(message)``, called once before waiting (the CLI prints it).

    Raises
    ------
    RunLocked
        Another process holds the lock (and ``wait`` is false): one line naming its PID and
        command.

    Directories this call created are removed again on exit if nothing else was written in
    them (a refused input leaves nothing behind).

    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp()) / "run"
    >>> with run_lock(d):
    ...     holder(d)["pid"] == os.getpid()
    True
    >>> d.exists()
    False
    """
    path = Path(directory)
    if path.exists() and not path.is_dir():
        raise QuantaInputError(f"Output path '{path}' exists and is not a directory.")
    key = os.path.realpath(path)
    if key in _HELD:  # a nested writer of this process (a reproduce stage)
        _HELD[key][1] += 1
        try:
            yield path
        finally:
            _HELD[key][1] -= 1
        return
    created = _missing_ancestors(path)
    path.mkdir(parents=True, exist_ok=True)
    lock_path = path / LOCK_FILE
    try:
        fd = _open_locked(lock_path, wait=wait, on_wait=on_wait)
    except BaseException:
        _remove_empty(created)
        raise
    _HELD[key] = [fd, 1]
    try:
        _record(fd)
        yield path
    finally:
        del _HELD[key]
        with contextlib.suppress(OSError):  # unlink before unlocking: see _open_locked
            lock_path.unlink()
        os.close(fd)
        _remove_empty(created)


def _missing_ancestors(path: Path) -> list[Path]:
    """``path`` and those of its ancestors that do not exist yet, deepest first."""
    missing = []
    for p in (path, *path.absolute().parents):
        if p.exists():
            break
        missing.append(p)
    return missing


def _remove_empty(dirs: list[Path]) -> None:
    for d in dirs:
        try:
            d.rmdir()
        except OSError:  # not empty: something was written; keep it
            break


def directory_of(fn: Callable[..., Any], where: Where) -> Callable[..., Path]:
    """``directory(*args, **kwargs)``: the directory a call of ``fn`` writes (see
    :data:`Where`)."""
    signature = inspect.signature(fn)

    def directory(*args: Any, **kwargs: Any) -> Path:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        found = bound.arguments[where] if isinstance(where, str) else where(bound.arguments)
        return Path(found)

    return directory


def locked(
    where: Where,
    *,
    wait: str | None = None,
    on_wait: Callable[[str], None] | None = None,
) -> Callable[[F], F]:
    """Decorate a function that writes the directory ``where`` names: every call holds that
    directory's lock (:func:`run_lock`). ``wait`` names a boolean parameter that makes the call
    wait for another writer instead of refusing it.

    >>> import tempfile
    >>> @locked("out")
    ... def write(out):
    ...     return holder(out)["pid"] == os.getpid()
    >>> write(Path(tempfile.mkdtemp()) / "run")
    True
    """

    def decorate(fn: F) -> F:
        directory = directory_of(fn, where)
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            waits = False
            if wait is not None:
                bound = signature.bind(*args, **kwargs)
                waits = bool(bound.arguments.get(wait, False))
            with run_lock(directory(*args, **kwargs), wait=waits, on_wait=on_wait):
                return fn(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate
