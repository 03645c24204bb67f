"""Run directories: manifest, tidy Parquet tables, atomic writes, resumable checkpoints.

A run directory holds::

    manifest.json      resolved config, config hash, seed, package versions, git revision,
                       status ("running" | "complete"), wall time
    curves.parquet     the tidy results table (written once, atomically, when complete)
    checkpoint.pt      resumable state while running (deleted when complete)
    model.pt           final weights
    figures/           PNG figures

Every file is written to a temporary name in the same directory and renamed into place, so a
crash or a full disk never leaves a half-written file under a real name.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import IO, Any, TypeVar

import pandas as pd

from quanta._validation import QuantaInputError
from quanta.integrity import HASH, OUTPUTS, Damage, check_files, file_digest, record_files
from quanta.lock import LOCK_FILE, Where, directory_of, pid_alive, run_lock

__all__ = [
    "RunDir",
    "atomic_write",
    "check_outputs",
    "cleanup_temporary",
    "environment",
    "git_revision",
    "portable_path",
    "read_outputs",
    "read_result",
    "record_outputs",
    "resolve_paths",
    "writes_outputs",
]

F = TypeVar("F", bound=Callable[..., Any])

MANIFEST = "manifest.json"
TMP_SUFFIX = ".tmp"
_TMP_PID = re.compile(r"^\..+\.(\d+)-[^.]+\.tmp$")
# mkstemp creates 0600 files; results should get the usual permissions (0666 minus umask).
_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path``; on success rename it onto ``path``.

    On any exception the temporary file is removed and ``path`` is untouched; an ``OSError``
    that names no file (a failed write: ENOSPC, EIO) is raised again naming ``path``.

    >>> import tempfile
    >>> target = Path(tempfile.mkdtemp()) / "x.bin"
    >>> with atomic_write(target) as fh:
    ...     _ = fh.write(b"done")
    >>> target.read_bytes(), sorted(p.name for p in target.parent.iterdir())
    (b'done', ['x.bin'])
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Named per process (".NAME.PID-RANDOM.tmp"): cleanup_temporary removes only the files of
    # processes that are gone, never those another live writer is still writing.
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.name}.{os.getpid()}-", suffix=TMP_SUFFIX, dir=path.parent
    )
    try:
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException as exc:
        # Cleanup must not replace the error that brought us here.
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.filename is None and exc.errno is not None:
            # "[Errno 28] No space left on device" alone does not say what was not written.
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
        raise


def cleanup_temporary(directory: str | Path) -> list[Path]:
    """Remove the temporary files (anywhere under ``directory``) that :func:`atomic_write`
    calls of processes no longer running on this machine left behind; return them.

    A file of a live process (another writer, a worker) is kept, and so is a temporary file
    not named by :func:`atomic_write` (it has no PID to check).
    """
    removed = []
    for tmp in Path(directory).rglob(f".*{TMP_SUFFIX}"):
        m = _TMP_PID.match(tmp.name)
        if m is None or int(m.group(1)) == os.getpid() or pid_alive(int(m.group(1))):
            continue
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
            removed.append(tmp)
    return removed


def write_json(path: str | Path, obj: Any) -> None:
    with atomic_write(path, "w") as fh:
        json.dump(obj, fh, indent=2, sort_keys=True, default=str)
        fh.write("\n")


def write_parquet(path: str | Path, df: pd.DataFrame) -> None:
    with atomic_write(path, "wb") as fh:
        df.to_parquet(fh, index=False)


def save_torch(path: str | Path, obj: Any) -> None:
    import torch

    with atomic_write(path, "wb") as fh:
        torch.save(obj, fh)


def git_revision() -> str | None:
    """The git revision of the quanta source tree (``+dirty`` if modified), or None."""
    here = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(here), "status", "--porcelain", "--", "."],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return rev + ("+dirty" if dirty else "")


def environment() -> dict[str, Any]:
    """Versions of Python, the platform and the packages results depend on."""
    versions: dict[str, str | None] = {}
    for pkg in ("quanta", "torch", "numpy", "scipy", "pandas", "pyarrow"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": versions,
        "git_revision": git_revision(),
    }


@dataclass
class RunDir:
    """A run directory bound to one config (by hash).

    Parameters
    ----------
    path : path-like
    kind : str
        What produced the run, e.g. ``"parity.train"``; a directory of another kind is refused.
    config : dict
        The resolved config (JSON-ready).
    config_hash : str
    runtime_keys : frozenset of str
        Config keys that do not change results (left out of the hash and of diffs).
    files : tuple of str
        Glob patterns (relative) of the files the run writes: their sizes and content hashes
        are recorded in the manifest when it is written complete, and checked when the run is
        reused (:mod:`quanta.integrity`).
    aliases : frozenset of str
        Other hashes of the same config: those it had before its paths were stored relative
        to the run (:func:`portable_path`), so that runs made then still resume.
    """

    path: Path
    kind: str
    config: dict[str, Any]
    config_hash: str
    runtime_keys: frozenset[str] = frozenset()
    files: tuple[str, ...] = ()
    aliases: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        self.path = Path(self.path)

    def file(self, name: str) -> Path:
        return self.path / name

    @property
    def manifest_path(self) -> Path:
        return self.path / MANIFEST

    def read_manifest(self) -> dict[str, Any] | None:
        if not self.manifest_path.exists():
            return None
        try:
            data: dict[str, Any] = json.loads(self.manifest_path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise QuantaInputError(
                f"Cannot read '{self.manifest_path}': {exc}. Choose another --out directory."
            ) from None
        return data

    def open(self) -> str:
        """Claim the directory: ``"new"``, ``"resume"`` or ``"complete"``.

        Raises
        ------
        QuantaInputError
            If the directory holds something else: files but no manifest, a run of another
            kind, or a run of a different config. Nothing in it is touched then.
        """
        if self.path.exists() and not self.path.is_dir():
            raise QuantaInputError(f"Output path '{self.path}' exists and is not a directory.")
        manifest = self.read_manifest()
        if manifest is None:
            if self.path.exists() and any(p.name != LOCK_FILE for p in self.path.iterdir()):
                raise QuantaInputError(
                    f"Output directory '{self.path}' is not empty and holds no quanta run; "
                    "choose a new or empty directory."
                )
            self.path.mkdir(parents=True, exist_ok=True)
            self.write_manifest(status="running", wall_seconds=0.0, extra={})
            return "new"
        if manifest.get("kind") != self.kind:
            raise QuantaInputError(
                f"Output directory '{self.path}' holds a {manifest.get('kind')!r} run, not "
                f"{self.kind!r}; choose another directory."
            )
        if manifest.get("config_hash") not in {self.config_hash, *self.aliases}:
            diff = _config_diff(manifest.get("config", {}), self.config, self.runtime_keys)
            raise QuantaInputError(
                f"Output directory '{self.path}' holds a run with a different config "
                f"({diff}); choose another directory or repeat the original settings."
            )
        if manifest.get("status") != "complete":
            return "resume"
        return "resume" if self._repair(manifest) else "complete"

    def _repair(self, manifest: dict[str, Any]) -> bool:
        """Remove the damaged files of a complete run (saying so, one line each) and mark it
        running again, so that its writer recomputes them; whether any was damaged."""
        damaged = check_files(self.path, manifest)
        for d in damaged:
            print(f"{d.line()}; recomputing it.", file=sys.stderr)
            d.path.unlink(missing_ok=True)
        if damaged:
            self.write_manifest(status="running", wall_seconds=0.0, extra={})
        return bool(damaged)

    def write_manifest(self, *, status: str, wall_seconds: float, extra: dict[str, Any]) -> None:
        """Write the manifest; a complete one records the size and content hash of every file
        matching :attr:`files`."""
        old = self.read_manifest() or {}
        manifest = {
            "kind": self.kind,
            "config": self.config,
            "config_hash": self.config_hash,
            "seed": self.config.get("seed"),
            "status": status,
            "created": old.get("created", _now()),
            "updated": _now(),
            "wall_seconds": round(wall_seconds, 3),
            "environment": environment(),
            **extra,
        }
        if status == "complete":
            manifest["files"] = record_files(self.path, self.files)
        write_json(self.manifest_path, manifest)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def _config_diff(old: dict[str, Any], new: dict[str, Any], skip: frozenset[str]) -> str:
    keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k) and k not in skip)
    shown = ", ".join(f"{k}: {old.get(k)!r} there vs {new.get(k)!r} now" for k in keys[:3])
    more = f" and {len(keys) - 3} more" if len(keys) > 3 else ""
    return (shown + more) or "config hash differs"


def portable_path(value: str | Path, run_dir: str | Path) -> str:
    """How a run directory's config records the local path ``value`` (an input of the run).

    A path inside the run's tree (the outermost directory above ``run_dir`` holding a quanta
    manifest, e.g. a reproduction, else ``run_dir``'s parent) is stored relative to
    ``run_dir``, starting ``./`` or ``../``, so the tree can be copied or moved as a whole and
    still hashes to the same config; another local path is stored absolute. A value that is
    not an existing path (a hub id, ``stdlib:test``) is returned unchanged.
    :func:`resolve_paths` turns the stored form back into a path.

    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp())
    >>> (root / "suite").mkdir()
    >>> portable_path(root / "suite", root / "losses"), portable_path("pythia-v0", root)
    ('../suite', 'pythia-v0')
    """
    p = Path(value).expanduser()
    if not p.exists():
        return str(value)
    p, run = p.resolve(), Path(run_dir).resolve()
    if not p.is_relative_to(_tree_root(run)):
        return str(p)
    rel = Path(os.path.relpath(p, run)).as_posix()
    return rel if rel.startswith("..") else f"./{rel}"


def _tree_root(run: Path) -> Path:
    """The outermost ancestor of ``run`` holding a manifest, else ``run``'s parent."""
    root = run.parent
    for parent in run.parents:
        if (parent / MANIFEST).is_file():
            root = parent
    return root


