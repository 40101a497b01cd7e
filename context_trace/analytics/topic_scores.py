"""
How close a clustering is to known labels (NMI, ARI): the topics' tests and
benchmarks measure :func:`~.topics.fit` with it; importable from ``topics``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt


def clustering_scores(
    truth: Sequence[Any], found: Sequence[Any]
) -> tuple[float, float]:
    """
    (NMI, ARI) of a clustering *found* against labels *truth*.

    NMI with the arithmetic mean of the entropies (scikit-learn's default);
    ARI as Hubert and Arabie's adjusted Rand index.
    """
    if len(truth) != len(found):
        raise ValueError("truth and found must have the same length")
    n = len(truth)
    if n == 0:
        return 1.0, 1.0
    _, t = np.unique(np.asarray([str(x) for x in truth]), return_inverse=True)
    _, f = np.unique(np.asarray([str(x) for x in found]), return_inverse=True)
    table = np.zeros((int(t.max()) + 1, int(f.max()) + 1), dtype=np.float64)
    np.add.at(table, (t, f), 1.0)
    a = table.sum(axis=1)
    b = table.sum(axis=0)

    def entropy(p: npt.NDArray[np.float64]) -> float:
        p = p[p > 0] / n
        return float(-(p * np.log(p)).sum())

    nz = table > 0
    mi = float((table[nz] / n * np.log(table[nz] * n / np.outer(a, b)[nz])).sum())
    ht, hf = entropy(a), entropy(b)
    nmi = 1.0 if ht == hf == 0 else (mi / ((ht + hf) / 2) if ht + hf > 0 else 0.0)

    def pairs(x: npt.NDArray[np.float64]) -> float:
        return float((x * (x - 1) / 2).sum())

    index = pairs(table)
    expected = pairs(a) * pairs(b) / (n * (n - 1) / 2) if n > 1 else 0.0
    top = (pairs(a) + pairs(b)) / 2
    ari = 1.0 if top == expected else (index - expected) / (top - expected)
    return max(nmi, 0.0), ari
