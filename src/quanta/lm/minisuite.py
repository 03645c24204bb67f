"""An offline Pythia-style suite: GPT-NeoX models of several sizes trained on one corpus with
one BPE tokenizer and the same data order, with log-spaced checkpoints saved like revisions.

Where no model hub is reachable this is how every LM analysis runs. Layout of ``DIR``::

    manifest.json                 config, status, wall time (a quanta run directory)
    suite.json                    models: name, path, revisions, final, non-embedding params,
                                  final training loss
    tokenizer/                    the byte-level BPE tokenizer (``tokenizers``), HF format
    models/<name>/step<N>/        save_pretrained + tokenizer, one folder per checkpoint
    train_log.parquet             step, model, loss (every logged step)

All sizes see the same batches in the same order (one seeded permutation of fixed-length
chunks of the packed training corpus: documents joined by EOS, no padding). A crash resumes at
the first model not yet finished. With ``workers`` > 1 (a runtime key) the sizes train
concurrently in that many spawned processes, largest first, to the same checkpoints.

Two engines train the same models into the same checkpoint folders (``engine``, a runtime
key): :mod:`quanta.lm.neox` (``fast``, the default) and transformers' ``GPTNeoXForCausalLM``
(``hf``). Training follows Pythia's recipe at small scale: AdamW (β = 0.9, 0.95; weight
decay 0.01) with float32 master weights, linear warmup then cosine decay to ``min_lr_ratio``
× the peak rate, gradient clipping at 1.0, one learning rate per size (``lrs``; chosen by a
measured sweep, see docs/BENCHMARKS.md), and bfloat16 autocast where the device has fast bf16
matrix units (``precision``; ``benchmarks/bench_lm_train.py`` measures both engines per size).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from quanta._validation import (
    QuantaInputError,
    check_choice,
    check_device,
    check_int,
    check_real,
)
from quanta.lock import locked

__all__ = [
    "SUITE_PRESETS",
    "MiniSuiteConfig",
    "size_non_embedding",
    "train_flops_per_token",
    "train_minisuite",
    "training_step",
]

_OWNER = "MiniSuiteConfig"
KIND = "lm.suite"
#: The finished files of a suite directory (hashed in its manifest, checked on reuse).
FILES = ("suite.json", "train_log.parquet", "tokenizer/*", "models/**/*")


@dataclass(frozen=True)
class MiniSuiteConfig:
    """What to train. ``sizes`` are ``(hidden, layers)`` pairs, smallest first; heads are
    ``hidden // head_dim`` (at least 1); the MLP is 4× hidden; rotary on 25% of each head
    (Pythia's settings; transformers' GPT-NeoX default)."""

    corpus: str = "stdlib:train"
    max_docs: int = 0  # 0 = all
    vocab_size: int = 2048
    context: int = 128
    sizes: tuple[tuple[int, int], ...] = ((32, 2), (64, 2), (128, 3), (192, 4))
    head_dim: int = 32
    steps: int = 500
    batch_size: int = 8
    lr: float = 2e-3  # peak learning rate of every size without its own entry in ``lrs``
    lrs: tuple[float, ...] = ()  # one peak learning rate per size (same order), or ()
    warmup: int = 30  # linear warmup steps, then cosine decay
    min_lr_ratio: float = 0.1  # the cosine ends at this fraction of the peak rate
    precision: str = "bf16"  # "bf16": bfloat16 autocast, float32 master weights | "f32"
    n_checkpoints: int = 6
    seed: int = 0  # the data order (and the init, unless init_seed is set)
    # The init alone (PolyPythias: replicas of one data order, other inits); None = seed.
    init_seed: int | None = None
    threads: int = 0  # runtime: torch threads per model; 0 = all cores (// workers)
    # runtime: sizes trained at once, in spawned processes, largest first (quanta.lm.
    # suite_workers); same numbers as 1 at the same threads per model
    workers: int = 1
    device: str = "cpu"  # runtime: torch device
    # runtime: "fast" = quanta.lm.neox (same checkpoints; 1.1-2.6x the speed per size, ~1.5x
    # over the cpu suite, same loss within the seed spread: docs/BENCHMARKS.md) | "hf" =
    # transformers' GPTNeoXForCausalLM
    engine: str = "fast"

    def __post_init__(self) -> None:
        check_int(self.vocab_size, "vocab_size", _OWNER, low=300)
        check_int(self.context, "context", _OWNER, low=8)
        check_int(self.steps, "steps", _OWNER, low=1)
        check_int(self.batch_size, "batch_size", _OWNER, low=1)
        check_int(self.n_checkpoints, "n_checkpoints", _OWNER, low=1)
        check_int(self.max_docs, "max_docs", _OWNER, low=0)
        check_real(self.lr, "lr", _OWNER, low=0.0, low_open=True)
        check_real(self.min_lr_ratio, "min_lr_ratio", _OWNER, low=0.0, high=1.0)
        check_int(self.warmup, "warmup", _OWNER, low=0)
        check_int(self.threads, "threads", _OWNER, low=0)
        check_int(self.workers, "workers", _OWNER, low=1)
        if self.init_seed is not None:
            check_int(self.init_seed, "init_seed", _OWNER, low=0)
        check_choice(self.precision, "precision", _OWNER, ["bf16", "f32"])
        check_choice(self.engine, "engine", _OWNER, ["fast", "hf"])
        if self.lrs and len(self.lrs) != len(self.sizes):
            raise QuantaInputError(
                f"MiniSuiteConfig.lrs must give one learning rate per size ({len(self.sizes)}); "
                f"got {len(self.lrs)}."
            )
        for lr in self.lrs:
            check_real(lr, "lrs", _OWNER, low=0.0, low_open=True)
        check_int(self.head_dim, "head_dim", _OWNER, low=8)
        if len(self.sizes) < 1 or any(h < 4 or layers < 1 for h, layers in self.sizes):
            raise QuantaInputError(
                f"MiniSuiteConfig.sizes must be (hidden >= 4, layers >= 1) pairs; got {self.sizes}."
            )
        for hidden, layers in self.sizes:
            _check_heads(hidden, layers, self.head_dim)
        _check_increasing(self.sizes)

    def checkpoint_steps(self) -> list[int]:
        """Log-spaced steps (1 … steps) at which checkpoints are saved; the last is ``steps``."""
        grid = np.unique(np.geomspace(1, self.steps, self.n_checkpoints).round().astype(int))
        return [int(s) for s in grid]

    def lr_of(self, index: int) -> float:
        """The peak learning rate of the ``index``-th size."""
        return self.lrs[index] if self.lrs else self.lr

    def lr_factor(self, step: int) -> float:
        """Multiplier of the peak rate at optimizer step ``step`` (0-based): linear warmup over
        ``warmup`` steps, then cosine decay to ``min_lr_ratio`` at the last step."""
        if step < self.warmup:
            return (step + 1) / self.warmup
        span = max(self.steps - self.warmup - 1, 1)
        t = min((step - self.warmup) / span, 1.0)
        return self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["sizes"] = [list(s) for s in self.sizes]
        d["lrs"] = list(self.lrs)
        for runtime in ("threads", "workers", "device", "engine"):
            d.pop(runtime)
        if self.init_seed is None:  # written only when set: earlier suites keep their hash
            d.pop("init_seed")
        return d


SUITE_PRESETS: dict[str, dict[str, Any]] = {
    # Seconds: for tests. 4 sizes over ~1.5 decades of non-embedding parameters.
    "tiny": {
        "max_docs": 60,
        "vocab_size": 320,
        "context": 256,  # the tests score documents up to 250 tokens (never past the context)
        "sizes": ((8, 1), (16, 1), (32, 1), (48, 2)),
        "head_dim": 8,
        "steps": 40,
        "batch_size": 4,
        "lr": 5e-3,
        "warmup": 5,
        "n_checkpoints": 3,
    },
    # Minutes on 2 cores (the lm-suite stage of `make demo`, `--workers 2`): 6 sizes, 3.3k …
    # 224k non-embedding parameters (1.83 decades), all on the same 7.9M tokens in the same
    # order. Sizes and vocabulary chosen by benchmarks/lm_preset_search.py (docs/BENCHMARKS.md,
    # "The cpu preset: how it was chosen"): the sizes stop where the tokens still train the
    # largest (the former 793k-parameter top saw 1.6 tokens per parameter and tied with the
    # size below), and a 1024-token vocabulary halves the head that dominates the small sizes'
    # step. 1920 steps (twice the 3.9M of the first choice): at 3.9M the largest model had not
    # learned to copy (0 monogenic tokens, in 41k or 467k scored tokens); at 7.9M it has
    # (docs/BENCHMARKS.md). Rates: the cpu sweep's (benchmarks/lm_lr_sweep.py: 0.04 at h16 l1,
    # 0.005 at h128 l4), log-linear in N: 0.04 · (N / 3312)^-0.38.
    "cpu": {
        "vocab_size": 1024,
        "sizes": ((16, 1), (24, 1), (32, 1), (48, 1), (64, 2), (96, 2)),
        "context": 256,
        "batch_size": 16,
        "steps": 1920,
        "warmup": 40,
        "lr": 5e-3,
        "lrs": (0.04, 0.0297, 0.024, 0.0177, 0.011, 0.0081),
        "n_checkpoints": 8,
    },
    # Under an hour on 2 cores (`quanta reproduce --preset cpu-long`; estimated from the cpu
    # search's measured rates, not run at these settings): the cpu sizes plus h128 l3 and
    # h192 l3 (8 sizes, 3.3k … 1.33M non-embedding, 2.6 decades), 2.5× the cpu tokens (9.8M:
    # about 0.8 of one pass over stdlib:train in this vocabulary). Rates: the same rule.
    "cpu-long": {
        "vocab_size": 1024,
        "sizes": ((16, 1), (24, 1), (32, 1), (48, 1), (64, 2), (96, 2), (128, 3), (192, 3)),
        "context": 256,
        "batch_size": 16,
        "steps": 2400,
        "warmup": 80,
        "lr": 5e-3,
        "lrs": (0.04, 0.0297, 0.024, 0.0177, 0.011, 0.0081, 0.0056, 0.0041),
        "n_checkpoints": 10,
    },
    # A GPU: 6 sizes up to ~19M non-embedding (Pythia-70m's), 1024-token context.
    "gpu": {
        "vocab_size": 16384,
        "context": 1024,
        "sizes": ((64, 2), (128, 3), (192, 4), (256, 4), (384, 6), (512, 6)),
        "head_dim": 64,
        "steps": 20_000,
        "batch_size": 32,
        "lr": 1e-3,
        "warmup": 500,
        "n_checkpoints": 12,
    },
}


def _name(hidden: int, layers: int) -> str:
    return f"neox-h{hidden}-l{layers}"


def size_non_embedding(hidden: int, layers: int) -> int:
    """Non-embedding parameters of one size: per layer the fused QKV, the attention output,
    the 4× MLP (weights and biases) and two layer norms, plus the final layer norm (the count
    :meth:`quanta.lm.neox.NeoX.non_embedding_params` reports for the trained model)."""
    return layers * (12 * hidden * hidden + 13 * hidden) + 2 * hidden


def _check_heads(hidden: int, layers: int, head_dim: int) -> None:
    """A size the engines can build: ``hidden // head_dim`` heads (at least 1) of equal size,
    whose rotary part (25% of each head) has an even number of dimensions (rotate-half pairs
    them)."""
    heads = max(hidden // head_dim, 1)
    size = f"MiniSuiteConfig.sizes: {hidden}x{layers}"
    if hidden % heads:
        raise QuantaInputError(
            f"{size} has hidden {hidden}, not a multiple of its {heads} heads (hidden // "
            f"head_dim {head_dim}); use a hidden below head_dim or a multiple of it."
        )
    rotary = int((hidden // heads) * 0.25)
    if rotary % 2:
        raise QuantaInputError(
            f"{size} has heads of {hidden // heads} dimensions, whose rotary part (25%: "
            f"{rotary}) is odd; rotate-half needs it even (heads of 8-11, 16-19, 24-27, … "
            f"dimensions; head_dim {head_dim})."
        )


def _check_increasing(sizes: tuple[tuple[int, int], ...]) -> None:
    """Sizes smallest first, no two alike: ``suite.json`` keeps their order, and the stages
    name the largest model by position (``qdg run --model -1``)."""
    counted = [(size, size_non_embedding(*size)) for size in sizes]
    for (a, na), (b, nb) in itertools.pairwise(counted):
        if nb <= na:
            raise QuantaInputError(
                f"MiniSuiteConfig.sizes must grow in non-embedding parameters, smallest first; "
                f"{b[0]}x{b[1]} ({nb:,}) follows {a[0]}x{a[1]} ({na:,})."
            )


def train_tokenizer(texts: list[str], vocab_size: int, out: Path) -> Any:
    """Train a byte-level BPE tokenizer (``tokenizers``) and save it in HF format to ``out``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )
    fast.save_pretrained(str(out))
    return fast


