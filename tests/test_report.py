"""The report package: its HTML toolkit (escaping, figures, provenance, contents), its context
(stage status boxes) and each section on a directory without its data. The whole page on a real
tiny run is tested in test_reproduce.py."""

from __future__ import annotations

import ast
import base64
import html
import json
import re
from pathlib import Path

import pytest

import quanta.report
from quanta._stages import PlannedStage, write_stages_file
from quanta._validation import QuantaInputError
from quanta.report import SECTIONS, render, write_report
from quanta.report import toolkit as tk
from quanta.report.context import RunContext

EVIL = "<script>alert('x')</script> & \"q\""
EVIL_ESCAPED = "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; &quot;q&quot;"

PLAN = [
    PlannedStage("theory", "toy", "quantization-model simulation"),
    PlannedStage("toy-params", "toy", "parameter and step scaling"),
    PlannedStage("lm-losses", "lm", "per-token losses"),
]


def _run_dir(tmp_path: Path, stages: dict | None = None, plan=PLAN) -> Path:
    """A reproduction directory with a manifest and a stage plan, and no stage output."""
    out = tmp_path / "run"
    out.mkdir()
    manifest = {"kind": "reproduce", "config": {"preset": "tiny"}, "environment": {}}
    (out / "manifest.json").write_text(json.dumps(manifest))
    write_stages_file(out, plan=list(plan), stages=stages or {})
    return out


# ------------------------------------------------------------------------------------ toolkit


def test_table_escapes_values_and_keeps_markup():
    page = tk.table(["h<1>", "n"], [[EVIL, "1.5"], [tk.bold("ok"), "2"]], {1})
    assert EVIL not in page and "<script>" not in page
    assert "<th>h&lt;1&gt;</th>" in page and f"<td>{EVIL_ESCAPED}</td>" in page
    assert "<td><b>ok</b></td>" in page  # Html cells are joined as they are
    assert page.count('<td class="num">') == 2 and page.count("<tr>") == 3


def test_prose_keeps_quotes_values_escape_them():
    assert tk.text("the paper's a < b & c") == "the paper's a &lt; b &amp; c"
    assert tk.esc("it's") == "it&#x27;s"
    assert tk.text("x ", tk.esc("'"), tk.Html("<i>y</i>")) == "x &#x27;<i>y</i>"
    assert tk.para(EVIL, cls="meta") == f'<p class="meta">{tk.text(EVIL)}</p>'
    assert tk.esc(tk.Html("<b>kept</b>")) == "<b>kept</b>"


def test_num_and_ci_mark_missing_values():
    assert (tk.num(0.12345), tk.num(2, 1), tk.num(None), tk.num(float("nan"))) == (
        "0.123",
        "2.0",
        "—",
        "—",
    )
    assert tk.ci(0.1, 0.25) == "[0.100, 0.250]" and tk.ci(None, 1.0) == "—"
    assert tk.ci(float("nan"), 1.0) == "—"


def test_figure_embeds_the_png_and_names_a_missing_one(tmp_path):
    png = tmp_path / "f.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    page = tk.figure(png, "a/f.png", "loss < 0.1 'nats'")
    data = re.search(r'src="data:image/png;base64,([^"]+)"', page)
    assert data and base64.b64decode(data.group(1)) == png.read_bytes()
    assert 'alt="loss &lt; 0.1 &#x27;nats&#x27;"' in page
    assert "<figcaption>loss &lt; 0.1 &#x27;nats&#x27;</figcaption>" in page
    gone = tk.figure(tmp_path / "nope.png", "a/<nope>.png", "c")
    assert gone == '<div class="missing">Missing figure: <code>a/&lt;nope&gt;.png</code></div>'


