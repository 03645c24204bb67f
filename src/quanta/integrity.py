"""Content hashes of a run directory's finished files: recorded in its manifest, checked on
reuse and by ``quanta verify``.

A complete run's ``manifest.json`` holds ``"files": {relative path: {"size": bytes,
"xxh3_128": hex}}`` for every file the run wrote (each writer names its files by glob
pattern). A file whose size or hash differs from the record, or that is missing, is
*damaged*: a run that would reuse it recomputes it instead (:meth:`quanta.store.RunDir.open`),
and a command that reads it as input refuses it in one line (:func:`quanta.store.read_result`).

Files a command writes outside such a run — the ``analysis/`` of ``parity analyze`` and ``lm
analyze``, ``theory/``, the outputs of ``qdg validate|parity|envelope|compare|scale|export|
report``, figures, ``report.html`` — are recorded the same way, at write time, in their
directory's ``outputs.json`` (:data:`OUTPUTS`, ``{"kind": "outputs", "files": {...}}``,
written by :func:`quanta.store.record_outputs`). :func:`verify_tree` checks both kinds of
record; ``quanta reproduce`` runs a stage again whose directories hold a damaged file.

The hash is xxHash's XXH3-128 (the ``xxhash`` package): not cryptographic — it detects
truncation, garbling and bit rot, not a forger — and fast enough to hash every file once at
completion and again on each reuse (``benchmarks/bench_hash.py`` compares it with
``hashlib.blake2b`` side by side).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import xxhash

__all__ = [
    "HASH",
    "OUTPUTS",
    "Damage",
    "check_files",
    "file_digest",
    "record_files",
    "records_under",
    "verify_tree",
]

HASH = "xxh3_128"
MANIFEST = "manifest.json"
#: The record of a directory's finished outputs outside any run's manifest.
OUTPUTS = "outputs.json"
_CHUNK = 1 << 20  # 1 MiB reads: streaming, memory O(1) in the file's size


@dataclass(frozen=True)
class Damage:
    """One damaged file: ``path`` (as found), ``what`` (e.g. "missing", "size 12 bytes,
    recorded 4,096"), ``directory`` (the run directory whose manifest recorded it)."""

    path: Path
    what: str
    directory: Path

    def line(self) -> str:
        return f"'{self.path}': {self.what}"


def file_digest(path: str | Path) -> str:
    """The XXH3-128 hex digest of the file at ``path``, read in 1 MiB blocks.

    >>> import tempfile
    >>> p = Path(tempfile.mkdtemp()) / "x"
    >>> _ = p.write_bytes(b"")
    >>> file_digest(p)
    '99aa06d3014798d86001c324468d497f'
    """
    h = xxhash.xxh3_128()
    with open(path, "rb") as fh:
        while block := fh.read(_CHUNK):
            h.update(block)
    return h.hexdigest()


def record_files(directory: str | Path, patterns: Iterable[str]) -> dict[str, dict[str, Any]]:
    """``{relative path: {"size", "xxh3_128"}}`` of the files under ``directory`` matching the
    glob ``patterns`` (relative, ``**`` allowed); hidden files (temporary, lock) are left out."""
    root = Path(directory)
    found: set[Path] = set()
    for pattern in patterns:
        found.update(p for p in root.glob(pattern) if p.is_file())
    record = {}
    for p in sorted(found):
        rel = p.relative_to(root)
        if any(part.startswith(".") for part in rel.parts) or rel.name in (MANIFEST, OUTPUTS):
            continue
        record[rel.as_posix()] = {"size": p.stat().st_size, HASH: file_digest(p)}
    return record


def check_files(directory: str | Path, manifest: dict[str, Any]) -> list[Damage]:
    """The damaged files of the run in ``directory`` (whose manifest is ``manifest``): missing,
    of another size, or of another content hash than recorded. Empty when the manifest
    records no files (a run written before hashes were kept, or not complete)."""
    root = Path(directory)
    damaged = []
    files = manifest.get("files")
    if not isinstance(files, dict):
        return []
    for rel, want in sorted(files.items()):
        path = root / rel
        if not path.is_file():
            damaged.append(Damage(path, "missing", root))
            continue
        size = path.stat().st_size
        if size != want.get("size"):
            damaged.append(
                Damage(path, f"size {size:,} bytes, recorded {want.get('size', 0):,}", root)
            )
        elif want.get(HASH) is not None and file_digest(path) != want[HASH]:
            damaged.append(Damage(path, f"content differs from the recorded {HASH} hash", root))
    return damaged


def records_under(root: str | Path) -> Iterator[Path]:
    """Every ``manifest.json`` and ``outputs.json`` under ``root`` (itself included), in path
    order."""
    root = Path(root)
    yield from sorted([*root.rglob(MANIFEST), *root.rglob(OUTPUTS)])


def verify_tree(root: str | Path) -> tuple[int, int, list[Damage]]:
    """Check every directory under ``root`` that records its files (a run's manifest, an
    :data:`OUTPUTS` record): ``(directories, files checked, damaged files)``.

    An unreadable record is itself reported as damaged."""
    checked = 0
    dirs: set[Path] = set()
    damaged: list[Damage] = []
    for record_path in records_under(root):
        dirs.add(record_path.parent)
        try:
            record = json.loads(record_path.read_text())
            if not isinstance(record, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as exc:
            damaged.append(Damage(record_path, f"unreadable ({exc})", record_path.parent))
            continue
        checked += len(record.get("files") or {})
        damaged += check_files(record_path.parent, record)
    return len(dirs), checked, damaged
