"""Testing the hypothesis: quanta of unequal capacity (issue 20, part 3; stage toy-capacity).
Subtasks of different parity size k_i (cost c_i = k_i hidden units) and Zipf frequency p_i:
the order in which they are learned against both, and the unlearned mass per width against
the knapsack model of docs/HYPOTHESIS.md, unequal costs vs equal ones."""

from __future__ import annotations

from typing import Any

from quanta.report import toolkit as tk
from quanta.report.context import RunContext

__all__ = ["capacity", "capacity_reading"]

_DIR = "toy/capacity/capacity"


def capacity(ctx: RunContext) -> tk.Section:
    title = "Test 3: quanta of unequal capacity"
    return tk.Section(title, _blocks(ctx), "capacity", level=3, nav="unequal capacity")


def capacity_reading(data: dict[str, Any]) -> str:
    """Honest sentences on the order verdict and on which cost model fits L(N) better."""
    o, pred = data["order"], data["prediction"]
    if o["verdict"] == "undetermined":
        head = (
            f"At width {o['width']} only {o['n_learned']} subtasks were learned: too few to say "
            "what the order follows."
        )
    else:
        head = (
            f"At width {o['width']} the learning order follows {o['verdict']}: log t = "
            f"{tk.num(o['a'], 2)} log p + {tk.num(o['b'], 2)} log c explains R² = "
            f"{tk.num(o['r2_joint'], 2)} of the learned steps (frequency alone "
            f"{tk.num(o['r2_p'], 2)}, cost alone {tk.num(o['r2_cost'], 2)}; {o['n_learned']} "
            f"learned, {o['n_censored']} never). Rank correlation of the order with p_i "
            f"{tk.num(o['spearman_p'], 2)}, with the cost {tk.num(o['spearman_cost'], 2)}, with "
            f"p_i/c_i (the knapsack's greedy order) {tk.num(o['spearman_ratio'], 2)}."
        )
    u, e = pred["unequal"]["rmse"], pred["equal"]["rmse"]
    if u is None or e is None:
        fit = "The knapsack fits could not be compared."
    elif abs(u - e) < 0.25 * max(u, e):  # one fitted constant, a handful of widths
        fit = (
            f"The knapsack with the true costs and the one with equal costs fit the unlearned "
            f"mass about equally (rmse {tk.num(u)} vs {tk.num(e)}): at this scale the data do "
            "not distinguish them."
        )
    else:
        better, worse = ("unequal", "equal") if u < e else ("equal", "unequal")
        fit = (
            f"The knapsack with {better} costs fits the unlearned mass better (rmse "
            f"{tk.num(min(u, e))} vs {tk.num(max(u, e))} for {worse} costs)."
        )
    missed = pred["unequal"]["missed"][-1]
    limited = (
        f" The widest net misses {missed} subtasks the fitted knapsack says it could hold: "
        "there, training time rather than capacity limits what is learned. Caveat: a larger k "
        "costs both capacity (about k units) and optimization (steps grow roughly like n^(k-1)), "
        "so the cost coefficient b mixes the two."
        if missed > 0
        else " Caveat: a larger k costs both capacity and optimization time, so the cost "
        "coefficient b mixes the two."
    )
    return f"{head} {fit}{limited}"


def _blocks(ctx: RunContext) -> list[str]:
    miss = ctx.missing("toy-capacity")
    data = ctx.json(f"{_DIR}/capacity.json")
    if miss or data is None:
        return [miss or tk.unreadable(f"{_DIR}/capacity.json")]
    s = data["settings"]
    intro = tk.para(
        "The quantization model gives every quantum the same capacity. Here subtask i is a "
        "k_i-sparse parity (k_i ∈ ",
        tk.esc(sorted(set(s["k_per_task"]))),
        f", order {s['k_order']}) with frequency p_i ∝ (i+1)^-(α+1), α = {s['alpha']:g}; a "
        "k-parity is built from about k hidden units, so its cost is c_i = k_i. Learned step = "
        f"first evaluation with test loss below {s['threshold_nats']:g} nats. The model's "
        "prediction (docs/HYPOTHESIS.md): a net of width w learns the set maximizing Σ p_i under "
        "Σ c_i ≤ w/C (a knapsack, greedy by p_i/c_i), one constant C fitted per cost model; "
        "costs independent of rank keep α_N = α and act as one effective cost c_eff = "
        f"{tk.num(data['prediction']['closed_form'].get('c_eff'), 2)} (mean "
        f"{tk.num(data['prediction']['closed_form'].get('mean_cost'), 2)}).",
    )
    pred = data["prediction"]
    rows, header = _table(data)
    fits = tk.meta_line(
        f"fitted C: {tk.num(pred['unequal']['C'], 3)} (c_i = k_i, rmse "
        f"{tk.num(pred['unequal']['rmse'])}), {tk.num(pred['equal']['C'], 3)} (equal costs, "
        f"rmse {tk.num(pred['equal']['rmse'])}) hidden units per unit of cost"
    )
    return [
        intro,
        ctx.figure(f"{_DIR}/capacity.png", "learned step vs p_i by cost; unlearned mass vs width"),
        tk.table(header, rows, {1, 2, 3, 4, 5, 6}),
        fits,
        tk.para(tk.bold("Reading:"), " ", tk.esc(capacity_reading(data))),
        ctx.provenance(["toy-capacity"], ["toy/capacity"]),
    ]


def _table(data: dict[str, Any]) -> tuple[list[list[str]], list[str]]:
    """One row per width: learned, unlearned mass observed and predicted, order statistics."""
    pred = data["prediction"]
    rows = [
        [
            str(r["width"]),
            str(r["n_learned"]),
            tk.num(r["unlearned_mass"]),
            tk.num(pu),
            tk.num(pe),
            tk.num(r["spearman_p"], 2),
            tk.num(r["spearman_cost"], 2),
            f"{tk.num(r['jaccard_p'], 2)} / {tk.num(r['jaccard_inv_cost'], 2)} / "
            f"{tk.num(r['jaccard_ratio'], 2)}",
        ]
        for r, pu, pe in zip(
            data["per_width"],
            pred["unequal"]["predicted_mass"],
            pred["equal"]["predicted_mass"],
            strict=True,
        )
    ]
    header = [
        "width",
        "learned",
        "unlearned mass",
        "knapsack, c_i = k_i",
        "knapsack, equal c",
        "ρ(order, p)",
        "ρ(order, c)",
        "Jaccard vs top by p / 1/c / p/c",
    ]
    return rows, header
