"""Small HTML helpers shared by the static pages (cluster browser, report).

Every piece of text that goes into a page goes through :func:`escape` (or :func:`show_text`,
which builds on it): besides ``& < > " '``, it shows control characters and bidi controls as
visible escapes. Raw, an ESC or a DEL is invisible or garbles what follows, and a right-to-left
override (U+202E) reorders what a reader sees — corpus text is not the page's to rearrange.
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

__all__ = ["escape", "img", "show_text", "visible"]

#: C0 controls except tab and newline, DEL, C1 controls, and the bidi controls: embeddings and
#: overrides (U+202A–U+202E), isolates (U+2066–U+2069), marks (LRM, RLM, ALM).
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _code(ch: str) -> str:
    n = ord(ch)
    return f"\\x{n:02x}" if n < 0x100 else f"\\u{n:04x}"


def visible(text: str) -> str:
    r"""``text`` with each control or bidi character replaced by its escape, as plain text
    (for attributes and titles, where markup cannot go).

    >>> visible("a\x1bb\u202ec\td")
    'a\\x1bb\\u202ec\td'
    """
    return _UNSAFE.sub(lambda m: _code(m.group()), text)


def escape(text: str, quote: bool = True) -> str:
    r"""``text`` HTML-escaped (quotes too unless ``quote=False``), with control and bidi
    characters shown as styled escapes (``<span class="nl esc">\x1b</span>``), never raw.
    For element content; in an attribute use ``html.escape(visible(text))``.

    >>> escape("<b>\x1b[31m\u202e")
    '&lt;b&gt;<span class="nl esc">\\x1b</span>[31m<span class="nl esc">\\u202e</span>'
    """
    return _UNSAFE.sub(
        lambda m: f'<span class="nl esc">{_code(m.group())}</span>', html.escape(text, quote)
    )


def show_text(text: str) -> str:
    """:func:`escape`\\ d text with visible newlines (↵) and tabs (→)."""
    out = escape(text)
    return out.replace("\n", '<span class="nl">↵</span>\n').replace(
        "\t", '<span class="nl">→</span>\t'
    )


def img(path: Path, alt: str) -> str:
    """An ``<img>`` with the PNG at ``path`` embedded as a data URI (the page stays one file)."""
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f'<img alt="{html.escape(visible(alt))}" src="data:image/png;base64,{data}">'