def resolve_paths(config: Any, run_dir: str | Path) -> Any:
    """``config`` (a stored config, any nesting) with every path :func:`portable_path` stored
    relative (``./…``, ``../…``; also items of a comma-separated list) made a path from here:
    ``run_dir`` joined with it."""
    if isinstance(config, dict):
        return {k: resolve_paths(v, run_dir) for k, v in config.items()}
    if isinstance(config, list):
        return [resolve_paths(v, run_dir) for v in config]
    if isinstance(config, str) and (config.startswith(("./", "../")) or ",." in config):
        items = config.split(",")
        return ",".join(
            os.path.normpath(Path(run_dir) / v) if v.startswith(("./", "../")) else v for v in items
        )
    return config


def read_result(path: str | Path, kinds: tuple[str, ...], producers: str) -> dict[str, Any]:
    """The manifest of a complete result directory of one of ``kinds``, or one clear error.

    ``producers`` names the commands that make such a directory, for the message.
    """
    path = Path(path)
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise QuantaInputError(
            f"'{path}' is not a quanta result directory (no manifest.json); pass the --out "
            f"directory of {producers}."
        )
    try:
        manifest: dict[str, Any] = json.loads(manifest_path.read_text())
    except (OSError, ValueError) as exc:
        raise QuantaInputError(f"Cannot read '{manifest_path}': {exc}.") from None
    kind = manifest.get("kind")
    if kind not in kinds:
        wanted = " or ".join(repr(k) for k in kinds)
        raise QuantaInputError(f"'{path}' holds a {kind!r} result, not {wanted}.")
    if manifest.get("status") != "complete":
        raise QuantaInputError(
            f"'{path}' is not complete (status {manifest.get('status')!r}); run the same "
            "command again to finish it first."
        )
    manifest["config"] = resolve_paths(manifest.get("config", {}), path)
    damaged = check_files(path, manifest)
    if damaged:
        more = f" (and {len(damaged) - 1} more damaged files)" if len(damaged) > 1 else ""
        raise QuantaInputError(
            f"{damaged[0].line()}{more}; run {producers} into '{path}' again to recompute it."
        )
    return manifest