def _model_config(cfg: MiniSuiteConfig, hidden: int, layers: int, vocab: int) -> Any:
    from transformers import GPTNeoXConfig

    return GPTNeoXConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=max(hidden // cfg.head_dim, 1),
        intermediate_size=4 * hidden,
        # The trained context: `quanta lm losses` reads it and never scores positions past it.
        max_position_embeddings=cfg.context,
        use_parallel_residual=True,
        tie_word_embeddings=False,
        bos_token_id=0,
        eos_token_id=0,
    )


@locked("out")
def train_minisuite(
    cfg: MiniSuiteConfig,
    out: str | Path,
    *,
    progress: Callable[[str, int, int, float], None] | None = None,
) -> pd.DataFrame:
    """Train every size of ``cfg`` into ``out`` (resuming at the first unfinished model).

    ``progress(model_name, step, steps, loss)`` is called after every step (in this process,
    also with ``cfg.workers > 1``, where the sizes train in worker processes:
    :mod:`quanta.lm.suite_workers`). Returns the models table (the content of ``suite.json``).
    """
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # our own progress display owns the terminal

    from quanta.config import config_hash
    from quanta.lm.corpus import load_documents
    from quanta.store import RunDir, portable_path

    check_device(cfg.device, "quanta lm suite train")
    load_documents(cfg.corpus, max_docs=1)  # a bad corpus is refused before out is claimed
    out = Path(out)
    config = cfg.to_dict()
    stored = {**config, "corpus": portable_path(config["corpus"], out)}
    old = frozenset({config_hash(config)})  # the hash before paths were stored relative
    run = RunDir(out, KIND, stored, config_hash(stored), files=FILES, aliases=old)
    status = run.open()
    models_file = out / "suite.json"
    if status == "complete":
        return pd.DataFrame(json.loads(models_file.read_text())["models"])
    t0 = time.perf_counter()
    tokenizer, chunks = _training_data(cfg, out)
    from quanta.lm.suite_records import SuiteRecords

    records = SuiteRecords(out, [_name(*size) for size in cfg.sizes], cfg.steps)
    train_sizes(
        cfg,
        records.todo(),
        chunks,
        batch_order(cfg, len(chunks)),
        out,
        tokenizer,
        progress,
        records.finished,
    )
    run.write_manifest(
        status="complete",
        wall_seconds=time.perf_counter() - t0,
        extra={"n_models": len(records.done), "n_chunks": len(chunks)},
    )
    return pd.DataFrame(records.done)


