"""Issue 21, part 6: control and bidi characters never reach a page raw; decoding errors name
the file and line, or are replaced on request."""

import json

import pandas as pd
import pytest
import zstandard

from quanta._html import escape, show_text, visible
from quanta._validation import QuantaInputError
from quanta.lm.corpus import load_documents

# One of each class: C0 (NUL, ESC, CR), DEL, C1 (NEL, CSI), bidi embeddings / overrides,
# isolates, marks (LRM, RLM, ALM).
UNSAFE = "\x00\x1b\r\x7f\x85\x9b\u202a\u202e\u2066\u2069\u200e\u200f\u061c"
CODES = [
    r"\x00",
    r"\x1b",
    r"\x0d",
    r"\x7f",
    r"\x85",
    r"\x9b",
    r"\u202a",
    r"\u202e",
    r"\u2066",
    r"\u2069",
    r"\u200e",
    r"\u200f",
    r"\u061c",
]


def test_every_unsafe_class_becomes_a_visible_styled_escape():
    out = escape("a" + UNSAFE + "<b>\t\né")
    assert not any(ch in out for ch in UNSAFE)
    for code in CODES:
        assert f'<span class="nl esc">{code}</span>' in out
    assert out.startswith("a<span") and out.endswith("&lt;b&gt;\t\né")  # tab, newline, é kept
    shown = show_text("x\x1by\tz\n")
    assert '<span class="nl esc">\\x1b</span>' in shown and "↵" in shown and "→" in shown
    assert visible("a\u202eb") == "a\\u202eb"  # attributes: the escape, no markup


def test_cluster_browser_shows_control_and_bidi_characters_as_escapes(tmp_path):
    from quanta.qdg.browser import write_browser

    n = 6
    pd.DataFrame(
        {
            "doc_id": range(n),
            "pos": [1] * n,
            "loss": [0.01] * n,
            "context": [f"ctx{i} \x1b[31mred\u202eevil\x7f" for i in range(n)],
            "token": ["\u2066tok\x85"] * n,
        }
    ).to_parquet(tmp_path / "samples.parquet")
    pd.DataFrame({"K2": [0, 0, 0, 1, 1, 1]}).to_parquet(tmp_path / "labels.parquet")
    pd.DataFrame(
        {"K": [2, 2], "cluster": [0, 1], "description": ["'\u202egnp.' 100%", "\x1b[2J"]}
    ).to_parquet(tmp_path / "clusters.parquet")
    (tmp_path / "zipf.json").write_text(json.dumps({"zipf": {"2": {}}, "model": "m\u202eX"}))
    page = write_browser(tmp_path).read_text()
    assert not any(ch in page for ch in UNSAFE)
    for code in (r"\x1b", r"\u202e", r"\x7f", r"\u2066", r"\x85"):
        assert f'<span class="nl esc">{code}</span>' in page


def test_invalid_utf8_in_jsonl_names_file_and_line_or_is_replaced(tmp_path):
    f = tmp_path / "c.jsonl"
    f.write_bytes(b'{"text": "fine"}\n\n{"text": "ab\xffcd"}\n')
    with pytest.raises(QuantaInputError) as err:
        load_documents(f)
    assert str(err.value).startswith(f"{f}:3: invalid UTF-8 at byte 13 of the line (0xff)")
    assert "--decode-errors replace" in str(err.value)
    docs, _ = load_documents(f, decode_errors="replace")
    assert [d.text for d in docs] == ["fine", "ab\ufffdcd"]
    z = tmp_path / "c.jsonl.zst"  # the same through the zstd stream
    z.write_bytes(zstandard.ZstdCompressor().compress(f.read_bytes()))
    with pytest.raises(QuantaInputError, match=r"c\.jsonl\.zst:3: invalid UTF-8 at byte 13"):
        load_documents(z)


def test_invalid_utf8_in_a_text_file_names_its_line_and_byte(tmp_path):
    f = tmp_path / "c.txt"
    f.write_bytes(b"one\ntwo \xc3(\nthree\n")
    with pytest.raises(QuantaInputError, match=r"c\.txt:2: invalid UTF-8 at byte 5 .*\(0xc3\)"):
        load_documents(f)
    (doc,), _ = load_documents(f, decode_errors="replace")
    assert doc.text == "one\ntwo \ufffd(\nthree\n"


def test_a_lone_surrogate_is_named_not_a_tokenizer_type_error(tmp_path):
    f = tmp_path / "s.jsonl"
    f.write_text('{"text": "ok \\ud83d\\ude00"}\n{"text": "x\\ud800y"}\n')  # a pair, then one
    with pytest.raises(QuantaInputError, match=r"s\.jsonl:2: lone surrogate U\+D800 at char"):
        load_documents(f)
    docs, _ = load_documents(f, decode_errors="replace")
    assert [d.text for d in docs] == ["ok \U0001f600", "x\ufffdy"]
    with pytest.raises(ValueError, match="decode_errors"):
        load_documents(f, decode_errors="ignore")


def test_the_report_toolkit_escapes_through_the_same_function():
    from quanta.report.toolkit import esc, table, text

    for html_out in (esc("a\x1b\u202eb"), text("a\x1b\u202eb"), table(["h"], [["a\x1b\u202eb"]])):
        assert "\x1b" not in html_out and "\u202e" not in html_out
        assert '<span class="nl esc">\\x1b</span><span class="nl esc">\\u202e</span>' in html_out
    assert text("it's") == "it's" and esc("it's") == "it&#x27;s"  # quotes as before