def with_checkpoints(run: RunDir, name: str = "checkpoint.pt") -> Callable[[Any], None]:
    """A callback that saves a checkpoint object atomically into the run directory."""

    def save(state: Any) -> None:
        save_torch(run.file(name), state)

    return save


def record_outputs(directory: str | Path, paths: Iterable[str | Path]) -> dict[str, Any]:
    """Record the size and content hash of the finished files ``paths`` (under ``directory``)
    in ``directory/outputs.json`` (:data:`quanta.integrity.OUTPUTS`), beside what it already
    records; return the record. For the outputs of commands that write no run manifest
    (analyses, figures, reports); call it holding the directory's lock, right after writing.

    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> _ = (d / "a.json").write_text("{}")
    >>> record_outputs(d, [d / "a.json"])["files"]["a.json"]["size"]
    2
    """
    root = Path(directory)
    old = _read_outputs(root)
    files = dict(old.get("files") or {}) if isinstance(old, dict) else {}
    for path in map(Path, paths):
        rel = Path(os.path.relpath(path.absolute(), root.absolute())).as_posix()
        if rel.startswith("../"):
            raise ValueError(f"'{path}' is not under '{root}': record it in its own directory.")
        files[rel] = {"size": path.stat().st_size, HASH: file_digest(path)}
    record = {"kind": "outputs", "updated": _now(), "files": dict(sorted(files.items()))}
    write_json(root / OUTPUTS, record)
    return record


