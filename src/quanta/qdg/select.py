"""QDG step 1 (PAPER.md §4): the tokens whose gradients are clustered.

Tokens a chosen model predicts confidently (loss below a threshold), minus tokens predictable by
induction — the trigram ``(t[pos−2], t[pos−1], t[pos])`` ending at the token already occurred
earlier in the same document — subsampled to ``n`` samples, every ``every``-th or at random
(seeded). Vectorized: the induction test is one hash-based duplicate search over
``(document, trigram)`` keys, not a Python loop over tokens.

The threshold is the paper's 0.1 nats unless told otherwise, and a run never changes it
silently: :func:`choose_threshold` either keeps it (enough tokens pass), refuses with the count
and the threshold that would do, or — asked with ``threshold="auto"`` — raises it to the
smallest value that yields ``min_samples`` tokens and says so in its :class:`ThresholdChoice`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from quanta._validation import QuantaInputError, check_int, check_real, param_error
from quanta.lm.corpus import TokenizedCorpus

__all__ = [
    "PAPER_THRESHOLD",
    "ThresholdChoice",
    "choose_threshold",
    "induction_mask",
    "select_tokens",
]

_OWNER = "quanta qdg select"
PAPER_THRESHOLD = 0.1  # nats: the paper's "confidently predicted" (PAPER.md §4)


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
    # In float64: a threshold from choose_threshold sits one float64 ulp above a stored loss,
    # which a float32 comparison would round away (NumPy 2 casts the Python float down).
    keep = losses.astype(np.float64) < threshold
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


@dataclass(frozen=True)
class ThresholdChoice:
    """The loss threshold a QDG run selects with, and why.

    Attributes
    ----------
    threshold : float
        The threshold used (nats); tokens with loss ``< threshold`` are kept.
    requested : float or "auto"
        What was asked for.
    rule : {"fixed", "paper", "raised"}
        ``paper``: the paper's 0.1 nats (given, or kept by ``auto``); ``fixed``: another
        number, as given; ``raised``: ``auto`` raised it because too few tokens pass 0.1 nats.
    n_passing : int
        Tokens that pass at ``threshold`` (after the induction filter and ``every``-thinning;
        before the cap at ``n``).
    n_passing_paper : int
        The same count at the paper's 0.1 nats.
    min_samples : int
    reason : str
        One sentence for manifests, browser and report.
    """

    threshold: float
    requested: float | str
    rule: str
    n_passing: int
    n_passing_paper: int
    min_samples: int
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def choose_threshold(
    corpus: TokenizedCorpus,
    losses: np.ndarray,
    *,
    threshold: float | str = PAPER_THRESHOLD,
    min_samples: int = 10,
    induction: bool = True,
    every: int | None = None,
) -> ThresholdChoice:
    """The selection threshold (nats) that yields at least ``min_samples`` tokens, or a refusal.

    A token passes at threshold ``t`` when its loss is ``< t``, it is not predictable by
    induction (if ``induction``), and it survives the ``every``-th thinning of the passing
    tokens in index order — exactly what :func:`select_tokens` keeps before its cap at ``n``.

    - ``threshold`` a number: used as given; fewer than ``min_samples`` passing tokens is a
      :class:`~quanta.QuantaInputError` naming the count and the threshold ``auto`` would use.
    - ``threshold="auto"``: the paper's 0.1 nats when at least ``min_samples`` tokens pass it;
      otherwise the smallest threshold that yields ``min_samples``: the next float64 above the
      loss of the ``r``-th smallest eligible token, ``r = (min_samples − 1)·every + 1``
      (``r = min_samples`` without thinning). Ties at that loss may let a few more pass.

    >>> c = TokenizedCorpus(np.arange(7, dtype=np.int32), np.array([0, 7]), ["d"], 1024, False)
    >>> L = np.array([0.05, 0.3, 0.2, 0.9, 0.4, 0.6])
    >>> ch = choose_threshold(c, L, threshold="auto", min_samples=3)
    >>> ch.rule, ch.n_passing_paper, ch.n_passing, ch.threshold == float(np.nextafter(0.3, 1))
    ('raised', 1, 3, True)
    """
    min_samples = check_int(min_samples, "min_samples", _OWNER, low=1)
    step = 1 if every is None else check_int(every, "every", _OWNER, low=1)
    auto = isinstance(threshold, str)
    if auto and threshold != "auto":
        raise param_error("threshold", _OWNER, "a float in the range (0, inf) or 'auto'", threshold)
    given = None if auto else check_real(threshold, "threshold", _OWNER, low=0.0, low_open=True)
    losses = np.asarray(losses)
    if losses.shape != (corpus.n_predicted,):
        raise QuantaInputError(
            f"{_OWNER}: {losses.shape[0]} losses for {corpus.n_predicted} predicted tokens."
        )
    eligible = losses[~induction_mask(corpus)] if induction else losses
    ranked = np.sort(eligible.astype(np.float64), kind="stable")

    def passing(t: float) -> int:  # ceil(#{loss < t} / every): what rows[::every] keeps
        return -(-int(np.searchsorted(ranked, t, side="left")) // step)

    need = (min_samples - 1) * step + 1  # eligible tokens below t for min_samples after thinning
    raised = float(np.nextafter(ranked[need - 1], np.inf)) if need <= len(ranked) else None
    n_paper = passing(PAPER_THRESHOLD)
    filters = ("not predictable by induction" if induction else "no induction filter") + (
        f", thinned to 1 in {step}" if step > 1 else ""
    )
    if given is not None:
        t = given
        count = passing(t)
        if count < min_samples:
            raise _too_few(t, count, min_samples, filters, raised, len(ranked))
        rule = "paper" if t == PAPER_THRESHOLD else "fixed"
        reason = f"loss < {t:g} nats" + (" (the paper's)" if rule == "paper" else " (as given)")
        return ThresholdChoice(t, t, rule, count, n_paper, min_samples, f"{reason}, {filters}")
    if n_paper >= min_samples:
        reason = f"loss < {PAPER_THRESHOLD:g} nats (the paper's), {filters}"
        return ThresholdChoice(
            PAPER_THRESHOLD, "auto", "paper", n_paper, n_paper, min_samples, reason
        )
    if raised is None:
        raise QuantaInputError(
            f"Only {n_paper} tokens pass the paper's loss < {PAPER_THRESHOLD:g} nats ({filters}) "
            f"and only {len(ranked)} tokens are eligible at any threshold; --min-samples "
            f"{min_samples} needs more documents, or lower --min-samples."
        )
    reason = (
        f"loss < {raised:.4g} nats, {filters}: raised from the paper's {PAPER_THRESHOLD:g} "
        f"(which only {n_paper} tokens pass) to the smallest threshold that yields "
        f"--min-samples {min_samples}"
    )
    return ThresholdChoice(raised, "auto", "raised", passing(raised), n_paper, min_samples, reason)


def _too_few(
    t: float, count: int, min_samples: int, filters: str, raised: float | None, n_eligible: int
) -> QuantaInputError:
    """The refusal of a given threshold ``t`` that only ``count`` tokens pass, with the way out:
    ``auto``'s raised threshold, or ``--min-samples`` (or more documents)."""
    hint = (
        f"pass --threshold auto to raise it to {raised:.4g} nats, the smallest that "
        f"yields {min_samples}"
        if raised is not None
        else f"only {n_eligible} tokens are eligible at any threshold: use more documents"
    )
    keep = (
        f", or pass --min-samples {count} to keep this threshold with fewer samples"
        if count >= 10  # QDG's floor (run_qdg)
        else ""
    )
    return QuantaInputError(
        f"Only {count} tokens pass loss < {t:g} nats ({filters}); --min-samples asks "
        f"for {min_samples}: {hint}{keep}."
    )
