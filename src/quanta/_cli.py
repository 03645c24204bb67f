"""Shared pieces of the command line: consoles and the user-error wrapper."""

from __future__ import annotations

import contextvars
import functools
import os
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console

from quanta._validation import QuantaInputError

__all__ = [
    "EXTRA_ARGS",
    "RAISE_ERRORS",
    "console",
    "fail",
    "out",
    "progress_bar",
    "user_errors",
]

F = TypeVar("F", bound=Callable[..., Any])

console = Console(stderr=True)
out = Console()
EXTRA_ARGS = {"allow_extra_args": True, "ignore_unknown_options": True}
# Set by callers that run commands in-process (``quanta reproduce``): user errors then propagate
# as exceptions, so the caller can name the stage that failed instead of exiting.
RAISE_ERRORS: contextvars.ContextVar[bool] = contextvars.ContextVar("RAISE_ERRORS", default=False)


def fail(message: str) -> typer.Exit:
    """Print one error line and return the exit-2 exception to raise."""
    if RAISE_ERRORS.get():
        raise QuantaInputError(message)
    console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(2)


def user_errors(fn: F) -> F:
    """Turn user-input errors raised inside ``fn`` into one line and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (QuantaInputError, ValueError, TypeError, OSError) as exc:
            if os.environ.get("QUANTA_DEBUG") or RAISE_ERRORS.get():
                raise
            raise fail(str(exc)) from None

    return wrapper  # type: ignore[return-value]


def progress_bar(*fields: str) -> Any:
    """A rich progress display on stderr: description, bar, M/N, ``fields`` (extra text
    columns such as ``"loss {task.fields[loss]:.4f}"``), elapsed and remaining time."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = [
        TextColumn("[bold]{task.description}[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        *(TextColumn(f) for f in fields),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    ]
    return Progress(*columns, console=console)
