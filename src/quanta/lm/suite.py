"""Model suites: an ordered list of causal LMs (sizes, or checkpoints of one size) with their
non-embedding parameter counts, loaded with ``from_pretrained`` by hub id, revision or path.

Suite specs (``resolve_suite``):

* ``pythia`` — the Pythia table of PAPER.md §3 (``EleutherAI/pythia-70m`` … ``-6.9b`` at
  ``step143000``); needs the Hugging Face hub or its cache.
* a mini-suite directory written by ``quanta lm suite train`` (its ``suite.json``): every model at
  its final checkpoint.
* a comma-separated list of local model directories or hub ids, each optionally ``@revision``.

``checkpoints=NAME`` instead gives the saved checkpoints of one model of the suite (training
dynamics: the same model over steps). Non-embedding parameter counts are computed from the
loaded model (all parameters minus the input and output embedding matrices), never typed in;
the Pythia table's counts are only used to order the suite before loading.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quanta._validation import QuantaInputError

__all__ = [
    "PYTHIA",
    "ModelRef",
    "hub_reachable",
    "load_model",
    "load_tokenizer",
    "non_embedding_params",
    "resolve_suite",
]

#: Pythia models (PAPER.md §3): name → non-embedding parameters.
PYTHIA = {
    "pythia-70m": 18_915_328,
    "pythia-160m": 85_056_000,
    "pythia-410m": 302_311_424,
    "pythia-1b": 805_736_448,
    "pythia-1.4b": 1_208_602_624,
    "pythia-2.8b": 2_517_652_480,
    "pythia-6.9b": 6_444_163_072,
}
PYTHIA_FINAL = "step143000"
#: Checkpoints used for Pythia training dynamics (log-spaced, all exist on the hub).
PYTHIA_CHECKPOINTS = [f"step{s}" for s in (1000, 2000, 4000, 8000, 16000, 32000, 64000, 143000)]


@dataclass(frozen=True)
class ModelRef:
    """One member of a suite: a display ``name``, where to load it from (a local directory or
    a hub id) and an optional ``revision`` (hub branch/tag, or a checkpoint sub-directory)."""

    name: str
    source: str
    revision: str | None = None

    @property
    def local_path(self) -> Path | None:
        """The directory to load from, if this model lives on disk."""
        base = Path(self.source)
        if not base.exists():
            return None
        if self.revision and (base / self.revision).is_dir():
            return base / self.revision
        return base

    def label(self) -> str:
        return self.name + (f"@{self.revision}" if self.revision else "")


def resolve_suite(spec: str, *, checkpoints: str | None = None) -> list[ModelRef]:
    """The ordered models of ``spec`` (see the module docstring)."""
    spec = spec.strip()
    if not spec:
        raise QuantaInputError("The suite is empty; pass --suite pythia, a directory or ids.")
    if spec == "pythia":
        if checkpoints is not None:
            if checkpoints not in PYTHIA:
                raise QuantaInputError(
                    f"Unknown Pythia model {checkpoints!r}; choose from {', '.join(PYTHIA)}."
                )
            hub = f"EleutherAI/{checkpoints}"
            return [ModelRef(checkpoints, hub, rev) for rev in PYTHIA_CHECKPOINTS]
        return [ModelRef(n, f"EleutherAI/{n}", PYTHIA_FINAL) for n in PYTHIA]
    directory = Path(spec).expanduser().resolve()  # absolute: results name their models
    if (directory / "suite.json").is_file():
        info = json.loads((directory / "suite.json").read_text())
        models = info["models"]
        if checkpoints is not None:
            match = [m for m in models if m["name"] == checkpoints]
            if not match:
                names = ", ".join(m["name"] for m in models)
                raise QuantaInputError(
                    f"The suite at '{spec}' has no model {checkpoints!r}; it has {names}."
                )
            m = match[0]
            return [ModelRef(m["name"], str(directory / m["path"]), r) for r in m["revisions"]]
        return [ModelRef(m["name"], str(directory / m["path"]), m["final"]) for m in models]
    if checkpoints is not None:
        raise QuantaInputError(
            "--checkpoints needs --suite pythia or a mini-suite directory (with suite.json)."
        )
    refs = []
    for item in (s.strip() for s in spec.split(",")):
        if not item:
            continue
        source, _, revision = item.partition("@")
        local = Path(source).expanduser()
        if local.exists():
            source = str(local.resolve())
        name = local.name if local.exists() else source.split("/")[-1]
        refs.append(ModelRef(name, source, revision or None))
    return refs


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether huggingface.co answers on port 443 within ``timeout`` seconds (and the hub is
    not switched off with ``HF_HUB_OFFLINE``)."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return False
    try:
        with socket.create_connection(("huggingface.co", 443), timeout=timeout):
            return True
    except OSError:
        return False


def _where(ref: ModelRef) -> tuple[str, dict[str, Any]]:
    """``(path or id, from_pretrained kwargs)``; a clear error instead of a hub hang."""
    local = ref.local_path
    if local is not None:
        if not (local / "config.json").is_file():
            raise QuantaInputError(
                f"Model directory '{local}' has no config.json: not a saved Hugging Face model."
            )
        return str(local), {}
    # Hub ids are "name" or "org/name"; anything else is a path that does not exist.
    if ref.source.startswith((".", "/", "~")) or ref.source.count("/") > 1:
        raise QuantaInputError(f"Model path '{ref.source}' does not exist.")
    if not hub_reachable():
        # Offline: only what is already in the local cache can load.
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(ref.source, "config.json", revision=ref.revision)
        except Exception:
            cached = None
        if not isinstance(cached, str):
            raise QuantaInputError(
                f"Cannot load {ref.label()!r}: it is not a local directory, the Hugging Face hub "
                "is unreachable (or HF_HUB_OFFLINE is set) and it is not in the local cache. "
                "Train an offline suite with 'quanta lm suite train' or pass model directories."
            )
        return ref.source, {"revision": ref.revision, "local_files_only": True}
    return ref.source, {"revision": ref.revision}


def load_model(ref: ModelRef, *, device: str = "cpu", dtype: Any = None) -> Any:
    """The causal LM of ``ref`` in eval mode on ``device``."""
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    where, kwargs = _where(ref)
    try:
        model: Any = AutoModelForCausalLM.from_pretrained(
            where, dtype=dtype or torch.float32, **kwargs
        )
    except OSError as exc:
        raise QuantaInputError(
            f"Cannot load model {ref.label()!r}: {exc}".splitlines()[0]
        ) from None
    return model.to(device).eval()


def load_tokenizer(ref: ModelRef) -> Any:
    """The tokenizer saved with ``ref`` (all members of a suite share it)."""
    from transformers import AutoTokenizer

    where, kwargs = _where(ref)
    try:
        return AutoTokenizer.from_pretrained(where, **kwargs)
    except (OSError, ValueError) as exc:
        raise QuantaInputError(
            f"Cannot load the tokenizer of {ref.label()!r}: {exc}".splitlines()[0]
        ) from None


def non_embedding_params(model: Any) -> int:
    """All parameters minus the input and (untied) output embedding matrices.

    For GPT-NeoX (Pythia) this is the count PAPER.md §3 lists.
    """
    embeddings = {id(model.get_input_embeddings().weight)}
    out = model.get_output_embeddings()
    if out is not None:
        embeddings.add(id(out.weight))
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) in seen or id(p) in embeddings:
            continue
        seen.add(id(p))
        total += p.numel()
    return total
