"""Testing the hypothesis: polygenic samples (stage toy-polygenic; issue 20, part 2).

The combination rules of :mod:`quanta.parity.combine` scored on a parity run whose samples are
partly OR/AND pairs of subtasks, read from ``toy/polygenic/polygenic/polygenic.json``.
"""

from __future__ import annotations

from typing import Any

from quanta.report import toolkit as tk
from quanta.report.context import RunContext

__all__ = ["polygenic"]

_DIR = "toy/polygenic/polygenic"
_LN2 = 0.6931471805599453  # L0, the loss of an unlearned subtask (nats)
_EQUATIONS = (
    "additive: L_ab = max(L_a + L_b − L0, 0); one-at-a-time: L_ab = min(L_a, L_b); "
    "independent: q = 1 − L/L0, OR q_ab = 1 − (1 − q_a)(1 − q_b), AND q_ab = q_a·q_b, "
    "L_ab = L0·(1 − q_ab); bottleneck: L_ab = max(L_a, L_b); L0 = ln 2"
)


def polygenic(ctx: RunContext) -> tk.Section:
    title = "Test 2: polygenic samples"
    miss = ctx.missing("toy-polygenic")
    data = ctx.json(f"{_DIR}/polygenic.json")
    if miss or data is None:
        body = [miss or tk.unreadable(f"{_DIR}/polygenic.json")]
    else:
        body = [
            _setup(data),
            ctx.figure(f"{_DIR}/polygenic.png", "L(N) measured vs each rule; best rule's points"),
            _scores(data),
            _verdicts(data),
            _reading(data),
        ]
    body.append(ctx.provenance(["toy-polygenic"], ["toy/polygenic"]))
    return tk.Section(title, body, "polygenic", level=3, nav="polygenic samples")


def _setup(data: dict[str, Any]) -> tk.Html:
    pairs = ", ".join(f"({p['a']}, {p['b']})" for p in data["pairs"])
    return tk.para(
        f"A parity run with a share {tk.num(data['polygenic'], 2)} of polygenic training "
        "samples: two control bits a ≠ b on (each from the Zipf marginals). OR samples "
        "(label = parity(S_a) = parity(S_b): either quantum suffices) and AND samples (label = "
        f"parity(S_a) XOR parity(S_b): both are needed), AND share "
        f"{tk.num(data['polygenic_and'], 2)}. Evaluated pairs: {pairs}. Each rule predicts a "
        "pair's loss from the same net's monogenic losses on a and b at the same width and "
        "step, with no free parameter: ",
        tk.code(_EQUATIONS),
        ". Scores are over every width × step × pair; ‘informative’ points are those where "
        "the rules disagree by more than 0.05 nats.",
    )


def _scores(data: dict[str, Any]) -> tk.Html:
    rows = [
        [
            r["kind"],
            r["rule"],
            tk.num(r["rmse_nats"], 4),
            tk.num(r["rmse_informative_nats"], 4),
            tk.num(r["loglik_per_point"]),
            tk.num(r["delta_aic"], 1),
            str(r["n_points"]),
        ]
        for r in data["scores"]
    ]
    header = ["kind", "rule", "RMSE (nats)", "RMSE, informative", "log-lik/point", "ΔAIC", "n"]
    return tk.table(header, rows, range(2, 7))


def _verdicts(data: dict[str, Any]) -> tk.Html:
    rows = [
        [
            v["kind"],
            tk.bold(v["best"]),
            v["runner_up"],
            tk.num(v["rmse_best_nats"], 4),
            tk.num(v["rmse_ratio"]),
            tk.ci(v["ratio_ci_low"], v["ratio_ci_high"]),
            tk.num(v["best_share"], 2),
            str(v["n_pairs"]),
        ]
        for v in data["verdicts"]
    ]
    header = ["kind", "best", "runner-up", "best RMSE", "ratio", "95% CI", "best share", "pairs"]
    return tk.table(header, rows, range(3, 8))


def _reading(data: dict[str, Any]) -> tk.Html:
    """What the numbers say, computed from them: the best rule, whether it fits at all (its
    RMSE against the loss scale L0), and where the measured L(N) sits against the rules."""
    parts, least_bad = [], False
    widest = max(s["width"] for s in data["scaling"])
    last = {
        (r["kind"], r["series"]): r["loss_nats"] for r in data["scaling"] if r["width"] == widest
    }
    for v in data["verdicts"]:
        kind, best = v["kind"], v["best"]
        share = v["rmse_best_nats"] / _LN2
        quality = (
            "fits" if share < 0.1 else "fits roughly" if share <= 0.25 else "is only the least bad"
        )
        least_bad |= share > 0.25
        resolved = v["ratio_ci_low"] > 1
        margin = (
            f"{tk.num(v['rmse_ratio'])}× better than {v['runner_up']}"
            if resolved
            else f"not resolved from {v['runner_up']} (RMSE ratio {tk.num(v['rmse_ratio'])})"
        )
        measured, predicted = last.get((kind, "measured")), last.get((kind, best))
        tail = (
            f" At the largest width (w = {widest}) the measured mean loss is {tk.num(measured)} "
            f"nats, {best} predicts {tk.num(predicted)}."
            if measured is not None and predicted is not None
            else ""
        )
        parts.append(
            f"{kind.upper()}: {best} {quality} (RMSE {tk.num(v['rmse_best_nats'])} nats = "
            f"{tk.num(100 * share, 1)}% of ln 2), {margin} (95% CI "
            f"{tk.ci(v['ratio_ci_low'], v['ratio_ci_high'])} over {v['n_pairs']} pairs).{tail}"
        )
    if least_bad:
        parts.append(
            "Where the best rule is only the least bad, the result is null for all four rules: "
            "those samples behave as a quantum of their own (learned at their own scale), not "
            "as a combination of the monogenic quanta."
        )
    return tk.para(" ".join(parts))
