"""The hub suites ``--suite`` accepts by name (``quanta lm suite show`` prints them), each model
with the configuration fields its non-embedding parameter count is computed from, and the
revision names of each family parsed into training steps and tokens.

No configuration is downloaded: the fields that shape the parameters (hidden size, layers,
heads, key/value heads, MLP width, vocabulary, context) are written here per model, with their
source, and the model is built on PyTorch's meta device (shapes only, no memory) to count them
(:func:`arch_params`), as for Pythia since the first suite.

Suites (``SUITES``):

* ``pythia`` / ``pythia-v0`` / ``pythia-deduped`` — Pythia 70m … 12b: today's release, the
  original one the paper measured, and the runs on the deduplicated Pile.
* ``polypythia-<size>`` (14m, 31m, 70m, 160m, 410m) — a seed axis: ``pythia-<size>`` (seed 0)
  and its nine replicas ``pythia-<size>-seed1`` … ``-seed9`` (same data and order, another
  seed); ``polypythia-160m-data-seed`` / ``-weight-seed`` — pythia-160m and the replicas that
  change only the data order or only the initialization (``pythia-160m-data-seed1`` … 3).
* ``olmo-1b`` — ``allenai/OLMo-1B-hf``, revisions ``step<N>-tokens<M>B``.
* ``smollm2`` — ``HuggingFaceTB/SmolLM2-{135M,360M,1.7B}-intermediate-checkpoints`` (Llama),
  revisions ``step-<N>``.
* ``crfm-gpt2-small`` / ``crfm-gpt2-medium`` — Stanford CRFM's GPT-2 replicas with five seeds
  each (``stanford-crfm/alias-gpt2-small-x21`` …), revisions ``checkpoint-<N>``.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "PYTHIA",
    "PYTHIA_CHECKPOINTS",
    "PYTHIA_FINAL",
    "PYTHIA_REVISIONS",
    "PYTHIA_V0_REVISIONS",
    "SUITES",
    "Arch",
    "HubModel",
    "HubSuite",
    "arch_params",
    "non_embedding_params",
    "parse_revision",
]

#: Pythia sizes (PAPER.md §3): name → non-embedding parameters, the same for today's suite and
#: the original (v0) release. PAPER.md lists 70m … 6.9b; 12b (the paper's "13b") is
#: 36 layers × d 5120 by the GPT-NeoX count 12·L·d² + 13·L·d + 2·d, which gives every other entry.
#: The registry counts every model on the meta device; a test checks it gives these.
PYTHIA = {
    "pythia-70m": 18_915_328,
    "pythia-160m": 85_056_000,
    "pythia-410m": 302_311_424,
    "pythia-1b": 805_736_448,
    "pythia-1.4b": 1_208_602_624,
    "pythia-2.8b": 2_517_652_480,
    "pythia-6.9b": 6_444_163_072,
    "pythia-12b": 11_327_027_200,
}
PYTHIA_FINAL = "step143000"
#: Checkpoints used for Pythia training dynamics (log-spaced, in both releases).
PYTHIA_CHECKPOINTS = [f"step{s}" for s in (1000, 2000, 4000, 8000, 16000, 32000, 64000, 143000)]
#: Every revision today's Pythia models have on the hub (the Pythia README): step0, the powers
#: of two up to step512, then every 1000 steps up to step143000. Checked offline.
PYTHIA_REVISIONS = frozenset(
    [f"step{s}" for s in (0, *(2**k for k in range(10)))]
    + [f"step{s}" for s in range(1000, 143_001, 1000)]
)
#: The original release's revisions (PAPER.md §3): every 1000 steps, step1000 … step143000.
PYTHIA_V0_REVISIONS = frozenset(f"step{s}" for s in range(1000, 143_001, 1000))
#: Pythia's batch: 1024 sequences × 2048 tokens per step (the Pythia paper, Table 1).
PYTHIA_TOKENS_PER_STEP = 2_097_152


@dataclass(frozen=True)
class Arch:
    """The configuration fields that shape a model's parameters (``config.json``), with where
    they come from. ``family`` is the transformers ``model_type``."""

    family: str  # gpt_neox | llama | olmo | gpt2
    hidden: int
    layers: int
    heads: int
    intermediate: int
    vocab: int
    context: int  # max_position_embeddings (n_positions for GPT-2)
    kv_heads: int | None = None  # grouped-query attention (Llama); None: = heads
    tied: bool = False  # input and output embeddings share one matrix
    source: str = ""

    def config(self) -> Any:
        """The transformers config of this shape (every other field at its default)."""
        from transformers import AutoConfig

        if self.family == "gpt2":
            fields: dict[str, Any] = {
                "n_embd": self.hidden,
                "n_layer": self.layers,
                "n_head": self.heads,
                "n_inner": self.intermediate,
                "n_positions": self.context,
            }
        else:
            fields = {
                "hidden_size": self.hidden,
                "num_hidden_layers": self.layers,
                "num_attention_heads": self.heads,
                "intermediate_size": self.intermediate,
                "max_position_embeddings": self.context,
            }
            if self.kv_heads is not None:
                fields["num_key_value_heads"] = self.kv_heads
        return AutoConfig.for_model(
            self.family, vocab_size=self.vocab, tie_word_embeddings=self.tied, **fields
        )


@functools.cache
def arch_params(arch: Arch) -> int:
    """Non-embedding parameters of ``arch``, counted on a model built on the meta device
    (:func:`non_embedding_params`); cached per shape.

    >>> arch_params(_neox(512, 6, 8))  # pythia-70m
    18915328
    """
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):  # shapes only: a 12b model without its 48 GB
        model = AutoModelForCausalLM.from_config(arch.config())
    return non_embedding_params(model)


def non_embedding_params(model: Any) -> int:
    """All parameters minus the embedding matrices (token, position, token-type: every
    ``nn.Embedding``, and the input embeddings where a model has its own module for them) and
    the (untied) output head.

    For GPT-NeoX (Pythia) this is the count PAPER.md §3 lists; for GPT-2 it leaves out the
    learned position embeddings too, as Kaplan et al.'s N does.
    """
    import torch

    embeddings = {id(model.get_input_embeddings().weight)}
    embeddings.update(id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding))
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


@dataclass(frozen=True)
class HubModel:
    """One model of a hub suite: its display ``name``, ``hub_id``, shape, seed and label."""

    name: str
    hub_id: str
    arch: Arch
    seed: int | None = None
    label: str = ""

    @property
    def n_params(self) -> int:
        return arch_params(self.arch)


@dataclass(frozen=True)
class HubSuite:
    """A suite of hub models (``members``, in order of size, then seed), each at ``final`` by
    default. Revisions are checked offline against ``revisions`` (the exact set, where the
    family publishes one) or ``pattern`` (a regular expression, where it does not; the hub then
    has the last word, before anything is written); ``checkpoints`` are the default revisions
    of training dynamics (empty: ``--revisions`` must name them). ``axis`` is what varies
    along the suite: ``N`` (sizes) or ``seed`` (replicas of one size)."""

    name: str
    description: str
    members: tuple[HubModel, ...]
    revisions_text: str
    revisions: frozenset[str] = frozenset()
    pattern: str | None = None
    final: str = PYTHIA_FINAL
    checkpoints: tuple[str, ...] = field(default=tuple(PYTHIA_CHECKPOINTS))
    axis: str = "N"
    tokens_per_step: int | None = None

    @property
    def models(self) -> dict[str, int]:
        """Model name → non-embedding parameters (counted on the meta device)."""
        return {m.name: m.n_params for m in self.members}

    def member(self, name: str) -> HubModel:
        return next(m for m in self.members if m.name == name)

    def hub_id(self, model: str) -> str:
        return self.member(model).hub_id

    def has_revision(self, revision: str) -> bool:
        """Whether ``revision`` is one this suite's models publish (checked offline)."""
        if revision == self.final or revision in self.revisions:
            return True
        return self.pattern is not None and re.fullmatch(self.pattern, revision) is not None


