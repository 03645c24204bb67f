"""The unequal-capacity quantization model (issue 20) against independent oracles: a brute-force
knapsack over every subset, the equal-capacity simulator, and the closed forms of
docs/HYPOTHESIS.md checked on large simulated quanta sets."""

import itertools

import numpy as np
import pytest

from quanta.scaling import fit_power_law
from quanta.theory import (
    capacity_exponent,
    capacity_learned,
    capacity_loss,
    loss_curve,
    random_cost_prefactor,
    zipf_pk,
)


def _brute_force(p, c, budget):
    best = 0.0
    for r in range(len(p) + 1):
        for subset in itertools.combinations(range(len(p)), r):
            if sum(c[i] for i in subset) <= budget:
                best = max(best, sum(p[i] for i in subset))
    return best


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_exact_knapsack_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.ones(10))
    c = rng.integers(1, 6, 10)
    for budget in range(0, 20, 3):
        learned = capacity_learned(p, c, budget, method="exact")
        assert c[learned].sum() <= budget
        assert p[learned].sum() == pytest.approx(_brute_force(p, c, budget), abs=1e-12)
        greedy = capacity_learned(p, c, budget)
        assert c[greedy].sum() <= budget
        # Prefix greedy is within one quantum of the optimum (fractional-knapsack bound).
        assert p[learned].sum() - p.max() - 1e-12 <= p[greedy].sum() <= p[learned].sum() + 1e-12


def test_equal_costs_give_the_paper_model():
    p = zipf_pk(np.arange(1, 51), 0.5, n_quanta=50)
    budgets = np.arange(0, 51, 5)
    np.testing.assert_allclose(
        capacity_loss(p, np.full(50, 3.0), 3 * budgets),
        loss_curve(budgets, 0.5, n_quanta=50),
        atol=1e-12,
    )


def _tail_loss(alpha, costs, budgets):
    """L(B) on explicit quanta with ζ normalization; the mass past them counts as unlearned."""
    p = zipf_pk(np.arange(1, len(costs) + 1), alpha)
    return capacity_loss(p, costs, budgets) + (1.0 - p.sum())


@pytest.mark.parametrize(("alpha", "gamma"), [(0.4, 0.5), (0.4, 1.0), (0.8, 1.0)])
def test_power_law_costs_give_alpha_over_one_plus_gamma(alpha, gamma):
    n = 400_000
    costs = np.arange(1, n + 1, dtype=np.float64) ** gamma
    budgets = np.geomspace(1e3, 1e5, 8) * 10**gamma
    fit = fit_power_law(budgets, _tail_loss(alpha, costs, budgets), offset=False)
    assert fit.alpha == pytest.approx(capacity_exponent(alpha, gamma), abs=0.015)
    # and not the equal-capacity exponent α
    assert abs(fit.alpha - alpha) > 0.1


@pytest.mark.parametrize("alpha", [0.4, 0.8])
def test_random_costs_keep_alpha_and_move_the_prefactor(alpha):
    rng = np.random.default_rng(0)
    # A wide cost law, so that the greedy choice (c_eff) and a rank-order fill (mean cost)
    # differ by well over the tolerance.
    costs = rng.choice([1.0, 10.0], 400_000)
    budgets = np.geomspace(1e4, 1e5, 6)
    loss = _tail_loss(alpha, costs, budgets)
    assert fit_power_law(budgets, loss, offset=False).alpha == pytest.approx(alpha, abs=0.02)
    pred = random_cost_prefactor(alpha, [1.0, 10.0])
    np.testing.assert_allclose(loss, pred["loss_coefficient"] * budgets**-alpha, rtol=0.04)
    # cheaper than the mean cost: cheap quanta are taken first
    assert 1.0 < pred["c_eff"] < 0.8 * pred["mean_cost"]


def test_bad_costs_refused():
    with pytest.raises(ValueError, match=r"'costs' parameter of quanta\.theory must be positive"):
        capacity_learned([0.5, 0.5], [1.0, 0.0], 1.0)
    with pytest.raises(ValueError, match="must be integers for method='exact'"):
        capacity_learned([0.5, 0.5], [1.5, 1.0], 2.0, method="exact")
