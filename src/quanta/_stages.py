"""The ``stages.json`` file of a reproduction directory: written by :mod:`quanta.pipeline`,
read by the pipeline (to resume) and by :mod:`quanta.report` (which never imports the pipeline).

Format 2::

    {"format": 2,
     "plan": [{"name": "theory", "group": "toy", "title": "…"}, …],   the preset's stages, in order
     "stages": {"theory": {"status": "done", "seconds": 1.2, "commands": […]}, …}}

``stages`` holds one record per stage run so far: ``status`` (done, failed, skipped,
interrupted), ``seconds``, ``commands`` (as typed), and ``message`` / ``log`` when it did not
finish. Format 1 (directories written before the plan was recorded) is the bare ``stages``
mapping; the pipeline still resumes from it and rewrites it as format 2 as soon as it starts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from quanta._validation import QuantaInputError
from quanta.store import write_json

__all__ = [
    "FORMAT",
    "STAGES_FILE",
    "PlannedStage",
    "StagesFile",
    "read_stages_file",
    "write_stages_file",
]

STAGES_FILE = "stages.json"
FORMAT = 2


class PlannedStage(NamedTuple):
    """One stage of a preset's plan, as the report lists it."""

    name: str
    group: str
    title: str


@dataclass(frozen=True)
class StagesFile:
    """What ``stages.json`` holds: ``format`` (0 = no file yet, 1 = no plan recorded, 2),
    ``plan`` (None unless format 2) and ``stages`` (the record of every stage run so far)."""

    format: int
    plan: tuple[PlannedStage, ...] | None
    stages: dict[str, dict[str, Any]]


def read_stages_file(out: str | Path) -> StagesFile:
    """Read ``out/stages.json``; one clear error when it is not a stages file."""
    path = Path(out) / STAGES_FILE
    if not path.is_file():
        return StagesFile(0, None, {})
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise QuantaInputError(f"Cannot read '{path}': {exc}.") from None
    if not isinstance(data, dict):
        raise QuantaInputError(f"'{path}' is not a stages file (a JSON object).")
    if "format" not in data:  # format 1: the stage records only
        return StagesFile(1, None, data)
    if data["format"] != FORMAT:
        raise QuantaInputError(
            f"'{path}' has format {data['format']!r}; this quanta reads format {FORMAT}."
        )
    try:
        plan = tuple(PlannedStage(s["name"], s["group"], s["title"]) for s in data["plan"])
        stages = dict(data["stages"])
    except (KeyError, TypeError) as exc:
        raise QuantaInputError(f"'{path}' is not a valid stages file ({exc!r} missing).") from None
    return StagesFile(FORMAT, plan, stages)


def write_stages_file(
    out: str | Path, *, plan: list[PlannedStage], stages: dict[str, dict[str, Any]]
) -> None:
    """Write ``out/stages.json`` (format 2, atomically)."""
    write_json(
        Path(out) / STAGES_FILE,
        {"format": FORMAT, "plan": [s._asdict() for s in plan], "stages": stages},
    )