_REVISION_FORMS = (
    # (pattern, has tokens): Pythia step<N>; OLMo step<N>-tokens<M>B; SmolLM2 step-<N>;
    # Stanford CRFM (Mistral) checkpoint-<N>.
    re.compile(r"step(?P<step>\d+)"),
    re.compile(r"step(?P<step>\d+)-tokens(?P<tokens>\d+)(?P<unit>[MBT])"),
    re.compile(r"step-(?P<step>\d+)"),
    re.compile(r"checkpoint-(?P<step>\d+)"),
)
_UNITS = {"M": 10**6, "B": 10**9, "T": 10**12}


def parse_revision(revision: str | None) -> tuple[int | None, int | None]:
    """``(step, tokens)`` of a checkpoint's revision name (``None`` where the name has none).

    >>> parse_revision("step143000"), parse_revision("step1000-tokens4B")
    ((143000, None), (1000, 4000000000))
    >>> parse_revision("step-40000"), parse_revision("checkpoint-400000"), parse_revision("main")
    ((40000, None), (400000, None), (None, None))
    """
    for form in _REVISION_FORMS:
        match = form.fullmatch(revision or "")
        if match:
            groups = match.groupdict()
            tokens = None
            if groups.get("tokens") is not None:
                tokens = int(groups["tokens"]) * _UNITS[groups["unit"]]
            return int(groups["step"]), tokens
    return None, None


