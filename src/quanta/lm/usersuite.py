"""User suite files: a researcher's own models (hub ids or saved directories, at any revision)
as one suite, read from TOML and accepted by ``--suite path.toml``::

    description = "my GPT-2 sizes"      # optional
    [[model]]
    source = "runs/gpt2-small"          # a hub id (org/name) or a path (relative to this file)
    revision = "step2000"               # optional: a hub branch, or a sub-directory of source
    name = "gpt2-small"                 # optional [default: the directory or repository name]
    n_params = 85_000_000               # optional: your non-embedding N [default: counted]
    seed = 1                            # optional
    label = "seed 1"                    # optional: a tag shown beside the model

Every entry is one column of ``quanta lm losses``; entries that share a ``name`` are one model
over its revisions (training dynamics). Everything a file can get wrong — a missing file, bad
TOML, an unknown key, a path or a revision directory that does not exist, a value of the wrong
type — is refused in one line naming the file and the entry, before anything is loaded.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from quanta._validation import QuantaInputError, closest

__all__ = ["MODEL_KEYS", "read_user_suite"]

#: The keys of a ``[[model]]`` table, and their types.
MODEL_KEYS: dict[str, type] = {
    "source": str,
    "revision": str,
    "name": str,
    "n_params": int,
    "seed": int,
    "label": str,
}
_TOP_KEYS = ("description", "model")


def read_user_suite(path: str | Path) -> list[dict[str, Any]]:
    """Every ``[[model]]`` of the TOML file ``path``, as the fields of a
    ``quanta.lm.suite.ModelRef`` (name, source — an absolute directory or a hub id —,
    revision, seed, tag, n_params).

    >>> import tempfile, pathlib
    >>> f = pathlib.Path(tempfile.mkdtemp()) / "s.toml"
    >>> _ = f.write_text('[[model]]\\nsource = "EleutherAI/pythia-70m"\\nrevision = "step1000"\\n')
    >>> read_user_suite(f)[0]["name"], read_user_suite(f)[0]["revision"]
    ('pythia-70m', 'step1000')
    """
    file = Path(path).expanduser()
    entries = _entries(file)
    return [_ref(file, i, entry) for i, entry in enumerate(entries, start=1)]


def _entries(file: Path) -> list[dict[str, Any]]:
    """The ``[[model]]`` tables of ``file``, its top-level keys checked."""
    if not file.is_file():
        raise QuantaInputError(f"Suite file '{file}' does not exist.")
    try:
        data = tomllib.loads(file.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise QuantaInputError(f"Suite file '{file}' is not valid TOML: {exc}.") from None
    for key in data:
        if key not in _TOP_KEYS:
            raise QuantaInputError(_unknown(key, _TOP_KEYS, f"suite file '{file}'"))
    models = data.get("model")
    if not isinstance(models, list) or not models:
        raise QuantaInputError(
            f"Suite file '{file}' has no models; add [[model]] tables with a source "
            '(source = "org/name" or a directory).'
        )
    return models


def _ref(file: Path, i: int, entry: dict[str, Any]) -> dict[str, Any]:
    """One entry's ``ModelRef`` fields: keys and types checked, a local source and its
    revision directory required on disk."""
    where = f"[[model]] {i} of '{file}'"
    for key, value in entry.items():
        if key not in MODEL_KEYS:
            raise QuantaInputError(_unknown(key, MODEL_KEYS, where))
        kind = MODEL_KEYS[key]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise QuantaInputError(
                f"'{key}' of {where} must be {'an int' if kind is int else 'a string'}; "
                f"got {value!r}."
            )
    if "source" not in entry:
        raise QuantaInputError(f"{where} has no source (a hub id org/name, or a directory).")
    if entry.get("n_params", 1) < 1:
        raise QuantaInputError(f"'n_params' of {where} must be ≥ 1; got {entry['n_params']}.")
    source, revision = _source(file, where, entry["source"], entry.get("revision"))
    return {
        "name": entry.get("name") or source.rstrip("/").split("/")[-1],
        "source": source,
        "revision": revision,
        "seed": entry.get("seed"),
        "tag": entry.get("label", ""),
        "n_params": entry.get("n_params"),
    }


def _source(file: Path, where: str, source: str, revision: str | None) -> tuple[str, str | None]:
    """The absolute directory or the hub id of ``source``; a local one must exist, with its
    ``revision`` sub-directory when one is named."""
    local = Path(source).expanduser()
    if not local.is_absolute():
        local = file.parent / local
    looks_local = source.startswith((".", "/", "~")) or source.count("/") != 1
    if not local.exists():
        if looks_local:
            raise QuantaInputError(f"Model '{source}' of {where} does not exist ('{local}').")
        return source, revision  # a hub id: the hub (or its cache) is asked before any write
    local = local.resolve()
    if revision is not None and not (local / revision).is_dir():
        saved = sorted(p.name for p in local.iterdir() if (p / "config.json").is_file())
        raise QuantaInputError(
            f"Model '{source}' of {where} has no revision {revision!r} (no directory "
            f"'{local / revision}'); it has {', '.join(saved) or 'no saved checkpoints'}."
        )
    return str(local), revision


def _unknown(key: str, allowed: Any, where: str) -> str:
    hint = closest(key, allowed)
    return (
        f"Unknown key {key!r} in {where}"
        + (f" (did you mean {hint!r}?)" if hint else "")
        + f"; keys are {', '.join(allowed)}."
    )
