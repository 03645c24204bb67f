"""Frozen dataclass configs: presets, TOML files and ``--key value`` overrides, config hashes.

A config class is a frozen dataclass whose fields carry ``metadata={"help": ...}`` (and
``"runtime": True`` for knobs that cannot change results, such as thread counts; they are left
out of the hash so a run can be resumed with other runtime settings). Values are resolved in
this order: class defaults < preset < TOML file < command-line overrides. Unknown keys are
refused with the closest known key as a suggestion.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tomllib
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from quanta._validation import QuantaInputError, closest

__all__ = [
    "build_config",
    "config_fields",
    "config_hash",
    "config_to_dict",
    "load_toml",
    "normalize",
    "parse_overrides",
]

C = TypeVar("C")


def config_fields(cls: type) -> dict[str, tuple[Any, dataclasses.Field[Any]]]:
    """``{name: (resolved type, field)}`` for a dataclass, in declaration order."""
    hints = typing.get_type_hints(cls)
    return {f.name: (hints[f.name], f) for f in dataclasses.fields(cls)}


def _unknown_key(key: str, known: Iterable[str], where: str) -> QuantaInputError:
    hint = closest(key, known)
    suggestion = f" (did you mean {hint!r}?)" if hint else ""
    return QuantaInputError(f"Unknown config key {key!r}{suggestion} in {where}.")


def _coerce(tp: Any, raw: Any, name: str, owner: str) -> Any:
    """Turn a TOML value or command-line string into a value of type ``tp``."""
    origin = typing.get_origin(tp)
    from_text = isinstance(raw, str)
    try:
        if tp is bool:
            if isinstance(raw, bool):
                return raw
            if from_text and raw.lower() in {"true", "1", "yes", "on"}:
                return True
            if from_text and raw.lower() in {"false", "0", "no", "off"}:
                return False
            raise ValueError
        if tp is int:
            return int(raw) if from_text else raw
        if tp is float:
            return float(raw) if from_text else raw
        if tp is str:
            return str(raw)
        if origin is tuple:
            (item,) = {a for a in typing.get_args(tp) if a is not Ellipsis}
            items = [s for s in raw.split(",") if s.strip()] if from_text else list(raw)
            return tuple(
                _coerce(item, s.strip() if isinstance(s, str) else s, name, owner) for s in items
            )
        if origin in (typing.Union, types.UnionType):
            if from_text and raw.lower() in {"none", "null", ""}:
                return None
            (inner,) = [a for a in typing.get_args(tp) if a is not type(None)]
            return _coerce(inner, raw, name, owner)
    except (ValueError, TypeError):
        pass
    else:
        return raw
    kind = {bool: "a bool (true/false)", int: "an int", float: "a float", str: "a string"}
    if origin is tuple:
        items = [a for a in typing.get_args(tp) if a is not Ellipsis]
        want = "a comma-separated list of " + kind.get(items[0], "values").split(" ", 1)[1] + "s"
    else:
        want = kind.get(tp, str(tp))
    raise ValueError(f"The {name!r} parameter of {owner} must be {want}. Got {raw!r} instead.")


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML config file into a flat dict; one clear error if unreadable or invalid."""
    p = Path(path)
    try:
        text = p.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise QuantaInputError(f"Cannot read config file '{p}': {reason}.") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise QuantaInputError(f"Config file '{p}' is not valid TOML: {exc}.") from None


def parse_overrides(args: list[str]) -> dict[str, str]:
    """``['--width', '128', '--lr=1e-3']`` → ``{'width': '128', 'lr': '1e-3'}`` (dashes → _)."""
    out: dict[str, str] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--") or arg == "--":
            raise QuantaInputError(
                f"Unexpected argument {arg!r}: config overrides look like '--key value' "
                "or '--key=value'."
            )
        key, eq, value = arg[2:].partition("=")
        if not eq:
            if i + 1 >= len(args) or args[i + 1].startswith("--"):
                raise QuantaInputError(f"Option '--{key}' needs a value.")
            value = args[i + 1]
            i += 1
        out[key.replace("-", "_")] = value
        i += 1
    return out