def _read_outputs(root: Path) -> Any:
    try:
        return json.loads((root / OUTPUTS).read_text())
    except (OSError, ValueError):  # none yet, or unreadable: this write starts a new record
        return {}


def check_outputs(directory: str | Path) -> list[Damage]:
    """The damaged files :func:`record_outputs` recorded in ``directory`` (none if it records
    nothing); an unreadable record is itself damaged."""
    root = Path(directory)
    if not (root / OUTPUTS).is_file():
        return []
    record = _read_outputs(root)
    if not isinstance(record, dict) or not record:
        return [Damage(root / OUTPUTS, "unreadable", root)]
    return check_files(root, record)


def read_outputs(directory: str | Path, producers: str) -> None:
    """Refuse, in one line, the outputs directory ``directory`` as an input if a recorded file
    in it is damaged; ``producers`` names the command that writes it, for the message."""
    damaged = check_outputs(directory)
    if damaged:
        more = f" (and {len(damaged) - 1} more damaged files)" if len(damaged) > 1 else ""
        raise QuantaInputError(f"{damaged[0].line()}{more}; run {producers} again to recompute it.")


def writes_outputs(where: Where) -> Callable[[F], F]:
    """Decorate a function that writes finished files into the directory ``where`` names (see
    :func:`quanta.lock.locked`) and returns their paths (a list, or one path): each call holds
    that directory's lock and records what it returned in the directory's ``outputs.json``
    (:func:`record_outputs`). The one way every writer outside a run manifest records its
    files."""

    def decorate(fn: F) -> F:
        directory = directory_of(fn, where)

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            target = directory(*args, **kwargs)
            with run_lock(target):
                written = fn(*args, **kwargs)
                paths = [written] if isinstance(written, str | Path) else list(written)
                record_outputs(target, paths)
            return written

        return wrapper  # type: ignore[return-value]

    return decorate
