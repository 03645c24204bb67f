"""The report's HTML toolkit: the only place in :mod:`quanta.report` where markup is built.

Sections hand it text and values; it returns :class:`Html`, markup that is safe to join. The
escaping rule, in one place:

* **prose** — a plain ``str`` part of :func:`text` or :func:`para`, written in a section's
  source — is escaped for element content (``&``, ``<``, ``>``); quotes stay as written;
* **values** read from the run directory (model names, messages, configs, table cells, captions)
  go through :func:`esc`, which also escapes quotes, as does every helper that takes a value
  (:func:`bold`, :func:`code`, :func:`table` cells, ...);
* an :class:`Html` part is already markup and is joined as it is.

The formatters :func:`num` and :func:`ci` turn numbers into the page's text (missing or
non-finite → "—").
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from quanta._html import escape, img, show_text

__all__ = [
    "Config",
    "Html",
    "Section",
    "bold",
    "ci",
    "code",
    "contents",
    "esc",
    "figure",
    "fit_table",
    "frame_table",
    "heading",
    "italic",
    "join",
    "lines",
    "link",
    "meta_line",
    "missing",
    "num",
    "page",
    "para",
    "provenance",
    "stage_failed",
    "stage_not_run",
    "status",
    "table",
    "text",
    "token_in_context",
    "unreadable",
]


class Html(str):
    """A fragment of markup: joined as it is by every helper (anything else is escaped)."""

    __slots__ = ()


@dataclass(frozen=True)
class Section:
    """One section of the page: its heading (``level`` 2 or 3, ``anchor`` for the contents)
    and its blocks in order (:class:`Html`; a plain string would be shown escaped). ``nav``
    is its label in the contents (None: not listed); a level-3 section is listed in
    parentheses after the level-2 section before it."""

    title: str
    blocks: Sequence[str] = field(default_factory=list)
    anchor: str | None = None
    level: int = 2
    nav: str | None = None

    def render(self) -> Html:
        return join(heading(self.level, self.title, self.anchor), *self.blocks)


@dataclass(frozen=True)
class Config:
    """The config of one output directory, from its ``manifest.json``."""

    directory: str
    kind: str
    updated: str
    config: Any


# ------------------------------------------------------------------------------- text and values


def esc(value: object) -> Html:
    """A value as element text (quotes escaped too); :class:`Html` is kept as it is."""
    return value if isinstance(value, Html) else Html(escape(str(value)))


def join(*blocks: object) -> Html:
    """Blocks one after the other (:class:`Html` kept, anything else escaped)."""
    return Html("".join(map(esc, blocks)))


def text(*parts: object) -> Html:
    """Prose and values joined: plain strings escaped for element content, :class:`Html` kept.

    >>> text("the paper's a < b; ", esc("it's"), bold(2))
    "the paper's a &lt; b; it&#x27;s<b>2</b>"
    """
    return Html("".join(p if isinstance(p, Html) else escape(str(p), quote=False) for p in parts))


def num(x: Any, digits: int = 3) -> str:
    """``x`` with ``digits`` decimals; "—" when it is missing or not finite."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "—"
    return f"{x:.{digits}f}"


def ci(lo: Any, hi: Any) -> str:
    """A 95% interval as ``[lo, hi]`` (3 decimals); "—" when either end is missing."""
    if lo is None or hi is None or any(isinstance(v, float) and v != v for v in (lo, hi)):
        return "—"
    return f"[{lo:.3f}, {hi:.3f}]"


# ---------------------------------------------------------------------------------- inline markup


def bold(value: object) -> Html:
    return Html(f"<b>{esc(value)}</b>")


def italic(value: object) -> Html:
    return Html(f"<i>{esc(value)}</i>")


def code(value: object, *, keep_spaces: bool = False) -> Html:
    """``<code>``; ``keep_spaces`` keeps runs of spaces and newlines (a cluster description)."""
    style = " style='white-space:pre'" if keep_spaces else ""
    return Html(f"<code{style}>{esc(value)}</code>")


def link(href: str, label: object) -> Html:
    return Html(f"<a href='{esc(href)}'>{esc(label)}</a>")


