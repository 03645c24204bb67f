"""Checkpoint integrity: a content fingerprint of a model's weights, and the checkpoints of a
suite whose weights are identical.

A hub revision can serve other weights than its name says: EleutherAI/pythia#205 found 86 of
pythia-2.8b's 154 branches serving final-era weights, so a "training dynamics" curve over them
is flat for the wrong reason. ``quanta lm losses`` therefore records every column's
:func:`weights_fingerprint` in ``models.parquet`` (``weights_fingerprint``) and names each
column whose weights equal an earlier one's (``duplicate_of``), with one
:class:`DuplicateCheckpointWarning` for the whole run.

The fingerprint is XXH3-128 (``xxhash``) over every tensor of the state dict in name order: its
name, dtype and shape, then its bytes. It identifies the weights, not the files: the same
weights saved as safetensors or a ``.bin``, sharded or not, have one fingerprint.
``benchmarks/bench_fingerprint.py`` measures its cost beside blake2b and SHA-256.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "DuplicateCheckpointWarning",
    "duplicate_checkpoints",
    "duplicate_message",
    "integrity_line",
    "weights_fingerprint",
]


class DuplicateCheckpointWarning(UserWarning):
    """Two or more columns of a suite hold identical weights (a mislabeled checkpoint)."""


def weights_fingerprint(model: Any) -> str:
    """``"xxh3_128:<hex>"`` of the weights of ``model`` (a ``torch.nn.Module``), on any device.

    >>> import torch
    >>> a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    >>> _ = b.load_state_dict(a.state_dict())
    >>> weights_fingerprint(a) == weights_fingerprint(b)
    True
    >>> with torch.no_grad():
    ...     _ = b.weight.add_(1e-7)
    >>> weights_fingerprint(a) == weights_fingerprint(b)
    False
    """
    import torch
    import xxhash

    digest = xxhash.xxh3_128()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
        # Bytes as stored, whatever the dtype (bfloat16 has no numpy type): a uint8 view.
        raw = t.reshape(-1).contiguous().cpu().view(torch.uint8)
        digest.update(raw.numpy().data)
    return "xxh3_128:" + digest.hexdigest()


def duplicate_checkpoints(fingerprints: Sequence[str], labels: Sequence[str]) -> list[str]:
    """For each column, the label of the first earlier column with the same fingerprint (""
    where there is none, or where the fingerprint is unknown, ""), in column order.

    >>> duplicate_checkpoints(["a", "b", "a", ""], ["m@step1", "m@step2", "m@step3", "m@step4"])
    ['', '', 'm@step1', '']
    """
    first: dict[str, str] = {}
    out = []
    for fingerprint, label in zip(fingerprints, labels, strict=True):
        if not fingerprint:
            out.append("")
            continue
        out.append(first.get(fingerprint, ""))
        first.setdefault(fingerprint, label)
    return out


def duplicate_message(labels: Sequence[str], duplicate_of: Sequence[str]) -> str | None:
    """One line naming every column that duplicates another (``None`` if there is none)."""
    pairs = [f"{lab} = {dup}" for lab, dup in zip(labels, duplicate_of, strict=True) if dup]
    if not pairs:
        return None
    return (
        f"{len(pairs)} checkpoint{'s hold' if len(pairs) > 1 else ' holds'} the same weights "
        f"as another (a mislabeled revision, like EleutherAI/pythia#205): {'; '.join(pairs)}. "
        "Their losses are those of the other checkpoint; see duplicate_of in models.parquet."
    )


def integrity_line(models: pd.DataFrame | None) -> str:
    """One line of text on the checkpoints of a losses directory's ``models.parquet`` (for the
    report): the duplicates, or that every column's weights differ ("" for a table without
    fingerprints: runs made before them).

    >>> import pandas as pd
    >>> t = pd.DataFrame({"label": ["m@step1", "m@step2"], "weights_fingerprint": ["a", "b"],
    ...                   "duplicate_of": ["", ""]})
    >>> integrity_line(t)
    'Checkpoint integrity: the weights of all 2 columns differ (weights_fingerprint).'
    """
    if models is None or "weights_fingerprint" not in models or "duplicate_of" not in models:
        return ""
    labels = [str(v) for v in models["label"]]
    duplicates = [str(v) if isinstance(v, str) else "" for v in models["duplicate_of"]]
    message = duplicate_message(labels, duplicates)
    if message is not None:
        return "Duplicate checkpoints: " + message
    return (
        f"Checkpoint integrity: the weights of all {len(labels)} columns differ "
        "(weights_fingerprint)."
    )
