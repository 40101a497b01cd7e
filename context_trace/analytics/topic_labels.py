"""
A topic's label (see ``topics``): its group's words that are frequent in it
and rare elsewhere (class-based TF-IDF), stop words left out.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

_WORD = re.compile("[^\\W\\d_][\\w'\u2019-]*[^\\W_]|[^\\W\\d_]", re.UNICODE)
_STOP_WORDS = """
    a about above after again against all am an and any are as at be because been
    before being below between both but by can could did do does doing don't down
    during each few for from further get got had has have having he her here hers
    herself him himself his how i i'd i'll i'm i've if in into is it it's its itself
    just let let's like me more most my myself need no nor not now of off on once only
    or other our ours ourselves out over own please same she should so some such tell
    than that that's the their theirs them themselves then there these they this those
    through to too under until up very want was we were what what's when where which
    while who whom why will with would you you're your yours yourself yourselves
"""
_STOP = frozenset(_STOP_WORDS.split())


def _words(text: str) -> list[str]:
    words = _WORD.findall(text.lower().replace("\u2019", "'"))
    return [w for w in words if w not in _STOP and len(w) > 1]


def _terms(
    groups: Sequence[Sequence[str]], weights: Sequence[npt.NDArray[np.float64]],
    n: int = 3,
) -> list[tuple[str, ...]]:  # fmt: skip
    """Class-based TF-IDF: each group's words frequent in it and rare elsewhere."""
    counts: list[Counter[str]] = []
    for texts, w in zip(groups, weights, strict=True):
        c: Counter[str] = Counter()
        for text, weight in zip(texts, w.tolist(), strict=True):
            for word in set(_words(text)):
                c[word] += weight
        counts.append(c)
    total: Counter[str] = Counter()
    for c in counts:
        total.update(c)
    mean = sum(total.values()) / max(len(counts), 1)
    out = []
    for c in counts:
        size = sum(c.values()) or 1.0
        scored = sorted(
            c, key=lambda w: (-(c[w] / size) * math.log(1 + mean / total[w]), w)
        )
        out.append(tuple(scored[:n]))
    return out
