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


# Hashes name run directories, so a changed value orphans every existing run (no resume). These
# were computed by the three functions that config_hash replaced: config.config_hash (parity
# dataclasses), minisuite.config_hash_dict (LM suite, losses, QDG dicts) and sweep._spec_hash.
_PARITY_CLI = {"widths": "4,8", "steps": "200", "alpha": "0.8", "threads": "3"}
_LOSSES_CONFIG = {
    "suite": "pythia",
    "checkpoints": None,
    "models": [{"name": "m", "source": "s", "revision": None}],
    "corpus": "stdlib:test",
    "max_docs": 50,
    "max_len": 128,
    "bos": True,
    "text_field": "text",
    "dtype": "float32",
}


def test_hash_known_answers_match_the_old_functions():
    from pathlib import Path

    from quanta.lm.minisuite import SUITE_PRESETS, MiniSuiteConfig
    from quanta.sweep import SWEEP_PRESETS, SweepSpec, _spec_hash

    parity = {
        "cpu": build_config(ParityConfig, layers=[("p", PRESETS["cpu"])]),
        "paper": build_config(ParityConfig, layers=[("p", PRESETS["paper"])]),
        "cli": build_config(ParityConfig, layers=[("cli", _PARITY_CLI)]),
    }
    assert {k: config_hash(c) for k, c in parity.items()} == {
        "cpu": "37550f33e86299e4",
        "paper": "07a007053168e13c",
        "cli": "8f03b0ecb57059de",
    }
    # The suite config gained keys in issue 11 (per-size rates, cosine floor, precision); the
    # hash of the keys it had then must not have moved.
    new_keys = ("lrs", "min_lr_ratio", "precision")
    # (context 48: the tiny preset's value then; it is 256 since max_len may not pass it)
    tiny = MiniSuiteConfig(**{**SUITE_PRESETS["tiny"], "context": 48}).to_dict()
    default = MiniSuiteConfig().to_dict()
    assert config_hash({k: v for k, v in tiny.items() if k not in new_keys}) == "10b0185009c1f819"
    assert config_hash({k: v for k, v in default.items() if k not in new_keys}) == (
        "0645e7c5fc76f05a"
    )
    assert config_hash(_LOSSES_CONFIG) == "30f39cc4aeaa36b1"
    # The dict runs always hashed non-JSON values by str(): a Path must keep doing so.
    assert config_hash({"losses": Path("/tmp/x"), "ks": [2, 4], "seed": 0}) == "222376ddcbe50b99"
    assert _spec_hash(SWEEP_PRESETS[("params", "cpu")]) == "49d47d28160bacaf"
    # Issue 12 changed the paper α preset on purpose (3 task seeds, each with its own init).
    assert _spec_hash(SWEEP_PRESETS[("alpha", "paper")]) == "09796be3bfba0caf"
    custom = SweepSpec({"steps": "200", "widths": "4,8"}, {"seed": [0, 1]})
    assert _spec_hash(custom) == "dfc5de02157f1c73"


def test_hash_is_sha256_of_canonical_json():
    import hashlib

    # Written out by hand: sorted keys, no spaces, tuples as lists.
    blob = b'{"a":[1,2],"b":{"c":0.5,"d":"x"}}'
    want = hashlib.sha256(blob).hexdigest()[:16]
    assert config_hash({"b": {"d": "x", "c": 0.5}, "a": (1, 2)}) == want


def test_hash_ignores_key_order_and_sees_every_value():
    config = dict(_LOSSES_CONFIG)
    shuffled = dict(reversed(list(config.items())))
    assert list(shuffled) != list(config)
    assert config_hash(shuffled) == config_hash(config)
    for key, value in [("max_len", 129), ("bos", False), ("checkpoints", "final"), ("x", 1)]:
        assert config_hash({**config, key: value}) != config_hash(config), key
    base = ParityConfig()
    assert config_hash(dataclasses.replace(base, alpha=0.41)) != config_hash(base)


def test_hash_refuses_other_types():
    with pytest.raises(
        TypeError,
        match=r"The 'config' parameter of config_hash must be a dataclass instance or a "
        r"mapping\. Got list instead\.",
    ):
        config_hash([1, 2])
