"""The mini-suite trainer: schedule, FLOP count, precision, per-size rates, bad input."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from quanta._validation import QuantaInputError
from quanta.cli import app
from quanta.lm.minisuite import (
    SUITE_PRESETS,
    MiniSuiteConfig,
    _late_change,
    _model_config,
    build_suite_config,
    size_non_embedding,
    train_flops_per_token,
    train_minisuite,
)
from quanta.lm.suite import non_embedding_params


def test_schedule_is_linear_warmup_then_cosine_to_the_floor():
    cfg = MiniSuiteConfig(steps=91, warmup=10, min_lr_ratio=0.1)
    # Warmup: (step + 1) / warmup; peak at the first step after it; the floor at the last step.
    assert [cfg.lr_factor(s) for s in (0, 4, 9)] == pytest.approx([0.1, 0.5, 1.0])
    assert cfg.lr_factor(10) == pytest.approx(1.0)
    assert cfg.lr_factor(90) == pytest.approx(0.1)
    # Decay over steps 10 … 90: the mean of peak and floor halfway, a cosine (not a line) at a
    # quarter of the way.
    assert cfg.lr_factor(50) == pytest.approx(0.55)
    assert cfg.lr_factor(30) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.25)))
    factors = [cfg.lr_factor(s) for s in range(10, 91)]
    assert all(a >= b for a, b in itertools.pairwise(factors))


@pytest.mark.parametrize("preset", ["tiny", "cpu", "gpu"])
def test_flops_per_token_count_the_models_own_parameters(preset):
    """6 × (non-embedding + output head) + attention, against the built model's own count."""
    from transformers import GPTNeoXForCausalLM

    cfg = build_suite_config(preset)
    for hidden, layers in cfg.sizes[:3]:
        model = GPTNeoXForCausalLM(_model_config(cfg, hidden, layers, cfg.vocab_size))
        head = model.get_output_embeddings().weight.numel()
        expected = 6 * (non_embedding_params(model) + head) + 6 * layers * cfg.context * hidden
        assert train_flops_per_token(cfg, hidden, layers, cfg.vocab_size) == expected


def test_late_change_is_the_last_5_percent_minus_the_5_percent_around_80():
    losses = list(np.linspace(5.0, 3.0, 200))  # falls 0.01 per step
    # windows of 10 steps: [155, 165) and [190, 200): means differ by 35 steps × 0.01.
    assert _late_change(losses) == pytest.approx(-0.35 * 200 / 199, rel=1e-9)
    assert _late_change([2.0] * 50) == 0.0


def _tiny(**overrides):
    return build_suite_config("tiny", max_docs=20, steps=12, n_checkpoints=2, **overrides)


def test_per_size_rates_precision_and_records(tmp_path):
    lrs = (4e-3, 3e-3, 2e-3, 1e-3)
    bf = train_minisuite(_tiny(lrs=lrs), tmp_path / "bf")
    f32 = train_minisuite(_tiny(lrs=lrs, precision="f32"), tmp_path / "f32")
    assert bf["lr"].tolist() == list(lrs)
    info = json.loads((tmp_path / "bf" / "suite.json").read_text())["models"]
    cfg = _tiny(lrs=lrs)
    assert all(m["tokens"] == cfg.steps * cfg.batch_size * cfg.context for m in info)
    log = pd.read_parquet(tmp_path / "bf" / "train_log.parquet")
    for m in info:  # recorded late change = the function on the logged losses
        losses = log[log["model"] == m["name"]]["loss"].tolist()
        assert m["loss_change_last20"] == pytest.approx(_late_change(losses))
    # bf16 autocast changes the numbers a little (the matmuls ran in bf16), not the weights' dtype.
    assert not np.allclose(bf["final_train_loss"], f32["final_train_loss"], rtol=0, atol=1e-7)
    np.testing.assert_allclose(bf["final_train_loss"], f32["final_train_loss"], atol=0.05)
    from transformers import GPTNeoXForCausalLM

    saved = GPTNeoXForCausalLM.from_pretrained(tmp_path / "bf" / info[-1]["path"] / "step12")
    assert {p.dtype for p in saved.parameters()} == {torch.float32}


def test_the_rate_each_size_gets_is_its_own(tmp_path, monkeypatch):
    seen = []
    real = torch.optim.AdamW

    def spy(params, lr, **kw):
        seen.append(lr)
        return real(params, lr=lr, **kw)

    monkeypatch.setattr(torch.optim, "AdamW", spy)
    train_minisuite(_tiny(lrs=(1e-3, 2e-3, 3e-3, 4e-3)), tmp_path / "s")
    assert seen == [1e-3, 2e-3, 3e-3, 4e-3]


