"""One static, self-contained HTML report of a reproduction directory.

Organized like the paper: theory, toy emergence, toy scaling laws, exponents across α, language
models, QDG, published exponents (App. E) and a comparison with the paper's numbers. Every
number is read from the directory (analysis JSON and Parquet files written by the stages), each
section shows the commands and configs that produced it, and a section whose stage did not
finish says so instead of disappearing. The preset's stages, their order, status, timings and
commands come from ``stages.json`` (written by the pipeline; this package never imports it).
Figures are embedded as data URIs; the page needs no network. A few lines of inline JavaScript
flag any figure that fails to load.

The package: :mod:`.context` (the directory as the sections read it), :mod:`.toolkit` (the
only place markup is built), :mod:`.header`, and one module per section, each a function
``RunContext → Section``. :data:`SECTIONS` is the page in order; adding a section is one
module and one entry there (its ``nav`` label puts it in the contents).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from quanta.report import toolkit as tk
from quanta.report.alpha import alpha_data, alpha_sweep
from quanta.report.appendix_d import appendix_d
from quanta.report.capacity import capacity
from quanta.report.comparison import comparison
from quanta.report.context import RunContext
from quanta.report.domino import domino
from quanta.report.dynamics import dynamics
from quanta.report.emergence import emergence
from quanta.report.header import header
from quanta.report.hypothesis import hypothesis
from quanta.report.lm import language_models
from quanta.report.polygenic import polygenic
from quanta.report.prior import load_prior_exponents
from quanta.report.prior import prior as prior_section
from quanta.report.qdg import qdg
from quanta.report.scale import quanta_scale
from quanta.report.scaling import scaling
from quanta.report.theory import theory
from quanta.report.universality import universality
from quanta.store import writes_outputs

__all__ = ["SECTIONS", "load_prior_exponents", "render", "write_report"]

#: The page's sections in order: each a function from the run directory to its section.
SECTIONS: tuple[Callable[[RunContext], tk.Section], ...] = (
    theory,
    emergence,
    scaling,
    alpha_sweep,
    alpha_data,
    language_models,
    dynamics,
    qdg,
    appendix_d,
    quanta_scale,
    hypothesis,
    universality,
    polygenic,
    capacity,
    domino,
    prior_section,
    comparison,
)


def render(ctx: RunContext) -> str:
    """The whole page of ``ctx``'s directory, as one HTML string."""
    sections = [build(ctx) for build in SECTIONS]
    blocks = [header(ctx), tk.contents(sections), *(s.render() for s in sections)]
    return tk.page(f"quanta report ({ctx.preset})", blocks)


@writes_outputs("out")
def write_report(out: str | Path) -> Path:
    """Render ``out/report.html`` from a reproduction directory and return its path."""
    from quanta.store import atomic_write

    out = Path(out)
    page = render(RunContext(out))
    path = out / "report.html"
    with atomic_write(path, "w") as fh:
        fh.write(page)
    return path
