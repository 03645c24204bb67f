"""Shared pieces of the command line: consoles, the user-error wrapper, the one progress bar,
config-key help and the in-process command runner that ``quanta reproduce`` hands to the
pipeline."""

from __future__ import annotations

import contextlib
import contextvars
import functools
import os
import signal
import typing
from collections.abc import Callable, Iterator, Mapping
from typing import Any, ClassVar, Protocol, TypeVar

import typer
from rich.console import Console
from typer.core import TyperCommand

from quanta._validation import QuantaInputError

__all__ = [
    "EXTRA_ARGS",
    "RAISE_ERRORS",
    "WAIT_OPT",
    "ConfigKeysCommand",
    "RootCommand",
    "Terminated",
    "config_keys_command",
    "console",
    "fail",
    "in_process_runner",
    "install_signal_handlers",
    "interrupt_exit",
    "one_line_warnings",
    "out",
    "progress_bar",
    "user_errors",
    "writes",
]

F = TypeVar("F", bound=Callable[..., Any])

console = Console(stderr=True)
# Paths and commands are printed whole (soft wrap): a path broken over two lines cannot be
# copied. Tables still lay out to the terminal width.
out = Console(soft_wrap=True)
EXTRA_ARGS = {"allow_extra_args": True, "ignore_unknown_options": True}
# Set by the in-process runner (``quanta reproduce``): user errors then propagate as
# exceptions, so the pipeline can name the stage that failed instead of the process exiting.
RAISE_ERRORS: contextvars.ContextVar[bool] = contextvars.ContextVar("RAISE_ERRORS", default=False)


def fail(message: str) -> typer.Exit:
    """Print one error line and return the exit-2 exception to raise."""
    if RAISE_ERRORS.get():
        raise QuantaInputError(message)
    from rich.markup import escape

    # Escaped: a message quoting "[[model]]" or "[1, inf)" is text, not console markup.
    console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(2)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Python code runs next: it takes Ctrl-C's path (every write is
    atomic, so what was finished stays and a rerun resumes) but exits 143, not 130."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Terminated("terminated (SIGTERM)")


def install_signal_handlers() -> None:
    """Make SIGTERM (a scheduler's or ``kill``'s stop) the same path as Ctrl-C. Installed once
    by the ``quanta`` entry point; commands that stop at a clean step boundary (``parity
    train``) install their own handler for both signals while they train."""
    signal.signal(signal.SIGTERM, _on_sigterm)


def interrupt_exit(exc: BaseException, saved: str) -> typer.Exit:
    """Print the one line of an interrupted command (what ``saved`` holds, how to resume) and
    return its exit: 143 after SIGTERM, 130 after Ctrl-C (128 + the signal, as shells do).

    Inside ``quanta reproduce`` (:data:`RAISE_ERRORS`) nothing is printed — the job says the
    one line — and the status alone carries which signal it was (Typer turns any
    ``KeyboardInterrupt`` into status 130, so a ``Terminated`` would arrive as Ctrl-C)."""
    term = isinstance(exc, Terminated)
    if RAISE_ERRORS.get():
        return typer.Exit(128 + (signal.SIGTERM if term else signal.SIGINT))
    console.print(
        f"{'terminated (SIGTERM)' if term else 'interrupted'}; {saved}. Rerun the same command "
        "to resume.",
        highlight=False,
        soft_wrap=True,
    )
    return typer.Exit(128 + (signal.SIGTERM if term else signal.SIGINT))


def user_errors(fn: F) -> F:
    """Turn user-input errors raised inside ``fn`` into one line and exit code 2, and an
    interruption (Ctrl-C, SIGTERM) into one line saying what is kept and exit 130 / 143."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (QuantaInputError, ValueError, TypeError, OSError) as exc:
            if os.environ.get("QUANTA_DEBUG") or RAISE_ERRORS.get():
                raise
            raise fail(str(exc)) from None
        except KeyboardInterrupt as exc:
            where = kwargs.get("out_dir")
            saved = f"what was finished is kept in '{where}'" if where else "nothing was saved"
            raise interrupt_exit(exc, saved) from None

    return wrapper  # type: ignore[return-value]


@contextlib.contextmanager
def one_line_warnings(*categories: type[Warning]) -> Iterator[None]:
    """Show every warning of ``categories`` (each time) as one ``warning:`` line through the
    console (above a progress bar), not Python's two-line form with the source line."""
    import warnings

    from rich.markup import escape

    def show(message: Any, *_: Any, **__: Any) -> None:
        console.print(
            f"[bold yellow]warning:[/] {escape(str(message))}", highlight=False, soft_wrap=True
        )

    with warnings.catch_warnings():
        for category in categories:
            warnings.simplefilter("always", category)
        warnings.showwarning = show
        yield


#: ``--wait`` of the commands that write a run directory (see :func:`writes`).
WAIT_OPT = typer.Option(
    False,
    "--wait",
    help="If another quanta process is writing the directory, wait for it instead of refusing.",
)


def writes(where: str | Callable[[dict[str, Any]], Any]) -> Callable[[F], F]:
    """Hold the write lock of the command's output directory while it runs
    (:func:`quanta.lock.locked`, the decorator of the Python API's writers): ``where`` names the
    parameter that holds it, or computes it from the parameters. A ``wait`` parameter
    (:data:`WAIT_OPT`) waits for another writer instead of refusing. Place it under
    :func:`user_errors` so a refusal is one line."""
    from quanta.lock import locked

    def on_wait(message: str) -> None:
        console.print(message, highlight=False, soft_wrap=True)

    return locked(where, wait="wait", on_wait=on_wait)


