"""The page's head: title, run directory and versions, the paper, and the stage table (every
stage of the plan, its status, seconds and commands)."""

from __future__ import annotations

import time

from quanta.report import toolkit as tk
from quanta.report.context import RunContext

__all__ = ["header"]


def _stage_rows(ctx: RunContext) -> tuple[list[list[str]], float]:
    """One row per planned stage, and the total seconds of the recorded ones."""
    rows: list[list[str]] = []
    total = 0.0
    for s in ctx.plan:
        r = ctx.stages.get(s.name)
        state = "not run" if r is None else str(r.get("status"))
        kind = {"done": "ok", "failed": "bad"}.get(state, "skip")
        secs = float(r.get("seconds", 0.0)) if r else 0.0
        total += secs
        cmds = tk.lines(tk.code(c) for c in (r or {}).get("commands", []))
        note = str(r.get("message", "")) if r and state != "done" else ""
        status = tk.text(tk.status(state, kind), " ", tk.esc(note))
        rows.append([s.name, s.title, status, f"{secs:,.1f}" if r else "—", cmds])
    return rows, total


def header(ctx: RunContext) -> tk.Html:
    """The head of the page (not a numbered section, not in the contents)."""
    env = ctx.manifest.get("environment", {})
    git = f" · git {str(env['git_revision'])[:12]}" if env.get("git_revision") else ""
    versions = ", ".join(
        f"{k} {v}" for k, v in (env.get("packages") or {}).items() if k in {"quanta", "torch"}
    )
    rows, total = _stage_rows(ctx)
    return tk.join(
        tk.heading(1, "The Quantization Model of Neural Scaling — reproduction report"),
        tk.para(
            "Preset ",
            tk.bold(ctx.preset),
            " · directory ",
            tk.code(ctx.out),
            " · report written ",
            tk.esc(time.strftime("%Y-%m-%d %H:%M")),
            " · ",
            tk.esc(versions),
            tk.esc(git),
            cls="meta",
        ),
        tk.para(
            "Michaud, Liu, Girit & Tegmark, ",
            tk.italic("The Quantization Model of Neural Scaling"),
            ", NeurIPS 2023 (arXiv:2303.13506). Every number below is computed from this "
            "directory; each section lists the command and config that produced it.",
        ),
        tk.table(["stage", "what", "status", "seconds", "command"], rows, {3}),
        tk.meta_line(f"Total stage time {total:,.0f} s."),
    )
