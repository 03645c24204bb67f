"""What every section reads: the reproduction directory, its manifest and its stage records.

:class:`RunContext` is loaded once per page. It refuses a directory that is not a ``quanta
reproduce`` directory (or has no stage plan) with one line saying what to run, reads each
Parquet table once, and answers the questions every section asks: which of my stages have not
finished, what produced me, where is my figure. Markup comes from :mod:`.toolkit`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from quanta._stages import STAGES_FILE, read_stages_file
from quanta._validation import QuantaInputError
from quanta.report import toolkit as tk

__all__ = ["RunContext", "read_json"]


def read_json(path: Path) -> Any:
    """The JSON at ``path``, or None when it is absent or unreadable."""
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except (OSError, ValueError):
        return None


def _read_parquet(path: Path) -> pd.DataFrame | None:
    try:
        return pd.read_parquet(path) if path.is_file() else None
    except (OSError, ValueError):
        return None


class RunContext:
    """A reproduction directory as the report sees it.

    Attributes
    ----------
    out : Path
        The directory.
    manifest : dict
        Its ``manifest.json`` (kind ``reproduce``).
    preset : str
        The preset it is bound to.
    plan : list
        The preset's stages in order (name, group, title), from ``stages.json``.
    stages : dict
        Each stage's record (status, seconds, commands, message), from ``stages.json``.
    """

    def __init__(self, out: Path) -> None:
        self.out = out
        manifest = read_json(out / "manifest.json")
        if not manifest or manifest.get("kind") != "reproduce":
            raise QuantaInputError(
                f"'{out}' is not a 'quanta reproduce' directory (no reproduction manifest.json); "
                "pass the --out directory of 'quanta reproduce'."
            )
        self.manifest = manifest
        self.preset = manifest["config"]["preset"]
        recorded = read_stages_file(out)
        if recorded.plan is None:  # no file yet, or one written before the plan was recorded
            what = "has no" if recorded.format == 0 else "has an old-format (no stage plan)"
            raise QuantaInputError(
                f"'{out}' {what} {STAGES_FILE}; run 'quanta reproduce --preset {self.preset} "
                f"--out {out}' to write it (finished stages are reused, not rerun)."
            )
        self.stages = recorded.stages
        self.plan = recorded.plan
        self._tables: dict[str, pd.DataFrame | None] = {}

    def json(self, rel: str) -> Any:
        """The JSON file at ``rel`` in the directory, or None."""
        return read_json(self.out / rel)

    def table(self, rel: str) -> pd.DataFrame | None:
        """The Parquet table at ``rel`` in the directory (read once), or None."""
        if rel not in self._tables:
            self._tables[rel] = _read_parquet(self.out / rel)
        return self._tables[rel]

    def planned(self, name: str) -> bool:
        """Whether stage ``name`` is in the preset's plan."""
        return any(s.name == name for s in self.plan)

    def missing(self, *names: str) -> tk.Html | None:
        """A box when any of the stages ``names`` has not finished, else None."""
        lines = []
        for name in names:
            record = self.stages.get(name)
            if record is None:
                only = next((s.group for s in self.plan if s.name == name), name)
                command = f"quanta reproduce --preset {self.preset} --only {only} --out {self.out}"
                lines.append(tk.stage_not_run(name, command))
            elif record.get("status") != "done":
                state, message = str(record.get("status")), str(record.get("message", ""))
                lines.append(tk.stage_failed(name, state, message, record.get("log")))
        return tk.missing(lines) if lines else None

    def provenance(self, names: list[str], dirs: list[str]) -> tk.Html:
        """The commands of stages ``names`` and the configs in the manifests of ``dirs``."""
        commands = [c for name in names for c in self.stages.get(name, {}).get("commands", [])]
        configs = []
        for d in dirs:
            m = read_json(self.out / d / "manifest.json")
            if m:
                kind, updated = str(m.get("kind")), str(m.get("updated", ""))
                configs.append(tk.Config(d, kind, updated, m.get("config")))
        return tk.provenance(commands, configs)

    def figure(self, rel: str, caption: str) -> tk.Html:
        """The figure at ``rel`` in the directory, embedded (a box when it is absent)."""
        return tk.figure(self.out / rel, rel, caption)
