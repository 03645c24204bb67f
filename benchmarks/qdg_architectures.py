"""QDG's losses, exact Gram matrix, sketch and parameter selection on every family of causal LM
in ``tests/archs.py`` (tiny models built from configs: no hub, no GPU), each against an
independent oracle from ``model(input_ids).logits`` — the closing-note table of issue 18.

Columns, per architecture:

- head: the path :func:`quanta.lm.head.resolve_head` chose ("chunked" or "full": the model's
  own forward, where its logits are not the plain output head).
- losses err: max |quanta lm losses − the loss from model(ids).logits in float64| (nats).
- Gram rel err: max |exact_gram − X Xᵀ| / max |X Xᵀ|, X the rows by plain ``torch.autograd.grad``
  of the loss from ``model(ids[: pos + 1]).logits`` (the same six tokens as the tests).
- output-head Gram err: the same for the output head applied to the last hidden state
  (the gradient path before issue 18), where it differs from the model's own logits.
- sketch: max |<Pa, Pb> − <a, b>| / (|a| |b|) over all pairs of a CountSketch of ``--k``
  coordinates, beside its 6σ bound 6 √(2 / k); "= CS(X)": max relative difference of the stored
  projections from the CountSketch of the oracle's rows.
- params: selected tensors (== the oracle: every Linear / Conv1D / Conv1d but the head, and
  Mamba's A_log, D) and excluded ones by kind.

Usage: python benchmarks/qdg_architectures.py [--k 256]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))


def _row(name: str, k: int, tmp: Path) -> dict[str, Any]:
    """One architecture's measurements (see the module docstring)."""
    import torch

    from archs import ARCHS, SAMPLES, build, linear_weights, naive_gradients, random_corpus
    from archs import reference_losses as model_losses
    from quanta.lm.head import HeadFallbackWarning, resolve_head
    from quanta.lm.losses import token_losses
    from quanta.qdg.grads import CountSketch, exact_gram, param_selection, per_token_gradients

    model, corpus = build(name), random_corpus(name)
    chosen, excluded = param_selection(model)
    names = [n for n, _ in chosen]
    x = naive_gradients(model, corpus, SAMPLES, names)
    want = (x @ x.T).numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", HeadFallbackWarning)
        head = resolve_head(model, corpus.doc(0))
        losses_err = np.abs(token_losses(model, corpus) - model_losses(model, corpus)).max()
        gram, _ = exact_gram(model, corpus, SAMPLES, block_params=997)
        per_token_gradients(model, corpus, SAMPLES, tmp / f"{name}.npy", projection_dim=k, seed=3)
    old = None
    if not ARCHS[name]:  # the plain output head, forced (what the gradients used to be)
        import quanta.lm.head as h

        full, h._full_logits = h._full_logits, h._chunked_logits
        try:
            stale, _ = exact_gram(model, corpus, SAMPLES, block_params=997, head="full")
        finally:
            h._full_logits = full
        old = np.abs(stale - want).max() / np.abs(want).max()
    got = torch.from_numpy(np.load(tmp / f"{name}.npy")).double()
    ref = CountSketch(x.shape[1], k, seed=3)(x)
    norms = x.norm(dim=1)
    return {
        "arch": name,
        "head": head,
        "losses err": float(losses_err),
        "Gram rel err": float(np.abs(gram - want).max() / np.abs(want).max()),
        "output-head Gram err": old,
        "sketch err": float(((got @ got.T - x @ x.T).abs() / torch.outer(norms, norms)).max()),
        "= CS(X)": float((got - ref).abs().max() / ref.abs().max()),
        "selected": f"{len(names)} {'==' if set(names) == linear_weights(model) else '!='} oracle",
        "excluded": ", ".join(f"{v} {c}" for v, c in sorted(Counter(excluded.values()).items())),
    }


def main() -> None:
    from archs import ARCHS

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--k", type=int, default=256, help="CountSketch size.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [_row(name, args.k, Path(tmp)) for name in ARCHS]
    bound = 6 * np.sqrt(2 / args.k)
    print(f"sketch bound 6·√(2/k) = {bound:.3f} (k = {args.k})")
    cols = list(rows[0])
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        cells = [
            "-" if v is None else f"{v:.1e}" if isinstance(v, float) else str(v) for v in r.values()
        ]
        print("| " + " | ".join(cells) + " |")
    worst = max(r["sketch err"] for r in rows)
    print(f"sketch consistent (every pair within the bound): {worst <= bound}")


if __name__ == "__main__":
    main()