def test_provenance_lists_commands_and_folded_configs():
    cfg = tk.Config("toy/params", "parity", "2026-01-01", {"width": 8, "name": EVIL})
    page = tk.provenance(["quanta theory --out <d>"], [cfg])
    assert page.startswith('<div class="meta">Produced by: <code>quanta theory --out &lt;d&gt;')
    assert "<summary>config of <code>toy/params</code> (parity, 2026-01-01)</summary>" in page
    pre = re.search(r"<pre class='cfg'>(.*)</pre>", page, re.S)
    assert pre and "<script>" not in pre.group(1)
    assert json.loads(html.unescape(pre.group(1))) == cfg.config
    assert tk.provenance([], []) == ""


def test_contents_nests_level_3_sections_after_their_parent():
    sections = [
        tk.Section("1. A", [], "a", nav="A"),
        tk.Section("a sub", [], "a1", level=3, nav="sub"),
        tk.Section("unlisted", [], "x"),
        tk.Section("2. B", [], "b", nav="B"),
    ]
    assert tk.contents(sections) == (
        "<nav><b>Contents</b><ol><li><a href='#a'>A</a> (<a href='#a1'>sub</a>)</li>"
        "<li><a href='#b'>B</a></li></ol></nav>"
    )


#: ``Html("...")`` of a literal outside the toolkit (trusted as markup), each with its reason.
TRUSTED_LITERALS = {
    # The comparison cell has always been written unescaped ("<" then a space is text in HTML);
    # kept so that the package renders the page byte for byte as report.py did.
    ("comparison.py", "α_N < α at small α, > α at large α"),
}


def test_no_markup_outside_the_toolkit():
    """Section modules hand text and values to the toolkit: no tag or entity in their strings,
    no literal made into trusted markup (beyond :data:`TRUSTED_LITERALS`)."""
    tag = re.compile(r"<[a-zA-Z/!]|&[a-zA-Z#][a-zA-Z0-9]*;")
    root = Path(quanta.report.__file__).parent
    found = []
    for path in sorted(root.glob("*.py")):
        if path.name == "toolkit.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                if tag.search(node.value):
                    found.append(f"{path.name}:{node.lineno}: {node.value[:60]!r}")
            elif isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "Html":
                arg = node.args[0] if node.args else None
                literal = arg.value if isinstance(arg, ast.Constant) else None
                if literal != "" and (path.name, literal) not in TRUSTED_LITERALS:
                    found.append(f"{path.name}:{node.lineno}: Html({ast.unparse(arg or node)})")
    assert len(list(root.glob("*.py"))) > 10 and not found, found


def test_a_plain_string_block_is_shown_escaped_not_trusted():
    section = tk.Section("T", ["<b>raw</b>", tk.bold("made")])
    assert section.render() == "<h2>T</h2>&lt;b&gt;raw&lt;/b&gt;<b>made</b>"
    assert tk.join("<i>", tk.Html("<i>")) == "&lt;i&gt;<i>"


# ------------------------------------------------------------------------------------ context


def test_missing_names_the_command_or_the_failure(tmp_path):
    failed = {"status": "failed", "message": "bad <input>", "log": "logs/toy-params.log"}
    out = _run_dir(tmp_path, {"theory": {"status": "done"}, "toy-params": failed})
    ctx = RunContext(out)
    assert ctx.missing("theory") is None
    box = ctx.missing("lm-losses", "toy-params")
    assert box is not None and box.startswith('<div class="missing">Missing: stage <b>lm-losses')
    assert f"<code>quanta reproduce --preset tiny --only lm --out {out}</code>" in box
    assert "stage <b>toy-params</b> failed: bad &lt;input&gt;" in box
    assert "(traceback: <code>logs/toy-params.log</code>)" in box


def test_a_directory_that_is_not_a_reproduction_is_refused(tmp_path):
    with pytest.raises(QuantaInputError, match="is not a 'quanta reproduce' directory"):
        RunContext(tmp_path)
    out = _run_dir(tmp_path)
    (out / "stages.json").unlink()
    with pytest.raises(QuantaInputError, match=r"has no stages.json; run 'quanta reproduce"):
        RunContext(out)


# ----------------------------------------------------------------------------------- sections

