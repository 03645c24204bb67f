import numpy as np
import pytest

from quanta.scaling import fit_power_law, fit_power_laws


@pytest.mark.parametrize("alpha", [0.08, 0.4, 1.3, 3.0])
@pytest.mark.parametrize("c0", [0.0, 0.05, 1.7])
def test_recovers_planted_exponent_exactly(alpha, c0):
    x = np.geomspace(10, 1e5, 9)
    fit = fit_power_law(x, c0 + 2.5 * x**-alpha)
    assert fit.success, fit.message
    assert fit.alpha == pytest.approx(alpha, abs=1e-6)
    assert fit.c0 == pytest.approx(c0, abs=1e-6)
    assert fit.c1 == pytest.approx(2.5, rel=1e-5)
    np.testing.assert_allclose(fit.predict(x), c0 + 2.5 * x**-alpha, rtol=1e-6)


def test_pure_power_law_is_the_papers_loglog_ols():
    rng = np.random.default_rng(0)
    x = np.geomspace(1e3, 1e6, 7)
    y = 3 * x**-0.3 * np.exp(rng.normal(0, 0.05, 7))
    fit = fit_power_law(x, y, offset=False)
    slope, intercept = np.polyfit(np.log(x), np.log(y), 1)
    assert fit.alpha == pytest.approx(-slope, rel=1e-10)
    assert fit.c1 == pytest.approx(np.exp(intercept), rel=1e-10)


def test_bootstrap_intervals_cover_truth_at_nominal_rate():
    # 150 noisy curves, each fitted with a 95% residual-bootstrap interval; seeded, so the
    # coverage is a fixed number: it must sit near 0.95 (tolerance: 0.85 to 0.99).
    rng = np.random.default_rng(1)
    x = np.geomspace(10, 1e4, 12)
    covered = 0
    for i in range(150):
        y = (0.2 + 3 * x**-0.5) * np.exp(rng.normal(0, 0.02, x.size))
        fit = fit_power_law(x, y, bootstrap=200, seed=i)
        assert fit.success and fit.alpha_ci is not None
        covered += fit.alpha_ci[0] <= 0.5 <= fit.alpha_ci[1]
    assert 0.85 <= covered / 150 <= 0.99


def test_huber_resists_an_outlier():
    x = np.geomspace(10, 1e4, 10)
    y = 0.1 + 2 * x**-0.6
    y[6] *= 2.5  # one broken point
    plain = fit_power_law(x, y)
    robust = fit_power_law(x, y, loss="huber")
    assert abs(robust.alpha - 0.6) < 0.02 < abs(plain.alpha - 0.6)


def test_failures_are_reported_not_returned_as_numbers():
    x = np.geomspace(10, 1e4, 6)
    rising = fit_power_law(x, 1 + 0.1 * np.log(x))
    assert not rising.success and "no decreasing power law" in rising.message
    steep = fit_power_law(x, 0.5 + 1e10 * x**-12.0, alpha_bounds=(1e-3, 10.0))
    assert not steep.success and "search bound" in steep.message


def test_vectorized_equals_one_by_one():
    rng = np.random.default_rng(2)
    x = np.geomspace(1e7, 1e10, 7)
    y = (1.5 + 40 * x[None] ** -rng.uniform(0.05, 0.6, (50, 1))) * np.exp(
        rng.normal(0, 0.01, (50, 7))
    )
    many = fit_power_laws(x, y)
    for i in (0, 17, 49):
        one = fit_power_law(x, y[i])
        assert many["alpha"][i] == pytest.approx(one.alpha, rel=1e-9)


@pytest.mark.parametrize(
    ("x", "y", "match"),
    [
        ([1, 2, 3], [1, 0, 0.5], r"The 'y' parameter of fit_power_law must hold finite positive"),
        ([1, -2, 3], [1, 0.7, 0.5], r"The 'x' parameter .* finite positive .* \[-2\.0\]"),
        ([1, 2, 3], [1, np.nan, 0.5], r"'y' parameter .* finite positive"),
        ([1, 2], [1, 0.5], r"at least 3 points for 3 parameters\. Got 2 instead"),
        ([1, 2, 3], [1, 0.5], r"must have the same length\. Got shapes \(3,\) and \(2,\)"),
    ],
)
def test_bad_input(x, y, match):
    with pytest.raises(ValueError, match=match):
        fit_power_law(x, y)


def test_plot_returns_axes():
    x = np.geomspace(10, 1e4, 6)
    ax = fit_power_law(x, 0.1 + x**-0.5, bootstrap=50).plot()
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert ax.get_xscale() == "log" and any(t.startswith("α = 0.500 [") for t in texts)
