"""The ``quanta`` command line: parse → call → write. No logic lives here.

Errors in user input become one line on stderr and exit code 2 (set ``QUANTA_DEBUG=1`` for the
traceback). One module per command group: ``parity``, ``lm``, ``qdg``, ``theory``, ``job``
(``reproduce``, ``report``); ``_common`` holds what they share.

This package also gives the Python API its :func:`reproduce`: the pipeline run with this CLI's
commands, in-process. The pipeline never imports the CLI; the CLI hands it the runner.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from quanta.cli._common import in_process_runner, install_signal_handlers
from quanta.cli.job import job_app
from quanta.cli.lm import lm_app
from quanta.cli.parity import parity_app
from quanta.cli.qdg import qdg_app
from quanta.cli.theory import theory_app

__all__ = ["app", "main", "reproduce"]

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode=None,
    help="quanta: the science of neural scaling (the Quantization Model).",
)
app.add_typer(parity_app, name="parity")
app.add_typer(lm_app, name="lm")
app.add_typer(qdg_app, name="qdg")
app.add_typer(theory_app)
app.add_typer(job_app)


def main() -> None:
    """Console-script entry point (``quanta = "quanta.cli:main"``)."""
    install_signal_handlers()
    app(prog_name="quanta")


def reproduce(
    out: str | Path,
    preset: str = "cpu",
    *,
    only: str | None = None,
    corpus: str | None = None,
    extra: dict[str, list[str]] | None = None,
    on_stage: Callable[[int, int, Any, str], None] | None = None,
    report: bool = True,
    wait: bool = False,
) -> dict[str, dict[str, Any]]:
    """Run every stage of ``preset`` into ``out`` and write ``out/report.html``, as
    ``quanta reproduce`` does: :func:`quanta.pipeline.reproduce` with this CLI's commands run
    in-process. The parameters are those of :func:`quanta.pipeline.reproduce`; ``out`` is
    locked meanwhile (:func:`quanta.lock.run_lock`: another writer refused, or waited for
    with ``wait=True``).

    Returns
    -------
    dict
        The state of every stage recorded in ``out`` (see :func:`quanta.pipeline.read_stages`).

    Examples
    --------
    >>> import quanta
    >>> state = quanta.reproduce("runs/api/all", preset="tiny")  # doctest: +SKIP
    >>> state["theory"]["status"]  # doctest: +SKIP
    'done'
    """
    from quanta.lock import run_lock
    from quanta.pipeline import reproduce as run_stages

    with run_lock(out, wait=wait):
        return run_stages(
            out,
            preset,
            run_command=in_process_runner(typer.main.get_command(app)),
            only=only,
            corpus=corpus,
            extra=extra,
            on_stage=on_stage,
            report=report,
        )