def build_config(
    cls: type[C],
    *,
    layers: Iterable[tuple[str, Mapping[str, Any]]] = (),
) -> C:
    """Construct ``cls`` from defaults overlaid by ``layers`` of ``(origin, values)``.

    ``origin`` names where the values came from ("preset 'cpu'", "config.toml", "the command
    line") for error messages. Construction runs the class's own validation.

    Examples
    --------
    >>> from dataclasses import dataclass
    >>> @dataclass(frozen=True)
    ... class Cfg:
    ...     width: int = 8
    >>> build_config(Cfg, layers=[("cli", {"width": "16"})])
    Cfg(width=16)
    >>> build_config(Cfg, layers=[("cli", {"widht": "16"})])
    Traceback (most recent call last):
    ...
    quanta._validation.QuantaInputError: Unknown config key 'widht' (did you mean 'width'?) in cli.
    """
    fields = config_fields(cls)
    values: dict[str, Any] = {}
    for origin, layer in layers:
        for key, raw in layer.items():
            if key not in fields:
                raise _unknown_key(key, fields, origin)
            values[key] = _coerce(fields[key][0], raw, key, cls.__name__)
    return cls(**values)


def normalize(cls: type, values: Mapping[str, Any], origin: str) -> dict[str, Any]:
    """Check keys and coerce values of ``cls``'s fields (no construction, no range checks)."""
    fields = config_fields(cls)
    out = {}
    for key, raw in values.items():
        if key not in fields:
            raise _unknown_key(key, fields, origin)
        out[key] = _coerce(fields[key][0], raw, key, cls.__name__)
    return out


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON-ready dict of a config (tuples become lists).

    A field whose metadata has ``"omit_default": True`` is left out while it holds its
    default: a key added after runs were made keeps their hashes (and manifests) as they were,
    and the default is what rebuilding the config from the dict gives back.
    """
    skip = {
        f.name
        for f in dataclasses.fields(cfg)
        if f.metadata.get("omit_default") and getattr(cfg, f.name) == f.default
    }
    return {
        k: list(v) if isinstance(v, tuple) else v
        for k, v in dataclasses.asdict(cfg).items()
        if k not in skip
    }


def config_hash(config: Any) -> str:
    """The identity of a config: 16 hex digits of SHA-256 over its canonical JSON.

    Run directories are named and resumed by this value, so it must never drift: every run
    kind (parity runs, sweeps, the LM suite, LM losses, QDG) hashes through this one function.

    Parameters
    ----------
    config : dataclass instance or mapping
        A dataclass config (its fields marked ``metadata={"runtime": True}`` are left out, so a
        run can be resumed with other thread counts or devices) or a JSON-ready mapping, hashed
        as given.

    Returns
    -------
    str
        16 lowercase hex digits.

    Notes
    -----
    Canonical JSON: keys sorted at every depth, separators ``","`` and ``":"``, ASCII escapes,
    tuples as lists, and any value JSON cannot hold (a ``Path``, say) as its ``str``.

    Examples
    --------
    >>> config_hash({"b": 1, "a": [1, 2]})
    '94a786c3662bc7be'
    >>> config_hash({"a": (1, 2), "b": 1})
    '94a786c3662bc7be'
    """
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        runtime = {f.name for f in dataclasses.fields(config) if f.metadata.get("runtime")}
        data = {k: v for k, v in config_to_dict(config).items() if k not in runtime}
    elif isinstance(config, Mapping):
        data = dict(config)
    else:
        raise TypeError(
            "The 'config' parameter of config_hash must be a dataclass instance or a mapping. "
            f"Got {type(config).__name__} instead."
        )
    # default=str: the dict-keyed runs (LM suite, losses, QDG) and sweeps always hashed with it;
    # a dataclass config is all JSON values, so it never fires there and old hashes still hold.
    blob = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
