"""Model suites: an ordered list of causal LMs (sizes, seeds, or checkpoints of one size) with
their non-embedding parameter counts, loaded with ``from_pretrained`` by hub id, revision or path.

Suite specs (``resolve_suite``):

* a hub suite of :data:`SUITES` (:mod:`quanta.lm.registry`; ``quanta lm suite show`` prints
  them): Pythia (``pythia``, ``pythia-v0`` — the release the paper measured —,
  ``pythia-deduped``), PolyPythias seed replicas, OLMo-1, SmolLM2, Stanford CRFM's GPT-2
  seeds. They need the Hugging Face hub or its cache.
* a user suite file (``*.toml``, :mod:`quanta.lm.usersuite`): ``[[model]]`` tables with a
  source (hub id or path), revision and optional n_params / label / seed.
* a mini-suite directory written by ``quanta lm suite train`` (its ``suite.json``): every model at
  its final checkpoint.
* a comma-separated list of local model directories or hub ids, each optionally ``@revision``
  (a single bare word that is no directory is read as a suite name: hub ids are ``org/name``).

``checkpoints=`` instead gives saved checkpoints (training dynamics): ``"all"`` or model names,
comma-separated, each model over its revisions, optionally only ``revisions=``. Revision names
are parsed into steps and tokens (:func:`quanta.lm.registry.parse_revision`: ``step<N>``,
``step<N>-tokens<M>B``, ``step-<N>``, ``checkpoint-<N>``). Non-embedding parameter counts are
computed from the loaded model (all parameters minus the embedding matrices — token, position —
and the output head), never typed in (a user suite may state its own); a hub suite's counts,
from its configuration on the meta device, order it before loading and print its table.

Whether the hub is used is decided by ``huggingface_hub`` itself (:func:`hub_access`): its
offline mode (``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE``), its endpoint (``HF_ENDPOINT``, for
mirrors), its HTTP session (proxies from ``HTTPS_PROXY``) and metadata timeout
(``HF_HUB_ETAG_TIMEOUT``), and its cache (``HF_HOME`` / ``HF_HUB_CACHE``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quanta._validation import QuantaInputError, closest
from quanta.lm.registry import (
    PYTHIA,
    PYTHIA_CHECKPOINTS,
    PYTHIA_REVISIONS,
    PYTHIA_V0_REVISIONS,
    SUITES,
    HubSuite,
    non_embedding_params,
    parse_revision,
)

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "PYTHIA",
    "PYTHIA_CHECKPOINTS",
    "PYTHIA_REVISIONS",
    "PYTHIA_V0_REVISIONS",
    "SUITES",
    "HubSuite",
    "ModelRef",
    "hub_access",
    "load_model",
    "load_tokenizer",
    "non_embedding_params",
    "random_model",
    "resolve_suite",
    "revision_step",
    "step_of",
    "suite_table",
    "where_loaded",
]


def suite_table(name: str) -> pd.DataFrame:
    """The models of hub suite ``name``: ``model, hub_id, n_params`` (non-embedding, counted on
    the meta device), ``seed``, ``label``, ``final`` revision, and the revisions each has.

    >>> row = suite_table("pythia-v0").iloc[0]
    >>> row["hub_id"], int(row["n_params"])
    ('EleutherAI/pythia-70m-v0', 18915328)
    """
    import pandas as pd

    suite = _hub_suite(name)
    return pd.DataFrame(
        [
            {
                "model": m.name,
                "hub_id": m.hub_id,
                "n_params": m.n_params,
                "seed": m.seed,
                "label": m.label,
                "final": suite.final,
                "revisions": suite.revisions_text,
            }
            for m in suite.members
        ]
    )


def _hub_suite(name: str) -> HubSuite:
    if name in SUITES:
        return SUITES[name]
    hint = closest(name, SUITES)
    raise QuantaInputError(
        f"Unknown suite {name!r}"
        + (f" (did you mean {hint!r}?)" if hint else "")
        + f"; suites are {', '.join(SUITES)} ('quanta lm suite show'), or pass a suite file "
        "(.toml), a mini-suite directory or model directories / hub ids (org/name, or "
        "org/name@revision)."
    )


@dataclass(frozen=True)
class ModelRef:
    """One member of a suite: a display ``name``, where to load it from (a local directory or
    a hub id) and an optional ``revision`` (hub branch/tag, or a checkpoint sub-directory);
    a ``seed`` and ``tag`` (a suite's label, e.g. "data seed 2") where the suite gives them,
    ``n_params`` where a user suite states the model's size (else it is counted), and the
    training tokens per step where the suite knows them (Pythia: 2,097,152)."""

    name: str
    source: str
    revision: str | None = None
    seed: int | None = None
    tag: str = ""
    n_params: int | None = None
    tokens_per_step: int | None = None

    def tokens(self) -> int | None:
        """Training tokens seen at this revision: from its name (OLMo's ``-tokens<M>B``), else
        its step × ``tokens_per_step``; ``None`` when neither is known.

        >>> ModelRef("p", "EleutherAI/pythia-70m", "step1000", tokens_per_step=2_097_152).tokens()
        2097152000
        """
        step, tokens = parse_revision(self.revision)
        if tokens is None and step is not None and self.tokens_per_step is not None:
            tokens = step * self.tokens_per_step
        return tokens

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
        A hub suite of :data:`SUITES` (``"pythia"``, ``"pythia-v0"``), a mini-suite directory
        (with ``suite.json``) or a comma-separated list of model directories / hub ids, each
        optionally ``@revision``.
    checkpoints : str, optional
        Training dynamics: ``"all"`` (every model of the suite) or model names, comma-separated;
        each named model contributes one member per revision (its saved checkpoints; a hub
        suite: :data:`PYTHIA_CHECKPOINTS`). Members are ordered by model (the suite's order),
        then by revision (the model's order, i.e. by step). Default: every model at its final
        revision.
    revisions : str or sequence of str, optional
        Only these revisions (``"step1000,step8000"`` or a list) of each model of
        ``checkpoints``; every model must have every one of them.

    Returns
    -------
    list of ModelRef

    Raises
    ------
    QuantaInputError
        An unknown suite name (with the closest one suggested), an unknown model, a revision a
        model does not have (mini-suite: not listed in ``suite.json`` or not on disk; a hub
        suite: not one of its ``revisions``, e.g. :data:`PYTHIA_V0_REVISIONS`),
        ``revisions`` without ``checkpoints``, or ``checkpoints`` for a plain list of models.
        Nothing is loaded or written before these checks.

    Examples
    --------
    >>> refs = resolve_suite("pythia", checkpoints="pythia-70m", revisions="step1000,step143000")
    >>> [(r.source, r.revision) for r in refs]
    [('EleutherAI/pythia-70m', 'step1000'), ('EleutherAI/pythia-70m', 'step143000')]
    >>> resolve_suite("pythia-v0")[0].label()
    'pythia-70m-v0@step143000'
    """
    spec = spec.strip()
    if not spec:
        raise QuantaInputError(
            "The suite is empty; pass --suite pythia-v0 (or pythia), a directory or ids."
        )
    wanted_revisions = _split(revisions) if revisions is not None else None
    if wanted_revisions is not None and checkpoints is None:
        raise QuantaInputError(
            "--revisions needs --checkpoints (all, or the models whose revisions to use)."
        )
    if wanted_revisions == []:
        raise QuantaInputError("--revisions is empty; pass revisions like step1000,step8000.")
    if spec in SUITES:
        return _hub_refs(spec, checkpoints, wanted_revisions)
    if spec.endswith(".toml"):
        return _user_refs(spec, checkpoints)
    directory = Path(spec).expanduser().resolve()  # absolute: results name their models
    if (directory / "suite.json").is_file():
        return _minisuite_refs(directory, spec, checkpoints, wanted_revisions)
    return _listed_refs(spec, checkpoints)


def _hub_refs(spec: str, checkpoints: str | None, wanted: list[str] | None) -> list[ModelRef]:
    """The models of the hub suite ``spec`` (at their final revision, or over ``checkpoints``)."""
    hub = SUITES[spec]

    def ref(name: str, revision: str) -> ModelRef:
        m = hub.member(name)
        return ModelRef(
            name, m.hub_id, revision, m.seed, m.label, tokens_per_step=hub.tokens_per_step
        )

    if checkpoints is None:
        return [ref(m.name, hub.final) for m in hub.members]
    names = _pick_models(checkpoints, [m.name for m in hub.members], f"Suite {spec!r}")
    revs = list(hub.checkpoints)
    if wanted is not None:
        missing = [r for r in wanted if not hub.has_revision(r)]
        if missing:
            raise QuantaInputError(
                f"Suite {spec!r} has no revision {missing[0]!r}; it has {hub.revisions_text}."
            )
        revs = sorted(set(wanted), key=revision_step)
    if not revs:
        raise QuantaInputError(
            f"Suite {spec!r} has no default checkpoints; name them with --revisions "
            f"({hub.revisions_text})."
        )
    return [ref(n, r) for n in names for r in revs]


def _user_refs(spec: str, checkpoints: str | None) -> list[ModelRef]:
    """The models of the suite file ``spec``, in file order (:mod:`quanta.lm.usersuite`). A
    suite file lists its model × revision entries itself, so ``--checkpoints`` is refused."""
    from quanta.lm.usersuite import read_user_suite

    if checkpoints is not None:
        raise QuantaInputError(
            f"A suite file lists its models and revisions itself: drop --checkpoints / "
            f"--revisions, or add one [[model]] per revision to '{spec}'."
        )
    return [ModelRef(**fields) for fields in read_user_suite(spec)]


def _check_suite_files(directory: Path, spec: str) -> None:
    """Refuse a mini-suite whose manifest records a file that is now damaged or missing."""
    from quanta.integrity import check_files

    try:
        manifest = json.loads((directory / "manifest.json").read_text())
    except (OSError, ValueError):
        return  # a suite without a readable manifest (copied models): nothing recorded
    damaged = check_files(directory, manifest) if isinstance(manifest, dict) else []
    if damaged:
        more = f" (and {len(damaged) - 1} more damaged files)" if len(damaged) > 1 else ""
        raise QuantaInputError(
            f"{damaged[0].line()}{more}; run 'quanta lm suite train' into '{spec}' again to "
            "recompute it."
        )


def _minisuite_refs(
    directory: Path, spec: str, checkpoints: str | None, wanted: list[str] | None
) -> list[ModelRef]:
    """The models of the mini-suite in ``directory`` (its ``suite.json``); every checkpoint
    asked for must be on disk, and every file as the suite's manifest recorded it (sizes and
    content hashes, :mod:`quanta.integrity`): damaged weights are refused, never loaded."""
    _check_suite_files(directory, spec)
    info = json.loads((directory / "suite.json").read_text())
    models = info["models"]
    if checkpoints is None:
        return [ModelRef(m["name"], str(directory / m["path"]), m["final"]) for m in models]
    names = _pick_models(checkpoints, [m["name"] for m in models], f"The suite at '{spec}'")
    refs: list[ModelRef] = []
    for m in (m for m in models if m["name"] in names):
        base = directory / m["path"]
        revs = list(m["revisions"])
        if wanted is not None:
            missing = [r for r in wanted if r not in revs]
            if missing:
                raise QuantaInputError(
                    f"Model {m['name']!r} of the suite at '{spec}' has no revision "
                    f"{missing[0]!r}; it has {', '.join(revs)}."
                )
            revs = [r for r in revs if r in wanted]
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


def _listed_refs(spec: str, checkpoints: str | None) -> list[ModelRef]:
    """A comma-separated list of model directories and hub ids, each optionally ``@revision``."""
    if not any(c in spec for c in ",/@") and not Path(spec).expanduser().exists():
        _hub_suite(spec)  # a bare word is a suite name (hub ids are org/name): refused here
    if checkpoints is not None:
        raise QuantaInputError(
            f"--checkpoints needs a hub suite ({', '.join(SUITES)}) or a mini-suite directory "
            "(with suite.json)."
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
    """The training step of a checkpoint's revision name (``step<N>``, ``step<N>-tokens<M>B``,
    ``step-<N>``, ``checkpoint-<N>``; ``None`` for any other name).

    >>> step_of("step143000"), step_of("step1000-tokens4B"), step_of("main")
    (143000, 1000, None)
    """
    return parse_revision(revision)[0]


def revision_step(revision: str | None) -> int:
    """:func:`step_of` as an integer column value: ``-1`` for a revision without a step.

    >>> revision_step("step8"), revision_step("checkpoint-10"), revision_step(None)
    (8, 10, -1)
    """
    step = step_of(revision)
    return -1 if step is None else step


_TRUE = {"1", "ON", "YES", "TRUE"}  # huggingface_hub's own reading of a boolean variable


def _offline_variable() -> str | None:
    """The variable that puts ``huggingface_hub`` in offline mode, or ``None`` when it is on.

    huggingface_hub reads ``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE`` once, at import; the
    environment is read again here so that a variable set later in the process (a test, a
    notebook) is honoured too."""
    from huggingface_hub import constants

    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(name, "").upper() in _TRUE:
            return name
    return "HF_HUB_OFFLINE" if constants.HF_HUB_OFFLINE else None


def hub_access(repo_id: str, revision: str | None = None) -> tuple[str, str]:
    """Whether ``repo_id`` at ``revision`` can be downloaded, decided by huggingface_hub.

    One metadata request (``HEAD`` of its ``config.json``) through huggingface_hub's session,
    endpoint (``HF_ENDPOINT``) and timeout (``HF_HUB_ETAG_TIMEOUT``, default 10 s); nothing is
    sent in offline mode.

    Returns
    -------
    status : {"ok", "offline", "unreachable", "missing"}
        ``offline``: offline mode is on; ``unreachable``: the request failed (no network, a
        timeout, a server error); ``missing``: the hub answered that the repository, revision
        or file does not exist (or is gated / private).
    detail : str
        For ``offline`` the variable that switched it on; otherwise the hub's or the network's
        one-line reason ("" for ``ok``).
    """
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url
    from huggingface_hub.errors import (
        EntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    variable = _offline_variable()
    if variable is not None:
        return "offline", variable
    url = hf_hub_url(repo_id, "config.json", revision=revision)
    try:
        get_hf_file_metadata(url, timeout=constants.HF_HUB_ETAG_TIMEOUT)
    except (RepositoryNotFoundError, RevisionNotFoundError, EntryNotFoundError) as exc:
        return "missing", _first_line(exc)
    except Exception as exc:  # the session's transport errors differ across hub versions
        return "unreachable", f"{type(exc).__name__}: {_first_line(exc)}"
    return "ok", ""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def where_loaded(ref: ModelRef) -> tuple[str, dict[str, Any]]:
    """``(path or id, from_pretrained kwargs)``; a clear one-line error instead of a hub hang.

    A local directory loads from disk. A hub id loads from the hub when :func:`hub_access`
    says it can; offline, or when the hub does not answer, from the local cache only
    (``local_files_only``); otherwise it is refused, naming the variable or the endpoint and
    the offline alternative (a local suite)."""
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
    from huggingface_hub import constants, try_to_load_from_cache

    status, detail = hub_access(ref.source, ref.revision)
    if status == "ok":
        return ref.source, {"revision": ref.revision}
    if status == "missing":
        raise QuantaInputError(
            f"Cannot load {ref.label()!r}: the hub at {constants.ENDPOINT} has no such model, "
            f"revision or file ({detail})."
        )
    cached = try_to_load_from_cache(ref.source, "config.json", revision=ref.revision)
    if isinstance(cached, str):
        return ref.source, {"revision": ref.revision, "local_files_only": True}
    why = (
        f"offline mode is on ({detail}=1; unset it to download)"
        if status == "offline"
        else f"{constants.ENDPOINT} did not answer ({detail}; HF_ENDPOINT names a mirror)"
    )
    raise QuantaInputError(
        f"Cannot load {ref.label()!r}: the Hugging Face hub is unreachable: {why}, and it is not "
        f"in the local cache ({constants.HF_HUB_CACHE}). Without the hub, train a local suite "
        "('quanta lm suite train --out DIR') and pass --suite DIR."
    )


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


def random_model(ref: ModelRef, seed: int, *, device: str = "cpu") -> Any:
    """An untrained causal LM of ``ref``'s architecture in eval mode on ``device``: ``ref``'s
    saved config (any ``AutoModelForCausalLM`` class), none of its weights; the weights are
    drawn by the class's own initialization, seeded by ``seed`` (same seed, same weights).
    The random-init null of ``quanta qdg compare``."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    where, kwargs = where_loaded(ref)
    try:
        config = AutoConfig.from_pretrained(where, **kwargs)
    except (OSError, ValueError) as exc:
        raise QuantaInputError(
            f"Cannot read the config of model {ref.label()!r}: {exc}".splitlines()[0]
        ) from None
    # transformers initializes from torch's global generator: seeded inside a fork of it (on
    # the CPU, whatever ``device``), so the caller's stream is left as it was.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model: Any = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    return model.to(device).eval()


#: The files one of which a saved tokenizer has (fast, BPE vocab, SentencePiece).
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")


def load_tokenizer(ref: ModelRef) -> Any:
    """The tokenizer saved with ``ref`` (all members of a suite share it)."""
    from transformers import AutoTokenizer

    where, kwargs = where_loaded(ref)
    local = ref.local_path
    if local is not None and not any((local / f).is_file() for f in _TOKENIZER_FILES):
        # transformers would build an empty default tokenizer for the model type instead.
        raise QuantaInputError(
            f"Model directory '{local}' has no tokenizer (none of {', '.join(_TOKENIZER_FILES)})"
            f"; save the model's tokenizer beside it: tokenizer.save_pretrained('{local}')."
        )
    try:
        return AutoTokenizer.from_pretrained(where, **kwargs)
    except (OSError, ValueError) as exc:
        raise QuantaInputError(
            f"Cannot load the tokenizer of {ref.label()!r}: {exc}".splitlines()[0]
        ) from None
