"""The report's "Testing the hypothesis" intro and its universality section, on a reproduction
directory with planted comparison files (numbers known, so the table and the reading can be
checked against them) and on one whose stages did not run."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from quanta._stages import PlannedStage, write_stages_file
from quanta.report import hypothesis, universality
from quanta.report.context import RunContext
from quanta.report.universality import universality_reading

PLAN = [
    PlannedStage("qdg-universality", "qdg", "universality"),
    PlannedStage("qdg-universality-toy", "toy", "universality in the toy world"),
]
DONE = {"status": "done", "commands": ["quanta qdg compare a b --out x"]}


def _run_dir(tmp_path: Path, stages: dict) -> Path:
    out = tmp_path / "run"
    out.mkdir()
    manifest = {"kind": "reproduce", "config": {"preset": "tiny"}, "environment": {}}
    (out / "manifest.json").write_text(json.dumps(manifest))
    write_stages_file(out, plan=PLAN, stages=stages)
    return out


def _row(k, observed, null_high, init, ceiling):
    """One planted K: ARI and NMI alike; normalized values computed as compare.py does."""
    metrics = ("ari", "nmi", "share_a", "share_b", "mean_jaccard")
    null = {m: {"mean": 0.0, "low": -0.01, "high": null_high} for m in metrics}
    ceil = {m: ceiling for m in metrics}
    return {
        "K": k,
        "observed": {m: observed for m in metrics},
        "null": null,
        "ceiling": ceil,
        "normalized": {m: observed / ceiling for m in metrics},
        "random_init": None if init is None else {m: init for m in metrics},
        "normalized_init": None
        if init is None
        else {m: (observed - init) / (ceiling - init) for m in metrics},
    }


def _write(out: Path, where: str, rows: list, pairs: int = 1) -> None:
    d = out / where
    d.mkdir(parents=True, exist_ok=True)
    data = {
        "n_tokens": 820,
        "ks": [r["K"] for r in rows],
        "pairs": [{"a": "a", "b": "b", "per_k": rows} for _ in range(pairs)],
    }
    (d / "universality.json").write_text(json.dumps(data))


def test_section_shows_each_number_with_its_nulls_and_ceiling_and_reads_them(tmp_path):
    out = _run_dir(tmp_path, {"qdg-universality": DONE, "qdg-universality-toy": DONE})
    # sizes: well above both nulls; seeds: no better than an untrained model; toy: chance.
    _write(out, "qdg/universality", [_row(10, 0.5, 0.01, 0.2, 0.8), _row(20, 0.6, 0.01, 0.2, 0.8)])
    _write(out, "qdg/universality/seeds", [_row(10, 0.3, 0.01, 0.35, 0.9)])
    _write(out, "qdg/universality-toy", [_row(10, 0.005, 0.01, None, 0.4)], pairs=3)
    matched = pd.DataFrame(
        {
            "K": [20, 20, 10],
            "size_a": [40, 30, 99],
            "size_b": [38, 10, 99],
            "jaccard": [0.9, 0.2, 1.0],
            "found": [True, False, True],
            "description_a": ["'(' after 'def'", "<b>x</b>", "other K"],
            "description_b": ["'(' after 'print'", "y", "other K"],
        }
    )
    matched.to_parquet(out / "qdg/universality/matched_clusters.parquet")
    page = universality(RunContext(out)).render()
    assert "Missing" not in page
    assert "0.50 (0.00 / 0.20 / 0.80)" in page and "0.60 (0.00 / 0.20 / 0.80)" in page
    assert "62% / 50%" in page  # (0.5 − 0) / 0.8 and (0.5 − 0.2) / (0.8 − 0.2)
    assert "0.01 (0.00 / – / 0.40)" in page  # the toy: no random-init null
    assert (out / "figures/universality.png").stat().st_size > 1000
    assert "sizes: ARI 0.50–0.60 over K = 10–20, above the permutation null" in page
    assert "an untrained model of the same architecture agrees as much" in page  # seeds
    assert "toy seeds: ARI 0.01 at K = 10, inside the permutation null" in page
    # The best-matched clusters at the middle K (20), best Jaccard first, escaped.
    assert page.index("after &#x27;def&#x27;") < page.index("&lt;b&gt;x&lt;/b&gt;")
    assert "other K" not in page


def test_reading_verdicts_follow_the_numbers():
    near = universality_reading("x", [_row(10, 0.78, 0.01, 0.1, 0.8)])
    assert "about as alike as one model clustered twice" in near
    weak = universality_reading("x", [_row(10, 0.2, 0.01, 0.1, 0.8)])
    assert "weakly shared" in weak and "14% of the way from it" in weak
    no_init = universality_reading("x", [_row(10, 0.5, 0.01, None, 0.8)])
    assert "random-init" not in no_init and "well above chance," in no_init
    mixed = universality_reading(
        "x", [_row(10, 0.5, 0.01, 0.6, 0.8), _row(20, 0.5, 0.01, 0.1, 0.8)]
    )
    assert "(at or below it at 1 of 2 K)" in mixed
    above = universality_reading("x", [_row(10, 0.9, 0.01, None, 0.8)])
    assert "at or above the ceiling (112% of the way" in above


def test_missing_stages_are_named_and_the_intro_links_the_tests(tmp_path):
    out = _run_dir(tmp_path, {})
    page = universality(RunContext(out)).render()
    assert "stage <b>qdg-universality</b> was not run" in page
    assert "stage <b>qdg-universality-toy</b> was not run" in page
    intro = hypothesis(RunContext(out)).render()
    assert "<a href='#universality'>" in intro  # planned: linked
    assert "stage toy-polygenic is not in this preset" in intro
    assert "<a href='#polygenic'>" not in intro
