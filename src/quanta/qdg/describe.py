"""One-line descriptions of QDG clusters, so a person can name the largest at a glance.

A cluster is described by its most common predicted token(s), each with its share of the
cluster, and the most common token right before the predicted one::

    'self' (75%), after '.' (75%)
    ' (' (40%) or ')' (25%), after '\\n' (30%)

Tokens are quoted with :func:`repr`, so spaces, tabs and newlines stay visible.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from quanta._validation import QuantaInputError, check_int, check_real

__all__ = ["describe_cluster"]

_OWNER = "describe_cluster"


def _ranked(items: Sequence[str]) -> list[tuple[str, int]]:
    """``(token, count)``, most common first; ties in code-point order of the token text."""
    return sorted(Counter(items).items(), key=lambda kv: (-kv[1], kv[0]))


def describe_cluster(
    tokens: Sequence[str],
    previous: Sequence[str],
    *,
    cover: float = 0.5,
    max_tokens: int = 3,
) -> str:
    """One line naming a cluster from its members' predicted tokens and the tokens before them.

    Parameters
    ----------
    tokens : sequence of str
        The decoded predicted token of every member (one entry per sample).
    previous : sequence of str
        The decoded token right before each predicted token (same length).
    cover : float, default 0.5
        Predicted tokens are listed, most common first, until together they make at least this
        share of the cluster (at most ``max_tokens``).
    max_tokens : int, default 3

    Returns
    -------
    str
        ``"'tok' (share)[ or 'tok2' (share)…], after 'prev' (share)"``; shares are of the whole
        cluster, in whole percent. Ties in count go to the token that sorts first
        (code-point order of the decoded text), so the text is a function of the multiset of
        members alone. An empty cluster is ``"(empty)"``.

    Examples
    --------
    >>> describe_cluster(["self", "self", "self", "x"], [".", ".", ".", "("])
    "'self' (75%), after '.' (75%)"
    >>> print(describe_cluster(["(", ")", "(", "]", "\\n"], [" ", "a", "b", "c", "d"]))
    '(' (40%) or '\\n' (20%), after ' ' (20%)
    """
    cover = check_real(cover, "cover", _OWNER, low=0.0, high=1.0)
    max_tokens = check_int(max_tokens, "max_tokens", _OWNER, low=1)
    if len(tokens) != len(previous):
        raise QuantaInputError(
            f"{_OWNER}: {len(tokens)} predicted tokens but {len(previous)} previous tokens."
        )
    n = len(tokens)
    if n == 0:
        return "(empty)"
    shown, covered = [], 0
    for token, count in _ranked(tokens)[:max_tokens]:
        shown.append(f"{token!r} ({100 * count / n:.0f}%)")
        covered += count
        if covered >= cover * n:
            break
    before, count = _ranked(previous)[0]
    return f"{' or '.join(shown)}, after {before!r} ({100 * count / n:.0f}%)"