def int_list(text: str, option: str) -> tuple[int, ...]:
    """``"10,50,100"`` → ``(10, 50, 100)``; one error line naming ``option`` otherwise."""
    try:
        return tuple(int(k) for k in text.split(",") if k.strip())
    except ValueError:
        raise QuantaInputError(f"{option} takes integers like 10,50,100; got {text!r}.") from None


def float_list(text: str, option: str) -> tuple[float, ...]:
    """``"1e-3,0.01"`` → ``(0.001, 0.01)``; one error line naming ``option`` otherwise."""
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise QuantaInputError(f"{option} takes comma-separated numbers; got {text!r}.") from None


def progress_bar(*fields: str) -> Any:
    """The progress display of every command, on stderr: description, bar, M/N, ``fields``
    (extra text columns such as ``"loss {task.fields[loss]:.4f}"``), elapsed and remaining
    time. Tasks added with ``total=None`` show a pulsing bar until a total is known."""
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


class RootCommand(Protocol):
    """The click command of a Typer app (``typer.main.get_command(app)``, or
    ``ctx.find_root().command`` inside a command)."""

    def main(self, *args: Any, **kwargs: Any) -> Any: ...


def _usage_errors() -> tuple[type[BaseException], ...]:
    """The exception classes of refused command lines. Typer ≥ 0.29 vendors click
    (``typer._click``; its errors derive from ``typer.TyperException``), so ``click``'s own
    classes match only under older Typer, where click is installed with it."""
    errors: list[type[BaseException]] = []
    if hasattr(typer, "TyperException"):
        errors.append(typer.TyperException)
    try:
        import click
    except ImportError:
        pass
    else:
        errors.append(click.ClickException)
    return tuple(errors)


def in_process_runner(command: RootCommand) -> Callable[[list[str]], None]:
    """A runner of ``quanta`` argument lists through ``command`` (the root of the CLI) in this
    process, for :func:`quanta.pipeline.reproduce`.

    User errors propagate as :class:`QuantaInputError` (so the pipeline records the stage as
    failed with that one line), also those Typer itself refuses (a bad option value); Ctrl-C
    inside a command becomes ``KeyboardInterrupt``; any other non-zero exit status a
    ``RuntimeError``.
    """
    usage_errors = _usage_errors()

    def run(argv: list[str]) -> None:
        token = RAISE_ERRORS.set(True)
        try:
            try:
                code = command.main(args=argv, prog_name="quanta", standalone_mode=False)
            except usage_errors as exc:
                raise QuantaInputError(exc.format_message()) from None  # type: ignore[attr-defined]
            except typer.Abort:  # end of input inside a command: stop the whole job
                raise KeyboardInterrupt("interrupted") from None
        finally:
            RAISE_ERRORS.reset(token)
        if code == 130:  # Ctrl-C inside a command (Typer turns it into exit status 130)
            raise KeyboardInterrupt("interrupted")
        if code == 143:  # SIGTERM inside a command (see interrupt_exit)
            raise Terminated("terminated (SIGTERM)")
        if isinstance(code, int) and code != 0:
            raise RuntimeError(f"'quanta {argv[0]}' exited with status {code}")

    return run


def _type_name(tp: Any) -> str:
    """How a config field's type is written on the command line: int, float, int,... ."""
    origin = typing.get_origin(tp)
    args = [a for a in typing.get_args(tp) if a is not Ellipsis]
    if origin is tuple:
        return f"{_type_name(args[0])},..."
    if args and type(None) in args:
        return "|".join(_type_name(a) for a in args if a is not type(None)) + "|none"
    return getattr(tp, "__name__", str(tp))


def _default_text(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return str(value).lower() if isinstance(value, bool) else str(value)


class ConfigKeysCommand(TyperCommand):
    """A command that takes the keys of a config dataclass as ``--key value`` extra arguments
    and lists each key in ``--help`` as its own option line: ``--key <type>``, its default,
    ``[runtime]`` for keys outside the config hash, and the field's ``help`` metadata.

    Subclasses set ``config_source`` (see :func:`config_keys_command`); it is called only when
    help is shown, so listing commands never imports the config's module.
    """

    config_source: ClassVar[Callable[[], tuple[type, Mapping[str, Mapping[str, Any]]]]]

    def format_options(self, ctx: Any, formatter: Any) -> None:  # Typer's click, maybe vendored
        from quanta.config import config_fields

        super().format_options(ctx, formatter)
        cls, presets = type(self).config_source()
        rows = []
        for name, (tp, f) in config_fields(cls).items():
            tag = " [runtime]" if f.metadata.get("runtime") else ""
            rows.append(
                (
                    f"--{name.replace('_', '-')} <{_type_name(tp)}>",
                    f"[default: {_default_text(f.default)}]{tag} {f.metadata.get('help', '')}",
                )
            )
        with formatter.section("Config keys (--key value, or key = value in the --config file)"):
            # The widest key sets the column, so every key's type and default share its line.
            formatter.write_dl(rows, col_max=max(len(term) for term, _ in rows))
        changed = {
            p: "sets " + ", ".join(k.replace("_", "-") for k in values)
            if values
            else "the defaults"
            for p, values in presets.items()
        }
        formatter.write_paragraph()
        formatter.write_text(
            "Presets: "
            + "; ".join(f"{p} ({keys})" for p, keys in changed.items())
            + ". Precedence: defaults < --preset < --config file < command line."
        )


def config_keys_command(
    source: Callable[[], tuple[type, Mapping[str, Mapping[str, Any]]]],
) -> type[ConfigKeysCommand]:
    """A :class:`ConfigKeysCommand` class for ``source() -> (config class, presets)``, to pass
    as ``cls=`` to ``typer.Typer.command``."""
    return type("ConfigKeysCommand", (ConfigKeysCommand,), {"config_source": staticmethod(source)})