def test_presets_are_valid_and_the_cpu_suite_spans_the_issue_range():
    for name in SUITE_PRESETS:
        cfg = build_suite_config(name)
        assert not cfg.lrs or len(cfg.lrs) == len(cfg.sizes)
    cpu = build_suite_config("cpu")
    from transformers import GPTNeoXForCausalLM

    n = [
        non_embedding_params(GPTNeoXForCausalLM(_model_config(cpu, h, layer, cpu.vocab_size)))
        for h, layer in cpu.sizes
    ]
    assert len(n) >= 6 and n == sorted(n) and math.log10(n[-1] / n[0]) >= 1.5
    # The count the size checks use is the model's own.
    assert n == [size_non_embedding(h, layer) for h, layer in cpu.sizes]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"lrs": (1e-3,)}, r"lrs must give one learning rate per size \(4\); got 1"),
        ({"precision": "fp8"}, r"'precision' parameter .* Got 'fp8' instead"),
        ({"min_lr_ratio": 1.5}, r"'min_lr_ratio' parameter"),
        ({"lrs": (1e-3, 0.0, 1e-3, 1e-3)}, r"'lrs' parameter"),
        ({"context": 4}, r"'context' parameter of MiniSuiteConfig .* \[8, inf\). Got 4"),
        ({"head_dim": 0}, r"'head_dim' parameter of MiniSuiteConfig .* \[8, inf\). Got 0"),
        # tiny's head_dim 8: 100 // 8 = 12 heads, 100 % 12 != 0 (a traceback from HF's check)
        ({"sizes": ((100, 1),)}, r"100x1 has hidden 100, not a multiple of its 12 heads"),
        # one head of 12: a rotary part of 3 dims (the fast engine failed on a shape mismatch)
        ({"sizes": ((12, 1),)}, r"12x1 has heads of 12 dimensions, whose rotary part .* is odd"),
        # unsorted (--model -1 would name the smallest) and repeated (one model trained, once)
        ({"sizes": ((32, 1), (16, 1))}, r"16x1 \(3,312\) follows 32x1 \(12,768\)"),
        ({"sizes": ((16, 1), (16, 1))}, r"16x1 \(3,312\) follows 16x1 \(3,312\)"),
    ],
)
def test_bad_configs_are_refused(overrides, message):
    with pytest.raises((QuantaInputError, ValueError), match=message):
        _tiny(**overrides)


def test_cli_refuses_bad_rates_and_devices_before_writing(tmp_path):
    out = tmp_path / "s"
    base = ["lm", "suite", "train", "--preset", "tiny", "--out", str(out), "--quiet"]
    for extra, message in (
        (["--lrs", "1e-3,x"], "--lrs takes comma-separated numbers; got '1e-3,x'"),
        (["--lrs", "1e-3,2e-3"], "one learning rate per size (4); got 2"),
        (["--device", "cuda"], "sees no CUDA GPU"),
        (["--engine", "jax"], "must be one of 'fast', 'hf'. Got 'jax' instead."),
        (["--sizes", "100x1"], "100x1 has hidden 100, not a multiple of its 12 heads"),
        (["--sizes", "32x1,16x1"], "must grow in non-embedding parameters, smallest first"),
        (["--context", "4"], "'context' parameter of MiniSuiteConfig must be an int"),
    ):
        if extra[0] == "--device" and torch.cuda.is_available():
            continue
        res = CliRunner().invoke(app, [*base, *extra])
        assert res.exit_code == 2, res.output
        assert message in " ".join(res.output.split()) and "Traceback" not in res.output
        assert not out.exists()


