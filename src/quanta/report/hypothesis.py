"""Testing the hypothesis (beyond the paper): the source's next checks (PAPER.md §6), each a
section after this one. This intro says what each test asks and links to it; a test whose stage
is not in the preset is named as such. The tests' sections use the anchors of :data:`TESTS`."""

from __future__ import annotations

from quanta.report import toolkit as tk
from quanta.report.context import RunContext

__all__ = ["TESTS", "hypothesis"]

#: ``(anchor of its section, its stage, its name, the question)`` of each test, in page order.
TESTS = (
    (
        "universality",
        "qdg-universality",
        "Universality (next check 1, cross-model quantum stability)",
        "Do models of other sizes, init seeds or data orders, trained on the same data, find "
        "the same quanta? QDG on each, compared on the same tokens against two nulls and a "
        "ceiling.",
    ),
    (
        "polygenic",
        "toy-polygenic",
        "Polygenic samples (next check 2)",
        "When a sample draws on several quanta, does its loss fall as the additive model says "
        "(several quanta lower it together), one quantum at a time, or independently in "
        "probability? Each rule fitted to per-sample loss curves.",
    ),
    (
        "capacity",
        "toy-capacity",
        "Quanta of unequal capacity (next check 3)",
        "The model assumes every quantum costs the same parameters. With subtasks that differ "
        "in cost as well as frequency: is the learning order set by frequency or by cost, and "
        "does L(N) follow the heterogeneous-capacity prediction?",
    ),
    (
        "domino",
        "toy-domino",
        "Size beyond capacity (open question 1)",
        "Model size seems to act beyond capacity (α_N < α at small α, > α at large α). Is a "
        "subtask's learning delayed until more frequent ones are done (a domino), at matched "
        "steps and at convergence?",
    ),
)


def hypothesis(ctx: RunContext) -> tk.Section:
    items = []
    for anchor, stage, name, question in TESTS:
        head = tk.link(f"#{anchor}", name) if ctx.planned(stage) else tk.esc(name)
        where = "" if ctx.planned(stage) else f" (stage {stage} is not in this preset)"
        items.append(tk.text(tk.bold(head), where, ": ", question))
    blocks = [
        tk.para(
            "The paper reproduced, its hypothesis put to the test: the source names the "
            "hypothesis's break conditions (the learning order not set by use frequency, quanta "
            "needing different capacities, …) and proposes next checks that no published "
            "number answers; ours are the first. A null result is a result: each test reports "
            "its measurement beside what chance, and what an untrained or a perfectly "
            "repeatable model, would give."
        ),
        tk.bullets(items, ordered=True),
    ]
    return tk.Section(
        "Testing the hypothesis (beyond the paper)",
        blocks,
        "hypothesis",
        nav="Testing the hypothesis",
    )