#: section function → text its "not run" rendering must hold (the stage it names).
NOT_RUN = {
    "theory": "stage <b>theory</b> was not run",
    "emergence": "stage <b>toy-params</b> was not run",
    "scaling": "stage <b>toy-data</b> was not run",
    "alpha_sweep": "stage <b>toy-alpha</b> was not run",
    "alpha_data": "stage <b>toy-alpha-data</b> was not run",
    "language_models": "stage <b>lm-losses</b> was not run",
    "dynamics": "Not a stage of preset tiny",
    "qdg": "stage <b>qdg-validate</b> was not run",
    "appendix_d": "stage <b>qdg-envelope</b> was not run",
    "quanta_scale": "stage <b>qdg-scale</b> was not run",
    "hypothesis": "stage toy-polygenic is not in this preset",
    "universality": "stage <b>qdg-universality</b> was not run",
    "polygenic": "stage <b>toy-polygenic</b> was not run",
    "capacity": "stage <b>toy-capacity</b> was not run",
    "domino": "stage <b>toy-domino</b> was not run",
    "prior": "Ardalani",
    "comparison": "<td>toy α_N (parameters)</td><td>≈ α</td><td>0.400</td><td>—</td>",
}


def test_every_section_without_its_data_says_so(tmp_path):
    ctx = RunContext(_run_dir(tmp_path))
    assert [f.__name__ for f in SECTIONS] == list(NOT_RUN)
    for build in SECTIONS:
        section = build(ctx)
        page = section.render()
        assert page.startswith(f"<h{section.level} id='{section.anchor}'>"), build.__name__
        assert NOT_RUN[build.__name__] in page, build.__name__


def test_a_finished_stage_without_its_file_is_named(tmp_path):
    done = {"status": "done", "commands": ["quanta theory --out x"]}
    ctx = RunContext(_run_dir(tmp_path, {"theory": done, "lm-losses": done}))
    page = quanta.report.theory(ctx).render()
    assert "Missing: <code>theory/theory.json</code> is absent or unreadable." in page
    assert "stage <b>" not in page


def test_the_page_lists_every_section_in_the_registry_order(tmp_path):
    out = _run_dir(tmp_path)
    page = write_report(out).read_text()
    minute = re.compile(r"report written [\d: -]+")
    assert minute.sub("", page) == minute.sub("", render(RunContext(out)))
    ctx = RunContext(out)
    anchors = [s.anchor for s in (build(ctx) for build in SECTIONS)]
    positions = [page.index(f" id='{a}'>") for a in anchors]
    assert positions == sorted(positions) and len(set(anchors)) == len(anchors)
    nav = page[page.index("<nav>") : page.index("</nav>")]
    listed = [nav.index(f"'#{a}'") for a in anchors]
    assert listed == sorted(listed)


def test_duplicate_checkpoints_are_named_in_the_language_model_section(tmp_path):
    """A planted duplicate in lm/losses/models.parquet (two revisions, one set of weights, as
    EleutherAI/pythia#205) reaches the page as one line naming both columns; a table without
    fingerprints (a run made before them) adds nothing."""
    import pandas as pd

    from quanta.report.lm import checkpoint_integrity

    out = _run_dir(tmp_path)
    models = pd.DataFrame(
        {
            "label": ["m@step1", "m@step2", "m@step3"],
            "weights_fingerprint": ["a", "b", "b"],
            "duplicate_of": ["", "", "m@step2"],
        }
    )
    (out / "lm" / "losses").mkdir(parents=True)
    models.to_parquet(out / "lm" / "losses" / "models.parquet")
    [line] = checkpoint_integrity(RunContext(out), "lm/losses/models.parquet")
    assert line.startswith("<p>Duplicate checkpoints: ") and "m@step3 = m@step2" in line
    models.drop(columns=["weights_fingerprint"]).to_parquet(out / "lm" / "losses" / "m.parquet")
    assert checkpoint_integrity(RunContext(out), "lm/losses/m.parquet") == []