@pytest.mark.parametrize("engine", ["fast", "hf"])
def test_init_seed_changes_the_init_and_keeps_the_data_order(tmp_path, monkeypatch, engine):
    import quanta.lm.minisuite as ms
    from quanta.config import config_hash

    seen: list[list] = []  # per suite: its first weight at step 1, then every batch
    real = ms._Trainer.step

    def spy(self, x):
        if not seen[-1]:
            seen[-1].append(next(self.model.parameters()).detach().clone())
        seen[-1].append(x.clone())
        return real(self, x)

    monkeypatch.setattr(ms._Trainer, "step", spy)
    for i, init_seed in enumerate((None, 7, 0)):
        seen.append([])
        cfg = build_suite_config(
            "tiny",
            max_docs=20,
            sizes=((8, 1),),
            steps=2,
            n_checkpoints=1,
            init_seed=init_seed,
            engine=engine,
        )
        train_minisuite(cfg, tmp_path / str(i))
    default, other, same = seen
    assert len(default) == 3
    assert all(torch.equal(a, b) for a, b in zip(default[1:], other[1:], strict=True))  # data
    assert not torch.equal(default[0], other[0])  # init
    assert torch.equal(default[0], same[0])  # init_seed = seed is the default's init
    # Unset, the key is not written: suites trained before it keep their hash.
    assert "init_seed" not in _tiny().to_dict()
    assert config_hash(_tiny().to_dict()) != config_hash(_tiny(init_seed=0).to_dict())


def test_sizes_option_takes_hidden_x_layers_pairs(tmp_path):
    from typer.testing import CliRunner

    from quanta.cli import app

    out = tmp_path / "s"
    res = CliRunner().invoke(app, ["lm", "suite", "train", "--out", str(out), "--sizes", "64y2"])
    assert res.exit_code == 2 and "--sizes takes HIDDENxLAYERS pairs" in res.output
    assert not out.exists()
    from quanta.cli.lm import _sizes

    assert _sizes("64x2, 128X4") == ((64, 2), (128, 4))


def test_both_engines_write_the_same_hf_checkpoints_and_records(tmp_path):
    """engine is a runtime key: same run config; the fast engine's folders load in
    GPTNeoXForCausalLM with the same config and keys as the HF engine's, and the recorded
    counts agree."""
    from transformers import GPTNeoXForCausalLM

    fast = train_minisuite(_tiny(engine="fast"), tmp_path / "fast")
    hf = train_minisuite(_tiny(engine="hf"), tmp_path / "hf")
    assert _tiny(engine="fast").to_dict() == _tiny(engine="hf").to_dict()
    same = ["name", "revisions", "n_params", "n_params_total", "tokens"]
    assert fast[same].to_dict("records") == hf[same].to_dict("records")
    name, final = fast["name"].iloc[-1], fast["final"].iloc[-1]
    folders = [tmp_path / e / "models" / name / final for e in ("fast", "hf")]
    configs = [json.loads((f / "config.json").read_text()) for f in folders]
    assert configs[0] == configs[1]
    assert sorted(p.name for p in folders[0].iterdir()) == sorted(
        p.name for p in folders[1].iterdir()
    )
    models = [GPTNeoXForCausalLM.from_pretrained(str(f)) for f in folders]
    assert models[0].state_dict().keys() == models[1].state_dict().keys()
    # Trained, not the initialisation: the last layer norm moved away from its ones.
    w = models[0].state_dict()["gpt_neox.final_layer_norm.weight"]
    assert float((w - 1).abs().max()) > 1e-3
    with pytest.raises(ValueError, match="'engine' parameter of MiniSuiteConfig"):
        _tiny(engine="jax")


@pytest.mark.parametrize("preset", ["tiny", "cpu", "cpu-long"])
def test_the_universality_replica_is_a_size_of_its_suite_at_its_rate(preset):
    """qdg-universality retrains one size of the suite with init seed 1 and compares it with
    the suite's own model of that size: the size, its rate and the model it names must be the
    suite's (a preset change that forgets the stage would compare two different models)."""
    from quanta.presets import PRESETS

    (stage,) = [s for s in PRESETS[preset] if s.name == "qdg-universality"]
    lines = [list(line) for line in stage.commands]
    trains = [line for line in lines if line[:3] == ["lm", "suite", "train"]]
    # The suite's own model the replicas (init seed 1; the data-order variant) are compared with.
    owns = [line for line in lines if line[:2] == ["qdg", "run"] and "/init0" in line[4]]
    assert trains and owns
    for train in trains:
        cfg = build_suite_config(train[train.index("--preset") + 1])
        size = tuple(int(v) for v in train[train.index("--sizes") + 1].split("x"))
        index = cfg.sizes.index(size)
        name = f"neox-h{size[0]}-l{size[1]}"
        assert all(own[own.index("--model") + 1] == name for own in owns)
        if "--lrs" in train:
            assert float(train[train.index("--lrs") + 1]) == cfg.lr_of(index)
        else:
            assert not cfg.lrs
