"""Model suites: an ordered list of causal LMs (sizes, or checkpoints of one size) with their
non-embedding parameter counts, loaded with ``from_pretrained`` by hub id, revision or path.

Suite specs (``resolve_suite``):

* ``pythia`` — the Pythia table of PAPER.md §3 (``EleutherAI/pythia-70m`` … ``-6.9b`` at
  ``step143000``); needs the Hugging Face hub or its cache.
* a mini-suite directory written by ``quanta lm suite train`` (its ``suite.json``): every model at
  its final checkpoint.
* a comma-separated list of local model directories or hub ids, each optionally ``@revision``.

``checkpoints=`` instead gives saved checkpoints (training dynamics): ``"all"`` or model names,
comma-separated, each model over its revisions (``step<N>``), optionally only ``revisions=``.
Non-embedding parameter counts are computed from the loaded model (all parameters minus the
input and output embedding matrices), never typed in; the Pythia table's counts are only used
to order the suite before loading.
"""

from __future__ import annotations

import json
import os
import re
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quanta._validation import QuantaInputError

__all__ = [
    "PYTHIA",
    "PYTHIA_CHECKPOINTS",
    "PYTHIA_REVISIONS",
    "ModelRef",
    "hub_reachable",
    "load_model",
    "load_tokenizer",
    "non_embedding_params",
    "resolve_suite",
    "revision_step",
    "step_of",
    "where_loaded",
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
#: Every revision the Pythia models have on the hub (the Pythia README): step0, the powers of
#: two up to step512, then every 1000 steps up to step143000. Checked offline.
PYTHIA_REVISIONS = frozenset(
    [f"step{s}" for s in (0, *(2**k for k in range(10)))]
    + [f"step{s}" for s in range(1000, 143_001, 1000)]
)


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


def resolve_suite(
    spec: str,
    *,
    checkpoints: str | None = None,
    revisions: str | Sequence[str] | None = None,
) -> list[ModelRef]:
    """The ordered models of ``spec`` (see the module docstring).

    Parameters
    ----------
    spec : str
        ``"pythia"``, a mini-suite directory (with ``suite.json``) or a comma-separated list of
        model directories / hub ids, each optionally ``@revision``.
    checkpoints : str, optional
        Training dynamics: ``"all"`` (every model of the suite) or model names, comma-separated;
        each named model contributes one member per revision (its saved checkpoints; Pythia:
        :data:`PYTHIA_CHECKPOINTS`). Members are ordered by model (the suite's order), then by
        revision (the model's order, i.e. by step). Default: every model at its final revision.
    revisions : str or sequence of str, optional
        Only these revisions (``"step1000,step8000"`` or a list) of each model of
        ``checkpoints``; every model must have every one of them.

    Returns
    -------
    list of ModelRef

    Raises
    ------
    QuantaInputError
        An unknown model, a revision a model does not have (mini-suite: not listed in
        ``suite.json`` or not on disk; Pythia: not one of :data:`PYTHIA_REVISIONS`),
        ``revisions`` without ``checkpoints``, or ``checkpoints`` for a plain list of models.
        Nothing is loaded or written before these checks.

    Examples
    --------
    >>> refs = resolve_suite("pythia", checkpoints="pythia-70m", revisions="step1000,step143000")
    >>> [(r.source, r.revision) for r in refs]
    [('EleutherAI/pythia-70m', 'step1000'), ('EleutherAI/pythia-70m', 'step143000')]
    """
    spec = spec.strip()
    if not spec:
        raise QuantaInputError("The suite is empty; pass --suite pythia, a directory or ids.")
    wanted_revisions = _split(revisions) if revisions is not None else None
    if wanted_revisions is not None and checkpoints is None:
        raise QuantaInputError(
            "--revisions needs --checkpoints (all, or the models whose revisions to use)."
        )
    if wanted_revisions == []:
        raise QuantaInputError("--revisions is empty; pass revisions like step1000,step8000.")
    if spec == "pythia":
        if checkpoints is None:
            return [ModelRef(n, f"EleutherAI/{n}", PYTHIA_FINAL) for n in PYTHIA]
        names = _pick_models(checkpoints, list(PYTHIA), "Pythia")
        revs = PYTHIA_CHECKPOINTS
        if wanted_revisions is not None:
            missing = [r for r in wanted_revisions if r not in PYTHIA_REVISIONS]
            if missing:
                raise QuantaInputError(
                    f"Pythia has no revision {missing[0]!r}; it has step0, step1, step2, step4 "
                    "… step512 (powers of 2), then step1000 … step143000 (every 1000)."
                )
            revs = sorted(set(wanted_revisions), key=revision_step)
        return [ModelRef(n, f"EleutherAI/{n}", r) for n in names for r in revs]
    directory = Path(spec).expanduser().resolve()  # absolute: results name their models
    if (directory / "suite.json").is_file():
        info = json.loads((directory / "suite.json").read_text())
        models = info["models"]
        if checkpoints is None:
            return [ModelRef(m["name"], str(directory / m["path"]), m["final"]) for m in models]
        names = _pick_models(checkpoints, [m["name"] for m in models], f"The suite at '{spec}'")
        refs: list[ModelRef] = []
        for m in (m for m in models if m["name"] in names):
            base = directory / m["path"]
            revs = list(m["revisions"])
            if wanted_revisions is not None:
                missing = [r for r in wanted_revisions if r not in revs]
                if missing:
                    raise QuantaInputError(
                        f"Model {m['name']!r} of the suite at '{spec}' has no revision "
                        f"{missing[0]!r}; it has {', '.join(revs)}."
                    )
                revs = [r for r in revs if r in wanted_revisions]
            for r in revs:
                # A checkpoint is a step<N> folder (the final one may also be the model folder).
                at_base = r == m.get("final") and (base / "config.json").is_file()
                if not (base / r).is_dir() and not at_base:
                    raise QuantaInputError(
                        f"Revision {r!r} of model {m['name']!r} is listed in '{spec}/suite.json' "
                        f"but '{base / r}' does not exist; retrain or repair the suite."
                    )
            refs.extend(ModelRef(m["name"], str(base), r) for r in revs)
        return refs
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


def _split(values: str | Sequence[str]) -> list[str]:
    items = values.split(",") if isinstance(values, str) else list(values)
    return [v.strip() for v in items if v.strip()]


def _pick_models(checkpoints: str, names: list[str], where: str) -> list[str]:
    """The models ``checkpoints`` names (``"all"`` or a comma-separated list), in suite order."""
    wanted = _split(checkpoints)
    if wanted == ["all"]:
        return names
    if not wanted:
        raise QuantaInputError("--checkpoints is empty; pass all or model names.")
    for w in wanted:
        if w not in names:
            raise QuantaInputError(f"{where} has no model {w!r}; it has {', '.join(names)}.")
    return [n for n in names if n in wanted]


def step_of(revision: str | None) -> int | None:
    """The training step of a revision named ``step<N>`` (``None`` for any other name).

    >>> step_of("step143000"), step_of("main")
    (143000, None)
    """
    match = re.fullmatch(r"step(\d+)", revision or "")
    return int(match.group(1)) if match else None


def revision_step(revision: str | None) -> int:
    """:func:`step_of` as an integer column value: ``-1`` for a revision not named ``step<N>``.

    >>> revision_step("step8"), revision_step(None)
    (8, -1)
    """
    step = step_of(revision)
    return -1 if step is None else step


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


def where_loaded(ref: ModelRef) -> tuple[str, dict[str, Any]]:
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

    where, kwargs = where_loaded(ref)
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

    where, kwargs = where_loaded(ref)
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