def batch_order(cfg: MiniSuiteConfig, n_chunks: int) -> np.ndarray:
    """The chunk indices of every step, ``[steps, batch_size]``: one permutation of the
    chunks by ``cfg.seed`` (the data order), repeated as epochs if the steps need more."""
    order = np.random.default_rng(cfg.seed).permutation(n_chunks)
    return np.resize(order, cfg.steps * cfg.batch_size).reshape(cfg.steps, cfg.batch_size)


def train_sizes(
    cfg: MiniSuiteConfig,
    todo: Sequence[int],
    chunks: np.ndarray,
    batches: np.ndarray,
    out: Path,
    tokenizer: Any,
    progress: Callable[[str, int, int, float], None] | None,
    finished: Callable[[dict[str, Any], list[float]], None],
) -> None:
    """Train the sizes ``todo`` (indices of ``cfg.sizes``) on ``batches``, each saving its
    checkpoints under ``out``: in ``cfg.workers`` processes where more than one size is left
    (:mod:`quanta.lm.suite_workers`), else here, in order. ``finished(row, losses)`` gets
    each model as it completes."""
    import torch

    if min(cfg.workers, len(todo)) > 1:
        from quanta.lm.suite_workers import train_in_workers

        vocab = len(tokenizer)
        train_in_workers(
            cfg,
            todo,
            chunks,
            batches,
            out,
            trainer=_Trainer,
            cost=lambda i: train_flops_per_token(cfg, *cfg.sizes[i], vocab),
            tokenizer=tokenizer,
            progress=progress,
            finished=finished,
        )
        return
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    for index in todo:
        trainer = _Trainer(cfg, index, len(tokenizer))
        losses = trainer.train(chunks, batches, out, tokenizer, progress)
        finished(trainer.row(losses), losses)


