"""Checkpoints and model files without pickle: safetensors for the arrays, JSON for the rest.

Unpickling a file can run any code its author put in it, so a run directory someone shares
would run their code on the reader's machine. A tree of Python values (dicts with ``str`` or
``int`` keys, lists, tuples, ``str``/``int``/``float``/``bool``/``None``, torch tensors, numpy
arrays and torch generator states) is written as one ``.safetensors`` file: every tensor and
array under a numbered key, and the tree itself as JSON in the header's metadata, with each
array replaced by ``{"__t__": key}``. Reading it parses JSON and raw little-endian buffers
only, so nothing in the file can run. Round trips are exact: floats through ``repr``, tensors
byte for byte, int dict keys and tuples tagged (an optimizer's state dict comes back as it was).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from quanta._validation import QuantaInputError

__all__ = ["load_tree", "refuse_pickle", "save_tree"]

_FORMAT = "quanta.tree/1"


def save_tree(path: str | Path, tree: Any) -> None:
    """Write ``tree`` to ``path`` atomically as safetensors + a JSON skeleton.

    >>> import tempfile
    >>> f = Path(tempfile.mkdtemp()) / "t.safetensors"
    >>> save_tree(f, {"w": torch.ones(2), 3: ("a", 1.5, None), "n": np.arange(2)})
    >>> load_tree(f)
    {'w': tensor([1., 1.]), 3: ('a', 1.5, None), 'n': array([0, 1])}
    """
    from safetensors.torch import save

    from quanta.store import atomic_write

    tensors: dict[str, torch.Tensor] = {}
    skeleton = _encode(tree, tensors)
    meta = {"format": _FORMAT, "tree": json.dumps(skeleton, allow_nan=True)}
    data = save(tensors, metadata=meta)
    with atomic_write(path, "wb") as fh:
        fh.write(data)


def load_tree(path: str | Path) -> Any:
    """The tree saved by :func:`save_tree` at ``path`` (tensors on the CPU).

    Raises
    ------
    QuantaInputError
        If the file is not such a file (damaged, truncated, or of another format), naming it.
    """
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118 (not a dict)
        if meta.get("format") != _FORMAT:
            raise ValueError(f"format {meta.get('format')!r}, not {_FORMAT!r}")
        return _decode(json.loads(meta["tree"]), tensors)
    except (OSError, ValueError, KeyError, TypeError, AttributeError, SafetensorError) as exc:
        raise QuantaInputError(f"Cannot read '{path}': {exc}.") from None


def refuse_pickle(path: Path, what: str, remedy: str) -> None:
    """Refuse an old pickle-format file at ``path`` (if there is one) without opening it."""
    if path.exists():
        raise QuantaInputError(
            f"'{path}' is {what} in the old pickle format, which quanta no longer opens "
            f"(unpickling a file can run code); {remedy}."
        )


def _encode(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, torch.Tensor):
        key = str(len(tensors))
        # safetensors refuses shared or strided storage: store a compact copy.
        tensors[key] = obj.detach().cpu().contiguous().clone()
        return {"__t__": key}
    if isinstance(obj, np.ndarray):
        return _encode_array(obj, tensors)
    if isinstance(obj, bool | int | float | str) or obj is None:
        return obj
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, tensors) for v in obj]}
    if isinstance(obj, list):
        return [_encode(v, tensors) for v in obj]
    if isinstance(obj, dict):
        items = []
        for k, v in obj.items():
            if not isinstance(k, str | int) or isinstance(k, bool):
                raise TypeError(f"save_tree: dict keys must be str or int, got {type(k).__name__}")
            items.append([k, _encode(v, tensors)])
        return {"__dict__": items}
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"save_tree cannot store a {type(obj).__name__}")


def _encode_array(arr: np.ndarray, tensors: dict[str, torch.Tensor]) -> Any:
    key = str(len(tensors))
    if arr.dtype == object or arr.dtype.kind == "U":
        if not all(isinstance(v, str) for v in arr.flat):
            raise TypeError("save_tree stores numpy object arrays of str only")
        fixed = arr.astype(str)  # '<U{width}': UCS-4 code points, stored as int32
        width = fixed.dtype.itemsize // 4
        codes = fixed.reshape(-1).view(np.int32).reshape(*arr.shape, width)
        tensors[key] = torch.from_numpy(np.ascontiguousarray(codes))
        return {"__str__": key, "width": width, "object": arr.dtype == object}
    tensors[key] = torch.from_numpy(np.ascontiguousarray(arr)).clone()
    return {"__np__": key}


def _decode(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, list):
        return [_decode(v, tensors) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if "__t__" in obj:
        return tensors[obj["__t__"]]
    if "__np__" in obj:
        return tensors[obj["__np__"]].numpy()
    if "__str__" in obj:
        codes = tensors[obj["__str__"]].numpy()
        width = int(obj["width"])
        flat = np.ascontiguousarray(codes).reshape(-1).view(f"<U{max(width, 1)}")
        strings = flat.reshape(codes.shape[:-1])
        return strings.astype(object) if obj["object"] else strings
    if "__tuple__" in obj:
        return tuple(_decode(v, tensors) for v in obj["__tuple__"])
    return {k: _decode(v, tensors) for k, v in obj["__dict__"]}