def bullets(items: Iterable[object], *, ordered: bool = False) -> Html:
    """A list (numbered when ``ordered``); items are values (escaped) or :class:`Html`.

    >>> print(bullets(["a<b", bold("c")]))
    <ul><li>a&lt;b</li><li><b>c</b></li></ul>
    """
    tag = "ol" if ordered else "ul"
    return Html(f"<{tag}>{''.join(f'<li>{esc(i)}</li>' for i in items)}</{tag}>")


def lines(parts: Iterable[object]) -> Html:
    """Values one per line (``<br>`` between)."""
    return Html("<br>".join(esc(p) for p in parts))


def status(word: str, kind: str) -> Html:
    """A stage status word coloured by ``kind`` (``ok``, ``bad`` or ``skip``)."""
    return Html(f'<span class="{esc(kind)}">{esc(word)}</span>')


def token_in_context(context: str, token: str) -> Html:
    """A token's context with the predicted token highlighted; newlines and tabs visible."""
    return Html(f"<pre class='ctx'>{show_text(context)}<mark>{show_text(token)}</mark></pre>")


# ---------------------------------------------------------------------------------------- blocks


def heading(level: int, title: object, anchor: str | None = None) -> Html:
    ident = f" id='{esc(anchor)}'" if anchor else ""
    return Html(f"<h{level}{ident}>{text(title)}</h{level}>")


def para(*parts: object, cls: str | None = None) -> Html:
    """A paragraph of :func:`text` parts (``cls``: its class, e.g. ``meta``)."""
    attr = f' class="{esc(cls)}"' if cls else ""
    return Html(f"<p{attr}>{text(*parts)}</p>")


def meta_line(*parts: object) -> Html:
    """A grey line under a table (the stage-time total)."""
    return Html(f"<p class='meta'>{text(*parts)}</p>")


def table(
    header: Sequence[object], rows: Iterable[Sequence[object]], numeric: Iterable[int] = ()
) -> Html:
    """A table: cells are values (escaped) or :class:`Html`; ``numeric`` columns right-aligned.

    >>> print(table(["x", "n"], [["<a>", "1.5"]], {1}).replace("</tr>", "</tr>\\n"))
    <table><tr><th>x</th><th>n</th></tr>
    <tr><td>&lt;a&gt;</td><td class="num">1.5</td></tr>
    </table>
    """
    right = set(numeric)
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="num">{esc(c)}</td>' if i in right else f"<td>{esc(c)}</td>"
            for i, c in enumerate(r)
        )
        + "</tr>"
        for r in rows
    )
    return Html(f"<table><tr>{head}</tr>{body}</table>")


def frame_table(frame: pd.DataFrame, columns: dict[str, str]) -> Html:
    """``frame[columns]`` as a table (``columns``: column → header); floats to 3 decimals,
    right-aligned."""
    numeric = {i for i, c in enumerate(columns) if pd.api.types.is_float_dtype(frame[c])}
    rows = [
        [num(float(v)) if i in numeric else str(v) for i, v in enumerate(r)]
        for r in frame[list(columns)].itertuples(index=False)
    ]
    return table(list(columns.values()), rows, numeric)


def fit_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> Html:
    """A table of fits (exponents or slopes) with their CIs; empty when there are none."""
    return table(header, rows, {2, 3, 4, 5}) if rows else Html("")


def figure(path: Path, rel: str, caption: str) -> Html:
    """The PNG at ``path`` embedded (a data URI) with its caption; a box naming ``rel`` (its
    path in the run directory) when the file is absent."""
    if not path.is_file():
        return Html(f'<div class="missing">Missing figure: {code(rel)}</div>')
    return Html(f"<figure>{img(path, caption)}<figcaption>{esc(caption)}</figcaption></figure>")


def unreadable(rel: str) -> Html:
    """The box for a stage that finished but whose file ``rel`` cannot be read."""
    return Html(f'<div class="missing">Missing: {code(rel)} is absent or unreadable.</div>')


def stage_not_run(name: str, command: str) -> Html:
    """One line of a missing box: stage ``name`` never ran; ``command`` runs it."""
    return Html(f"stage {bold(name)} was not run (run {code(command)})")