def _neox(hidden: int, layers: int, heads: int, vocab: int = 50304) -> Arch:
    return Arch(
        "gpt_neox",
        hidden,
        layers,
        heads,
        4 * hidden,
        vocab,
        2048,
        source="EleutherAI/pythia README (layers, model dim, heads); config.json (vocab_size)",
    )


#: Pythia shapes by size (the Pythia README; 14m and 31m: the PolyPythias model card).
PYTHIA_ARCHS = {
    "14m": _neox(128, 6, 4),
    "31m": _neox(256, 6, 8),
    "70m": _neox(512, 6, 8),
    "160m": _neox(768, 12, 12),
    "410m": _neox(1024, 24, 16),
    "1b": _neox(2048, 16, 8),
    "1.4b": _neox(2048, 24, 16),
    "2.8b": _neox(2560, 32, 32),
    "6.9b": _neox(4096, 32, 32, vocab=50432),
    "12b": _neox(5120, 36, 40, vocab=50688),
}
_PAPER_SIZES = ("70m", "160m", "410m", "1b", "1.4b", "2.8b", "6.9b", "12b")
_SMOL = "HuggingFaceTB/SmolLM2-{}-intermediate-checkpoints config.json"
SMOLLM2_ARCHS = {
    "135M": Arch("llama", 576, 30, 9, 1536, 49152, 8192, 3, True, _SMOL.format("135M")),
    "360M": Arch("llama", 960, 32, 15, 2560, 49152, 8192, 5, True, _SMOL.format("360M")),
    "1.7B": Arch("llama", 2048, 24, 32, 8192, 49152, 8192, 32, True, _SMOL.format("1.7B")),
}
OLMO_1B = Arch(
    "olmo",
    2048,
    16,
    16,
    8192,
    50304,
    2048,
    tied=True,
    source="allenai/OLMo-1B model card (layers, hidden, heads, context); OLMo-1B-hf config.json",
)
_GPT2 = "OpenAI GPT-2 {} (the shape Stanford CRFM's Mistral runs trained)"
GPT2_ARCHS = {
    "small": Arch("gpt2", 768, 12, 12, 3072, 50257, 1024, tied=True, source=_GPT2.format("124M")),
    "medium": Arch("gpt2", 1024, 24, 16, 4096, 50257, 1024, tied=True, source=_GPT2.format("355M")),
}
#: Stanford CRFM's GPT-2 replicas (Mistral): run name → seed (the ``x<seed>`` of the hub id).
CRFM_RUNS = {
    "small": {"alias": 21, "battlestar": 49, "caprica": 81, "darkmatter": 343, "expanse": 777},
    "medium": {"arwen": 21, "beren": 49, "celebrimbor": 81, "durin": 343, "eowyn": 777},
}
_PYTHIA_TEXT = (
    "step0, step1, step2, step4 … step512 (powers of 2), then step1000 … step143000 (every 1000)"
)


def _pythia_suite(name: str, suffix: str, description: str, revisions: frozenset[str]) -> HubSuite:
    members = tuple(
        HubModel(f"pythia-{s}{suffix}", f"EleutherAI/pythia-{s}{suffix}", PYTHIA_ARCHS[s])
        for s in _PAPER_SIZES
    )
    text = _PYTHIA_TEXT if revisions == PYTHIA_REVISIONS else "step1000 … step143000 (every 1000)"
    return HubSuite(
        name, description, members, text, revisions, tokens_per_step=PYTHIA_TOKENS_PER_STEP
    )


