"""Argument checks with one message shape for the whole package.

Every check raises ``ValueError`` (bad value) or ``TypeError`` (bad type) with the message::

    The 'k' parameter of SparseParityTask must be an int in the range [1, 100]. Got 120 instead.

so a user always learns which parameter was wrong, what is allowed, and what was given. The CLI
turns these exceptions into one line on stderr and exit code 2.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Sequence
from numbers import Integral, Real
from typing import Any

__all__ = [
    "QuantaInputError",
    "available_devices",
    "bf16_supported",
    "check_choice",
    "check_device",
    "check_int",
    "check_int_sequence",
    "check_precision",
    "check_real",
    "closest",
    "param_error",
]


class QuantaInputError(ValueError):
    """Bad user input that is not about one parameter (files, directories, combinations)."""


def param_error(name: str, owner: str, allowed: str, got: Any) -> ValueError:
    """Build the standard error for parameter ``name`` of ``owner``."""
    return ValueError(f"The {name!r} parameter of {owner} must be {allowed}. Got {got!r} instead.")


def _range_text(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    lo = "-inf" if low is None else f"{low:g}"
    hi = "inf" if high is None else f"{high:g}"
    left = "(" if (low is None or low_open) else "["
    right = ")" if (high is None or high_open) else "]"
    return f"{left}{lo}, {hi}{right}"


def check_int(
    value: Any,
    name: str,
    owner: str,
    *,
    low: int | None = None,
    high: int | None = None,
) -> int:
    """Return ``value`` as ``int`` if it is an integer in ``[low, high]``, else raise.

    Examples
    --------
    >>> check_int(3, "k", "Task", low=1)
    3
    >>> check_int(0, "k", "Task", low=1)
    Traceback (most recent call last):
    ...
    ValueError: The 'k' parameter of Task must be an int in the range [1, inf). Got 0 instead.
    """
    allowed = f"an int in the range {_range_text(low, high, False, False)}"
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise param_error(name, owner, allowed, value)
    value = int(value)
    if (low is not None and value < low) or (high is not None and value > high):
        raise param_error(name, owner, allowed, value)
    return value


def check_real(
    value: Any,
    name: str,
    owner: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """Return ``value`` as a finite ``float`` in the given range, else raise."""
    allowed = f"a finite float in the range {_range_text(low, high, low_open, high_open)}"
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(float(value)):
        raise param_error(name, owner, allowed, value)
    v = float(value)
    if low is not None and (v < low or (low_open and v == low)):
        raise param_error(name, owner, allowed, value)
    if high is not None and (v > high or (high_open and v == high)):
        raise param_error(name, owner, allowed, value)
    return v


def check_int_sequence(
    value: Any,
    name: str,
    owner: str,
    *,
    low: int | None = None,
    high: int | None = None,
    unique: bool = False,
) -> tuple[int, ...]:
    """Return a non-empty tuple of ints, each in ``[low, high]``; duplicates refused if
    ``unique``."""
    if low is not None and high is not None:
        allowed = f"a non-empty list of ints in the range [{low}, {high}]"
    else:
        allowed = "a non-empty list of ints" + (f" >= {low}" if low is not None else "")
        allowed += f" <= {high}" if high is not None else ""
    if unique:
        allowed += " without repeats"
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise param_error(name, owner, allowed, value)
    items = list(value)
    if not items:
        raise param_error(name, owner, allowed, items)
    for v in items:
        bad_type = isinstance(v, bool) or not isinstance(v, Integral)
        if bad_type or (low is not None and v < low) or (high is not None and v > high):
            raise param_error(name, owner, allowed, items)
    if unique and len(set(items)) != len(items):
        raise param_error(name, owner, allowed, items)
    return tuple(int(v) for v in items)


def check_choice(value: Any, name: str, owner: str, choices: Sequence[str]) -> str:
    """Return ``value`` if it is one of ``choices``, else raise with the closest suggestion."""
    if value not in choices:
        allowed = "one of " + ", ".join(repr(c) for c in choices)
        hint = closest(str(value), choices)
        err = param_error(name, owner, allowed, value)
        if hint is not None:
            err = ValueError(f"{err.args[0][:-1]} (did you mean {hint!r}?).")
        raise err
    return str(value)


def closest(word: str, candidates: Iterable[str]) -> str | None:
    """The candidate closest to ``word`` (difflib ratio >= 0.6), or ``None``."""
    hits = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return hits[0] if hits else None


def available_devices() -> list[str]:
    """The torch devices this process can run on: ``"cpu"``, every visible ``"cuda:i"``, and
    ``"mps"`` where Apple's Metal backend is available.

    >>> available_devices()[0]
    'cpu'
    """
    import torch

    found = ["cpu"]
    if torch.cuda.is_available():
        found += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if torch.backends.mps.is_available():
        found.append("mps")
    return found


def check_device(device: str, owner: str) -> str:
    """Return ``device`` if this process can run on it; else raise one line that names it and
    what is available, before any work or write.

    Examples
    --------
    >>> check_device("cpu", "quanta parity train")
    'cpu'
    >>> check_device("gpu", "quanta x")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    quanta._validation.QuantaInputError: quanta x asks for device 'gpu', which is not a torch ...
    """
    import torch

    text = str(device)
    have = available_devices()
    listed = ", ".join(have)
    try:
        parsed = torch.device(text)
    except (RuntimeError, ValueError):
        raise QuantaInputError(
            f"{owner} asks for device {text!r}, which is not a torch device (cpu, cuda, "
            f"cuda:N, mps); available here: {listed}."
        ) from None
    names = {*have, *(d.partition(":")[0] for d in have)}
    if "mps" in have:
        names.add("mps:0")  # the only Metal device
    if parsed.type == "cpu" or text in names or str(parsed) in names:
        return text
    if parsed.type == "cuda" and not torch.cuda.is_available():
        reason = f"this torch build ({torch.__version__}) sees no CUDA GPU"
        advice = "pass --device cpu (slow at paper scale) or install a CUDA build of torch"
    elif parsed.type == "cuda":
        reason = f"only {torch.cuda.device_count()} CUDA device(s) are visible"
        advice = "pass one of those (CUDA_VISIBLE_DEVICES renumbers the visible ones from 0)"
    else:
        reason = "this machine does not offer it"
        advice = "pass one of those"
    raise QuantaInputError(
        f"{owner} asks for device {text!r}, but {reason} (available: {listed}); {advice}."
    )


def bf16_supported(device: str) -> bool:
    """Whether ``device`` runs bfloat16 matmuls natively: ``torch.cuda.is_bf16_supported()`` on
    CUDA; on the CPU, oneDNN's own test (AVX-512 with its BF16 or core extensions, or AMX), as
    without it torch emulates bf16 slowly, element by element."""
    import torch

    parsed = torch.device(device)
    if parsed.type == "cuda":
        with torch.cuda.device(parsed):
            return bool(torch.cuda.is_bf16_supported())
    if parsed.type != "cpu":
        return False
    try:  # a private op, the one torch's own bf16 CPU tests gate on; absent ⇒ say no
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def check_precision(precision: str, device: str, owner: str) -> str:
    """Return ``precision`` if ``device`` can run it; else raise one line, before any work or
    write. Call after :func:`check_device`.

    >>> check_precision("f32", "cpu", "quanta parity train")
    'f32'
    """
    if precision == "bf16" and not bf16_supported(device):
        raise QuantaInputError(
            f"{owner} asks for precision 'bf16', but device {device!r} has no native bfloat16 "
            "matmuls (torch would emulate them, slower than f32); pass --precision f32."
        )
    return precision