def stage_failed(name: str, state: str, message: str, log: str | None) -> Html:
    """One line of a missing box: stage ``name`` ended ``state`` with ``message``."""
    where = f" (traceback: {code(log)})" if log else ""
    return Html(f"stage {bold(name)} {esc(state)}: {esc(message)}{where}")


def missing(problems: Sequence[str]) -> Html:
    """The box that stands for a section's data when its stages have not finished (one line
    per problem: :func:`stage_not_run`, :func:`stage_failed`)."""
    return Html(f'<div class="missing">Missing: {lines(problems)}</div>')


def provenance(commands: Sequence[str], configs: Sequence[Config]) -> Html:
    """ "Produced by": the commands, then each config folded; empty when there is neither."""
    parts = [f"{code(c)}<br>" for c in commands]
    for c in configs:
        cfg = json.dumps(c.config, indent=1, default=str)
        parts.append(
            f"<details><summary>config of {code(c.directory)} ({esc(c.kind)}, {esc(c.updated)})"
            f"</summary><pre class='cfg'>{esc(cfg)}</pre></details>"
        )
    return Html('<div class="meta">Produced by: ' + "".join(parts) + "</div>" if parts else "")


# ------------------------------------------------------------------------------------------ page


def contents(sections: Sequence[Section]) -> Html:
    """The numbered contents from the sections' ``nav`` labels (level 3 in parentheses)."""
    groups: list[tuple[Html, list[Html]]] = []
    for s in sections:
        if s.nav is None or s.anchor is None:
            continue
        entry = link(f"#{s.anchor}", s.nav)
        if s.level > 2 and groups:
            groups[-1][1].append(entry)
        else:
            groups.append((entry, []))
    items = "".join(
        f"<li>{entry}" + (f" ({', '.join(subs)})" if subs else "") + "</li>"
        for entry, subs in groups
    )
    return Html(f"<nav><b>Contents</b><ol>{items}</ol></nav>")


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 0 auto; max-width: 72em; padding: 1em 2em;
  color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; margin-bottom: .2em; } h2 { border-bottom: 2px solid #ddd;
  padding-bottom: .2em; margin-top: 2em; } h3 { margin-bottom: .3em; }
nav ol { columns: 2; } .meta { color: #555; }
figure { display: inline-block; margin: .5em 1em .5em 0; vertical-align: top; }
figure img { max-width: 100%; border: 1px solid #eee; } figcaption { font-size: .85em; color: #555;
  max-width: 40em; }
table { border-collapse: collapse; margin: .6em 0; font-size: .92em; }
td, th { padding: .2em .7em; border-bottom: 1px solid #e4e4e4; text-align: left; }
th { background: #f4f4f4; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.missing { background: #fff3f3; border-left: 4px solid #d33; padding: .5em .8em; margin: .6em 0; }
.ok { color: #176d2a; } .bad { color: #b3261e; } .skip { color: #8a6d00; }
pre, code { font-family: ui-monospace, monospace; font-size: .85em; }
pre.cfg { background: #f6f6f6; padding: .5em; max-height: 20em; overflow: auto; }
pre.ctx { white-space: pre-wrap; word-break: break-all; margin: 0; max-width: 50em; }
mark { background: #ffd54f; outline: 1px solid #e0a800; } .nl { color: #aaa; }
details summary { cursor: pointer; color: #335; }
"""

# Flags any figure that fails to load; data-figures="loaded/total" is read by the browser test.
_CHECK_FIGURES = """
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  var bad = imgs.filter(function (i) { return !(i.complete && i.naturalWidth > 0); });
  bad.forEach(function (i) {
    i.insertAdjacentHTML("afterend", '<p class="missing">this figure failed to load</p>');
  });
  document.body.setAttribute("data-figures", (imgs.length - bad.length) + "/" + imgs.length);
});
"""


def page(title: str, blocks: Sequence[str]) -> Html:
    """The whole document: head (title, style), ``blocks``, the figure check."""
    return Html(
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{_STYLE}</style>"
        f"</head><body>{join(*blocks)}<script>{_CHECK_FIGURES}</script></body></html>"
    )