def _polypythia(size: str, variant: str = "seed", seeds: range = range(1, 10)) -> HubSuite:
    """pythia-<size> (seed 0) and its replicas pythia-<size>-<variant><k>."""
    arch = PYTHIA_ARCHS[size]
    base = HubModel(f"pythia-{size}", f"EleutherAI/pythia-{size}", arch, 0, "seed 0 (Pythia)")
    kind = variant.replace("-", " ")
    replicas = tuple(
        HubModel(
            f"pythia-{size}-{variant}{k}",
            f"EleutherAI/pythia-{size}-{variant}{k}",
            arch,
            k,
            f"{kind} {k}",
        )
        for k in seeds
    )
    what = {
        "seed": "its 9 seed replicas (same data and order, another seed)",
        "data-seed": "its replicas with another data order only (same initialization)",
        "weight-seed": "its replicas with another initialization only (same data order)",
    }[variant]
    name = f"polypythia-{size}" + ("" if variant == "seed" else f"-{variant}")
    return HubSuite(
        name,
        f"PolyPythias: pythia-{size} and {what}",
        (base, *replicas),
        _PYTHIA_TEXT,
        PYTHIA_REVISIONS,
        axis="seed",
        tokens_per_step=PYTHIA_TOKENS_PER_STEP,
    )


def _crfm(size: str) -> HubSuite:
    members = tuple(
        HubModel(
            f"{run}-gpt2-{size}-x{seed}",
            f"stanford-crfm/{run}-gpt2-{size}-x{seed}",
            GPT2_ARCHS[size],
            seed,
            f"seed {seed}",
        )
        for run, seed in CRFM_RUNS[size].items()
    )
    return HubSuite(
        f"crfm-gpt2-{size}",
        f"Stanford CRFM's GPT-2 {size} replicas (Mistral; five seeds, OpenWebText)",
        members,
        "main (final, step 400000), checkpoint-<N> (training steps)",
        pattern=r"checkpoint-\d+",
        final="main",
        checkpoints=(),
        axis="seed",
    )


def _build_suites() -> dict[str, HubSuite]:
    suites = [
        _pythia_suite(
            "pythia",
            "",
            "today's Pythia (retrained 2023; not the models the paper measured)",
            PYTHIA_REVISIONS,
        ),
        _pythia_suite(
            "pythia-v0",
            "-v0",
            "the original Pythia release the paper measured (its pythia-19m … -13b)",
            PYTHIA_V0_REVISIONS,
        ),
        _pythia_suite(
            "pythia-deduped",
            "-deduped",
            "Pythia trained on the deduplicated Pile",
            PYTHIA_REVISIONS,
        ),
        *(_polypythia(s) for s in ("14m", "31m", "70m", "160m", "410m")),
        _polypythia("160m", "data-seed", range(1, 4)),
        _polypythia("160m", "weight-seed", range(1, 4)),
        HubSuite(
            "olmo-1b",
            "OLMo-1 1B (AI2; Dolma, 3T tokens), a checkpoint every 1000 steps",
            (HubModel("OLMo-1B-hf", "allenai/OLMo-1B-hf", OLMO_1B),),
            "main (final), step<N>-tokens<M>B (every 1000 steps, e.g. step1000-tokens4B)",
            pattern=r"step\d+000-tokens\d+B",
            final="main",
            checkpoints=(),
        ),
        HubSuite(
            "smollm2",
            "SmolLM2 135M / 360M / 1.7B intermediate checkpoints (Hugging Face; Llama)",
            tuple(
                HubModel(
                    f"SmolLM2-{s}",
                    f"HuggingFaceTB/SmolLM2-{s}-intermediate-checkpoints",
                    arch,
                )
                for s, arch in SMOLLM2_ARCHS.items()
            ),
            "main (final), step-<N> (e.g. step-1200000)",
            pattern=r"step-\d+",
            final="main",
            checkpoints=(),
        ),
        _crfm("small"),
        _crfm("medium"),
    ]
    return {s.name: s for s in suites}


#: The hub suites ``--suite`` accepts by name.
SUITES: dict[str, HubSuite] = _build_suites()
