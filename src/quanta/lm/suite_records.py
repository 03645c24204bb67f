"""The finished models of a mini-suite directory (:func:`quanta.lm.minisuite.train_minisuite`):
``suite.json``'s rows and ``train_log.parquet``, kept by the one process that writes them, also
when the sizes train in worker processes (:mod:`quanta.lm.suite_workers`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["SuiteRecords"]


class SuiteRecords:
    """The finished models of a suite directory (``suite.json``'s rows, their training log),
    both files rewritten atomically, in the order of the sizes, as each model is added (also
    when a damaged model is trained again after others, or models finish out of order)."""

    def __init__(self, out: Path, names: list[str], steps: int) -> None:
        self.out, self.steps, self.names = out, steps, names
        models_file = out / "suite.json"
        done = json.loads(models_file.read_text())["models"] if models_file.exists() else []
        self.done = [m for m in done if _saved(out, m)]  # a damaged model is trained again
        self.log: list[pd.DataFrame] = []
        if (out / "train_log.parquet").exists():  # of the finished models only
            old_log = pd.read_parquet(out / "train_log.parquet")
            self.log.append(old_log[old_log["model"].isin([m["name"] for m in self.done])])

    def todo(self) -> list[int]:
        """Indices of the sizes not yet finished."""
        finished = {m["name"] for m in self.done}
        return [i for i, name in enumerate(self.names) if name not in finished]

    def finished(self, row: dict[str, Any], losses: list[float]) -> None:
        """Record one trained model (its ``suite.json`` row and per-step losses)."""
        from quanta.store import write_json, write_parquet

        self.done.append(row)
        self.done.sort(key=lambda m: self.names.index(m["name"]))
        steps = np.arange(1, self.steps + 1)
        self.log.append(pd.DataFrame({"model": row["name"], "step": steps, "loss": losses}))
        table = pd.concat(self.log, ignore_index=True)
        rank = table["model"].map(self.names.index).to_numpy()
        table = table.iloc[np.lexsort((table["step"].to_numpy(), rank))].reset_index(drop=True)
        write_parquet(self.out / "train_log.parquet", table)
        write_json(self.out / "suite.json", {"models": self.done, "tokenizer": "tokenizer"})


def _saved(out: Path, model: dict[str, Any]) -> bool:
    """Whether every checkpoint of a finished model of ``suite.json`` is on disk (weights and
    config; a damaged file is removed when the suite is reopened)."""
    return all(
        (out / model["path"] / r / name).is_file()
        for r in model["revisions"]
        for name in ("model.safetensors", "config.json")
    )