def _training_data(cfg: MiniSuiteConfig, out: Path) -> tuple[Any, np.ndarray]:
    """The suite's tokenizer (trained once, reused on resume) and its training chunks."""
    from quanta.lm.corpus import load_documents

    docs, _ = load_documents(cfg.corpus, max_docs=cfg.max_docs or None)
    tok_dir = out / "tokenizer"
    if (tok_dir / "tokenizer.json").exists():
        from transformers import PreTrainedTokenizerFast

        tokenizer = PreTrainedTokenizerFast.from_pretrained(str(tok_dir))
    else:
        tokenizer = train_tokenizer([d.text for d in docs], cfg.vocab_size, tok_dir)
    return tokenizer, _chunks(docs, tokenizer, cfg.context)


class _Trainer:
    """One size of the suite on the configured engine: model, AdamW, schedule, checkpoints."""

    def __init__(self, cfg: MiniSuiteConfig, index: int, vocab: int) -> None:
        import torch

        self.cfg, self.index = cfg, index
        self.hidden, self.layers = cfg.sizes[index]
        self.name = _name(self.hidden, self.layers)
        hf_config = _model_config(cfg, self.hidden, self.layers, vocab)
        init = cfg.seed if cfg.init_seed is None else cfg.init_seed  # the data order is cfg.seed
        if cfg.engine == "fast":
            from quanta.lm.neox import NeoX

            generator = torch.Generator().manual_seed(init)
            self.model: Any = NeoX(hf_config, generator=generator, device=cfg.device)
        else:
            from transformers import GPTNeoXForCausalLM

            torch.manual_seed(init)
            self.model = GPTNeoXForCausalLM(hf_config).to(cfg.device)  # type: ignore[arg-type]
        if cfg.engine == "fast":
            from quanta.lm.neox import adamw

            self.opt = adamw(self.model, cfg.lr_of(index))
        else:
            self.opt = torch.optim.AdamW(
                self.model.parameters(), lr=cfg.lr_of(index), betas=(0.9, 0.95), weight_decay=0.01
            )
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, cfg.lr_factor)

    def step(self, x: Any) -> float:
        """One optimizer step on ``x`` [batch, context]; the loss (nats)."""
        bf16 = self.cfg.precision == "bf16"
        if self.cfg.engine == "fast":
            from quanta.lm.neox import neox_training_step

            return neox_training_step(self.model, self.opt, self.sched, x, bf16=bf16)[0]
        return training_step(self.model, self.opt, self.sched, x, bf16=bf16)

    def save(self, path: Path, tokenizer: Any) -> None:
        """A Hugging Face GPT-NeoX folder (either engine) with the tokenizer beside it."""
        if self.cfg.engine == "fast":
            self.model.save_replica(0, path)
        else:
            self.model.save_pretrained(str(path))
        tokenizer.save_pretrained(str(path))

    def train(self, chunks: Any, batches: Any, out: Path, tokenizer: Any, progress: Any) -> list:
        """Every step of this size; checkpoints at the log-spaced steps. Returns the losses."""
        import torch

        cfg, saves, losses = self.cfg, set(self.cfg.checkpoint_steps()), []
        self.model.train()
        for step in range(1, cfg.steps + 1):
            x = torch.from_numpy(chunks[batches[step - 1]]).to(cfg.device)
            losses.append(self.step(x))
            if not math.isfinite(losses[-1]):
                raise QuantaInputError(
                    f"Training {self.name} diverged at step {step} (loss nan/inf)."
                )
            if progress is not None:
                progress(self.name, step, cfg.steps, losses[-1])
            if step in saves:
                self.save(out / "models" / self.name / f"step{step}", tokenizer)
        return losses

    def row(self, losses: list[float]) -> dict[str, Any]:
        """This size's entry of ``suite.json``."""
        from quanta.lm.suite import non_embedding_params

        cfg, model = self.cfg, self.model
        fast = cfg.engine == "fast"
        revisions = [f"step{s}" for s in cfg.checkpoint_steps()]
        return {
            "name": self.name,
            "path": f"models/{self.name}",
            "hidden": self.hidden,
            "layers": self.layers,
            "revisions": revisions,
            "final": revisions[-1],
            "n_params": model.non_embedding_params() if fast else non_embedding_params(model),
            "n_params_total": sum(p[0].numel() if fast else p.numel() for p in model.parameters()),
            "final_train_loss": float(np.mean(losses[-max(1, cfg.steps // 10) :])),
            "lr": cfg.lr_of(self.index),
            "tokens": cfg.steps * cfg.batch_size * cfg.context,
            "loss_change_last20": _late_change(losses),
        }


def training_step(model: Any, opt: Any, sched: Any, x: Any, *, bf16: bool) -> float:
    """One optimizer step on the token batch ``x`` [batch, context]; returns the loss (nats).

    Autocast runs the matmuls in bfloat16 when ``bf16``; weights, gradients and the AdamW
    state stay float32. Gradients are clipped to norm 1.0 (Pythia's setting).
    """
    import torch

    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
        loss = model(input_ids=x, labels=x).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    sched.step()
    opt.zero_grad(set_to_none=True)
    return float(loss.detach())


def train_flops_per_token(cfg: MiniSuiteConfig, hidden: int, layers: int, vocab: int) -> float:
    """Training FLOPs per token of one size (Kaplan et al. 2020): 6 × (non-embedding + output
    head parameters) + 6 × layers × context × hidden for attention scores and values (full,
    not halved for the causal mask). The input embedding is a lookup (no FLOPs)."""
    ffn = 2 * hidden * 4 * hidden + 4 * hidden + hidden  # two matmuls + biases
    attn = 4 * hidden * hidden + 4 * hidden  # qkv + dense, biases
    per_layer = ffn + attn + 4 * hidden  # two layer norms
    n = layers * per_layer + 2 * hidden  # + final layer norm
    return 6.0 * (n + vocab * hidden) + 6.0 * layers * cfg.context * hidden


def _late_change(losses: list[float]) -> float:
    """Training-loss change over the last 20% of training (nats; negative = still falling):
    the mean of the last 5% of steps minus the mean of the 5% around 80% of training."""
    n = len(losses)
    w = max(n // 20, 1)
    at80 = int(0.8 * n)
    before = np.mean(losses[max(at80 - w // 2, 0) : max(at80 - w // 2, 0) + w])
    return float(np.mean(losses[-w:]) - before)


def _chunks(docs: list[Any], tokenizer: Any, context: int) -> np.ndarray:
    """The training stream: documents joined by EOS, cut into ``context``-token chunks."""
    ids = tokenizer([d.text for d in docs], add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token_id
    flat = np.fromiter(
        (t for doc in ids for t in (*doc, eos)), dtype=np.int64, count=sum(len(d) + 1 for d in ids)
    )
    n = len(flat) // context
    if n < 1:
        raise QuantaInputError(
            f"The training corpus has {len(flat)} tokens, fewer than one context of {context}."
        )
    return flat[: n * context].reshape(n, context)


def build_suite_config(preset: str = "cpu", **overrides: Any) -> MiniSuiteConfig:
    """A preset with overrides (``None`` values ignored)."""
    check_choice(preset, "preset", "quanta lm suite train", list(SUITE_PRESETS))
    values = {**SUITE_PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None}}
    return MiniSuiteConfig(**values)
