"""quanta: the science of neural scaling, built around the Quantization Model.

Michaud, Liu, Girit, Tegmark, "The Quantization Model of Neural Scaling", NeurIPS 2023.

The main entry points are importable from the top level (loaded on first use, so ``import
quanta`` stays light): ``quanta.ParityConfig``, ``quanta.run_parity``, ``quanta.analyze``,
``quanta.run_losses``, ``quanta.analyze_losses``, ``quanta.run_qdg``, ``quanta.reproduce``,
``quanta.write_report``, ``quanta.fit_power_law``.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_API = {
    "ParityConfig": "quanta.parity.config",
    "run_parity": "quanta.parity.run",
    "analyze": "quanta.parity.analyze",
    "run_losses": "quanta.lm.losses_run",
    "analyze_losses": "quanta.lm.curves",
    "run_qdg": "quanta.qdg.run",
    "reproduce": "quanta.cli",  # the pipeline run with the CLI's in-process runner
    "write_report": "quanta.report",
    "fit_power_law": "quanta.scaling",
}
__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'quanta' has no attribute {name!r}")
