import dataclasses

import pytest

from quanta._validation import QuantaInputError
from quanta.config import build_config, config_hash, parse_overrides
from quanta.parity import PRESETS, ParityConfig, paper_widths


def test_paper_preset_is_the_paper():
    cfg = build_config(ParityConfig, layers=[("preset", PRESETS["paper"])])
    assert (cfg.n_tasks, cfg.n_bits, cfg.k, cfg.alpha) == (500, 100, 3, 0.4)
    assert cfg.batch_size == 20_000 and cfg.steps == 200_000 and cfg.test_per_task == 1000
    assert len(cfg.widths) == 30 and cfg.widths[0] == 9 and cfg.widths[-1] == 500
    assert cfg.widths == paper_widths()


def test_overrides_parse_types():
    raw = parse_overrides(["--widths", "4,8", "--lr=0.01", "--uniform", "true", "--n-train", "100"])
    cfg = build_config(ParityConfig, layers=[("cli", raw)])
    assert cfg.widths == (4, 8) and cfg.lr == 0.01 and cfg.uniform and cfg.n_train == 100


def test_hash_ignores_runtime_knobs_only():
    a = ParityConfig()
    assert config_hash(a) == config_hash(dataclasses.replace(a, threads=2, eval_chunk=10))
    assert config_hash(a) != config_hash(dataclasses.replace(a, seed=1))


def test_unknown_key_suggests_closest():
    with pytest.raises(
        QuantaInputError,
        match=r"Unknown config key 'stpes' \(did you mean "
        r"'steps'\?\) in x\.toml\.",
    ):
        build_config(ParityConfig, layers=[("x.toml", {"stpes": 3})])
    with pytest.raises(QuantaInputError, match=r"Unknown config key 'zzz' in x\.toml\.$"):
        build_config(ParityConfig, layers=[("x.toml", {"zzz": 3})])


def test_type_errors_name_the_parameter():
    with pytest.raises(
        ValueError,
        match=r"'steps' parameter of ParityConfig must be an int\. "
        r"Got 'many' instead",
    ):
        build_config(ParityConfig, layers=[("cli", {"steps": "many"})])
    with pytest.raises(
        ValueError,
        match=r"'steps' parameter of ParityConfig must be an int in "
        r"the range \[1, inf\)\. Got 2\.5 instead",
    ):
        ParityConfig(steps=2.5)  # type: ignore[arg-type]


def test_auto_threads():
    assert ParityConfig(widths=(4,), batch_size=10).resolved_threads() == 1
    assert ParityConfig(threads=3).resolved_threads() == 3
