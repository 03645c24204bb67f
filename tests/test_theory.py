import numpy as np
import pytest

from quanta.parity import zipf_probs
from quanta.scaling import fit_power_law
from quanta.theory import loss_curve, predicted_exponents, simulate, zipf_pk


def test_finite_zipf_matches_task_frequencies():
    np.testing.assert_allclose(zipf_pk(np.arange(1, 501), 0.4, n_quanta=500), zipf_probs(500, 0.4))


def test_infinite_zipf_sums_to_one():
    p = zipf_pk(np.arange(1, 2_000_001), 1.0)
    assert p.sum() == pytest.approx(1.0, abs=1e-6)


def test_loss_curve_is_tail_mass():
    p = zipf_pk(np.arange(1, 11), 0.5, n_quanta=10)
    np.testing.assert_allclose(
        loss_curve(np.arange(11), 0.5, n_quanta=10, delta=2.0),
        2.0 * np.concatenate([[1.0], 1 - np.cumsum(p)]),
        atol=1e-12,
    )


@pytest.mark.parametrize("alpha", [0.2, 0.4, 0.7, 1.5])
def test_simulator_has_predicted_exponents(alpha):
    pred = predicted_exponents(alpha)
    n = simulate(alpha, kind="N", scales=np.geomspace(10, 1e4, 10))
    assert fit_power_law(n.scale, n.loss, offset=False).alpha == pytest.approx(pred["N"], abs=0.01)
    d = simulate(alpha, kind="D", scales=np.geomspace(1e4, 1e7, 10), seeds=3)
    mean = d.groupby("scale")["loss"].mean()
    fit = fit_power_law(mean.index.to_numpy(), mean.to_numpy(), offset=False)
    assert fit.alpha == pytest.approx(pred["D"], abs=0.01)
    s = simulate(alpha, kind="S", scales=np.geomspace(100, 1e5, 10), batch_size=100, seeds=3)
    mean = s.groupby("scale")["loss"].mean()
    fit = fit_power_law(mean.index.to_numpy(), mean.to_numpy(), offset=False)
    assert fit.alpha == pytest.approx(pred["S"], abs=0.01)
    # n learned vs D grows with slope 1/(α+1)
    counts = d.groupby("scale")["n_learned"].mean()
    slope = np.polyfit(np.log(counts.index), np.log(counts.to_numpy()), 1)[0]
    assert slope == pytest.approx(1 / (alpha + 1), abs=0.02)


def test_simulator_is_seeded():
    a = simulate(0.4, kind="D", scales=[1e4, 1e5], seed=3)
    b = simulate(0.4, kind="D", scales=[1e4, 1e5], seed=3)
    c = simulate(0.4, kind="D", scales=[1e4, 1e5], seed=4)
    assert a.equals(b) and not a.equals(c)


def test_finite_quanta_saturate():
    d = simulate(0.4, kind="D", scales=[1e8], n_quanta=50, seeds=1)
    assert d["n_learned"].item() == 50 and d["loss"].item() == 0.0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"kind": "X", "scales": [1]}, r"'kind' parameter of quanta.theory must be one of"),
        ({"kind": "N", "scales": [0, 1]}, r"'scales' parameter .* positive numbers"),
        ({"kind": "N", "scales": [1], "tau": 0}, r"'tau' parameter"),
    ],
)
def test_simulator_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        simulate(0.4, **kwargs)


def test_theory_command_writes_curves_and_exponents(tmp_path):
    import json

    from typer.testing import CliRunner

    from quanta.cli import app

    res = CliRunner().invoke(
        app, ["theory", "--alpha", "0.3,0.6", "--seeds", "2", "--out", str(tmp_path)]
    )
    assert res.exit_code == 0, res.output
    exps = json.loads((tmp_path / "theory.json").read_text())["exponents"]
    assert len(exps) == 6
    for e in exps:
        assert e["fitted"] == pytest.approx(e["predicted"], abs=0.01)
        assert e["n_learned_slope"] == pytest.approx(e["predicted_slope"], abs=0.02)
    assert (tmp_path / "theory.png").stat().st_size > 20_000
    bad = CliRunner().invoke(app, ["theory", "--alpha", "0.3,x", "--out", str(tmp_path / "b")])
    assert bad.exit_code == 2 and "--alpha takes numbers" in bad.output
    assert not (tmp_path / "b").exists()
