"""QDG step 1 (PAPER.md §4): the tokens whose gradients are clustered.

Tokens a chosen model predicts confidently (loss below a threshold), minus tokens predictable by
induction — the trigram ``(t[pos−2], t[pos−1], t[pos])`` ending at the token already occurred
earlier in the same document — subsampled to ``n`` samples, every ``every``-th or at random
(seeded). Vectorized: the induction test is one hash-based duplicate search over
``(document, trigram)`` keys, not a Python loop over tokens.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from quanta._validation import QuantaInputError, check_int, check_real
from quanta.lm.corpus import TokenizedCorpus

__all__ = ["induction_mask", "select_tokens"]

_OWNER = "quanta qdg select"


def induction_mask(corpus: TokenizedCorpus) -> np.ndarray:
    """Per index row: True where the trigram ending at the predicted token occurred earlier
    in the same document (the token is predictable by induction).

    >>> c = TokenizedCorpus(np.array([1, 2, 3, 1, 2, 3, 9], np.int32), np.array([0, 7]),
    ...                     ["d"], 1024, False)
    >>> induction_mask(c).astype(int).tolist()  # rows are pos 1..6
    [0, 0, 0, 0, 1, 0]
    """
    index = corpus.index_table()
    flat = corpus.offsets[index["doc_id"].to_numpy()] + index["pos"].to_numpy()
    has = index["pos"].to_numpy() >= 2
    tokens = corpus.tokens.astype(np.int64)
    vocab = int(tokens.max()) + 1
    key = np.full(len(index), -1, dtype=np.int64)
    f = flat[has]
    key[has] = (tokens[f - 2] * vocab + tokens[f - 1]) * vocab + tokens[f]
    frame = pd.DataFrame({"doc": index["doc_id"].to_numpy(), "key": key})
    repeated = frame.duplicated(keep="first").to_numpy()  # rows are in (doc, pos) order
    return repeated & has


def select_tokens(
    corpus: TokenizedCorpus,
    losses: np.ndarray,
    *,
    threshold: float = 0.1,
    induction: bool = True,
    n: int = 10_000,
    every: int | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """Rows to cluster: ``row, doc_id, pos, token_id, loss`` (sorted by row).

    ``losses`` is one model's per-token losses (index order). With ``every`` set, every
    ``every``-th eligible token is kept (the paper used 50), then the first ``n``; otherwise
    ``n`` are drawn at random without replacement with ``seed``.
    """
    threshold = check_real(threshold, "threshold", _OWNER, low=0.0, low_open=True)
    n = check_int(n, "n", _OWNER, low=1)
    losses = np.asarray(losses)
    if losses.shape != (corpus.n_predicted,):
        raise QuantaInputError(
            f"{_OWNER}: {losses.shape[0]} losses for {corpus.n_predicted} predicted tokens."
        )
    keep = losses < threshold
    n_confident = int(keep.sum())
    if induction:
        keep &= ~induction_mask(corpus)
    rows = np.flatnonzero(keep)
    if len(rows) == 0:
        raise QuantaInputError(
            f"No token is left to select: {n_confident} tokens have loss < {threshold:g} nats"
            + (", and all of those are predictable by induction" if n_confident else "")
            + "; raise --threshold or use a larger corpus or model."
        )
    if every is not None:
        rows = rows[:: check_int(every, "every", _OWNER, low=1)][:n]
    elif len(rows) > n:
        rows = np.sort(np.random.default_rng(seed).choice(rows, size=n, replace=False))
    index = corpus.index_table().iloc[rows]
    return index.assign(loss=losses[rows]).reset_index(drop=True)
