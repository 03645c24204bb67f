"""Small HTML helpers shared by the static pages (cluster browser, report)."""

from __future__ import annotations

import base64
import html
from pathlib import Path

__all__ = ["escape", "img", "show_text"]

escape = html.escape


def show_text(text: str) -> str:
    """HTML-escaped text with visible newlines (↵) and tabs (→)."""
    out = html.escape(text)
    return out.replace("\n", '<span class="nl">↵</span>\n').replace(
        "\t", '<span class="nl">→</span>\t'
    )


def img(path: Path, alt: str) -> str:
    """An ``<img>`` with the PNG at ``path`` embedded as a data URI (the page stays one file)."""
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'
