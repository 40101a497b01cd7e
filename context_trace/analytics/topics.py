"""
Topics: users' questions grouped by meaning, with no network and no model call.

How a model is fitted (:func:`fit`):

1. **Embed.** Each question becomes the mean of its tokens' static word
   embeddings (WordLlama ``l2_supercat``, 256 dimensions), normalised to unit
   length. The weights and the tokenizer ship inside the ``wordllama`` wheel
   and are read from its package directory; nothing is downloaded, and
   ``wordllama``'s own Python code (which would download a missing file) is
   never imported. Each word is tokenized once and kept
   (:meth:`Embedder.token_ids`: a text's tokens are its words' tokens).
2. **Sample.** At most ``sample_size`` questions take part in the fit: those
   whose text has the smallest hash, so the sample does not depend on the
   order of the data and mostly stays the same as the data grows.
3. **Cluster.** Average-linkage agglomerative clustering on cosine distance,
   cut where the mean distance between two groups' members would exceed
   ``max_distance`` (0.7: on average, a topic's questions have a cosine
   similarity of at least 0.3 with each other). The number of topics follows
   from the data: it is not given. A group of fewer than ``min_size`` sample
   questions is not a topic. ``n_topics`` overrides this: the tree is cut
   into that many groups instead, all of them kept.
4. **Assign.** Every question, in the sample or not, goes to the topic whose
   centroid (the normalised mean of its members) is nearest, if its cosine
   similarity to it is at least ``1 - max_distance``; else to the
   miscellaneous bucket (:data:`MISC`). New questions are assigned the same
   way (:meth:`TopicModel.assign`), so a re-fit and an incremental
   assignment agree.
5. **Label.** A topic's terms are its words with the highest class-based
   TF-IDF (frequent in the topic, rare in the others; ``topic_labels``); its
   question is the member nearest its centroid.
6. **Name.** A topic's id is derived from its representative question, so
   the same data gives the same ids. When a model is re-fitted, a new topic
   whose centroid is close to an old one's (cosine similarity of at least
   :data:`KEEP_ID_SIMILARITY`) keeps the old id.

The same data (the same questions, in any order) gives the same topics.
:func:`clustering_scores` (NMI, ARI; in ``topic_scores``) measures a fit.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from .topic_embed import Embedder, Vectors, _normalise, embed
from .topic_labels import _terms
from .topic_scores import clustering_scores

__all__ = [
    "EMBEDDER",
    "KEEP_ID_SIMILARITY",
    "MISC",
    "Embedder",
    "Topic",
    "TopicModel",
    "clustering_scores",
    "embed",
    "fit",
    "turn_question",
]

# The miscellaneous bucket's id: questions near no topic.
MISC = "misc"
# What the vectors are: stored with a model, so a model made with other
# embeddings is never used to assign new questions.
EMBEDDER = "wordllama-l2_supercat-256"
# A re-fitted topic keeps the id of an old topic at least this similar.
KEEP_ID_SIMILARITY = 0.8


def turn_question(messages: Sequence[Sequence[Any]]) -> str:
    """
    A stored turn's own question: its last run of user messages, joined.

    *messages* are the stored rows (``[role, content, ...]``). A turn with no
    session keeps the history its prompt re-sent before the user's words, so
    only the last run of user messages is the user's own.
    """
    parts: list[str] = []
    for row in reversed(messages):
        if row and row[0] == "user":
            parts.append(str(row[1] or ""))
        elif parts:
            break
    return "\n".join(reversed(parts)).strip()


@dataclass(frozen=True)
class Topic:
    """
    One topic of a model.

    Attributes:
        id: Stable id (``t`` and 8 hex digits).
        terms: Its characteristic words, most characteristic first.
        question: The sample question nearest its centroid.
        size: Its questions in the fitted sample.
    """

    id: str
    terms: tuple[str, ...]
    question: str
    size: int

    @property
    def label(self) -> str:
        """Its terms, joined: ``"balance / checking / account"``."""
        return " / ".join(self.terms) if self.terms else self.question[:60]


@dataclass
class TopicModel:
    """
    Fitted topics: their labels and centroids, to assign new questions.

    Attributes:
        topics: The topics, the largest first.
        centroids: One unit row per topic, in the same order.
        min_similarity: A question less similar than this to every centroid
            goes to :data:`MISC`.
        embedder: Which embeddings the centroids are in (:data:`EMBEDDER`).
        fitted_on: How many questions the model was fitted from (the whole
            set, not only the sample).
        params: The fit's parameters, for the record.
    """

    topics: list[Topic]
    centroids: Vectors
    min_similarity: float
    embedder: str = EMBEDDER
    fitted_on: int = 0
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def ids(self) -> list[str]:
        return [t.id for t in self.topics]

    def assign_vectors(self, vectors: Vectors) -> npt.NDArray[np.int64]:
        """The topic index of each row (-1: miscellaneous)."""
        if not self.topics or len(vectors) == 0:
            return np.full(len(vectors), -1, dtype=np.int64)
        sims = vectors @ self.centroids.T
        best = sims.argmax(axis=1)
        ok = sims[np.arange(len(best)), best] >= self.min_similarity
        return np.where(ok, best, -1).astype(np.int64)

    def assign(self, questions: Sequence[str]) -> list[str]:
        """Each question's topic id, or :data:`MISC`."""
        ids = self.ids
        return [
            MISC if i < 0 else ids[i] for i in self.assign_vectors(embed(questions))
        ]

    def to_json(self) -> dict[str, Any]:
        """The model as JSON-ready data (centroids as lists of floats)."""
        return {
            "embedder": self.embedder,
            "min_similarity": self.min_similarity,
            "fitted_on": self.fitted_on,
            "params": self.params,
            "topics": [
                {
                    "id": t.id,
                    "terms": list(t.terms),
                    "question": t.question,
                    "size": t.size,
                }
                for t in self.topics
            ],
            "centroids": self.centroids.tolist(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TopicModel:
        """Reverse :meth:`to_json`."""
        topics = [
            Topic(t["id"], tuple(t["terms"]), t["question"], int(t["size"]))
            for t in data["topics"]
        ]
        centroids = np.asarray(data["centroids"], dtype=np.float32)
        # A model fitted on too few questions has no topics: (0, dim), as fitted.
        centroids = (
            centroids.reshape(len(topics), -1)
            if topics
            else np.zeros((0, 256), np.float32)
        )
        return cls(
            topics, centroids, float(data["min_similarity"]), data["embedder"],
            int(data["fitted_on"]), dict(data.get("params", {})),
        )  # fmt: skip


def _hash_key(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8", "replace"), digest_size=8).digest()


def fit(
    questions: Sequence[str],
    *,
    n_topics: int | None = None,
    max_distance: float = 0.7,
    min_size: int = 3,
    sample_size: int = 6000,
    previous: TopicModel | None = None,
) -> TopicModel:
    """
    Fit topics to *questions* (see the module's docstring for the method).

    Args:
        questions: The users' questions (see :func:`turn_question`).
        n_topics: Exactly this many topics instead of the number the data
            gives (the sample must hold at least as many distinct questions).
        max_distance: Where the clustering stops merging: the largest mean
            cosine distance between the members of two groups it merges,
            in (0, 2).
        min_size: The fewest sample questions a topic has (without
            ``n_topics``); smaller groups go to the miscellaneous bucket.
        sample_size: The most questions the clustering itself sees, at least
            ``n_topics`` and 2; the others are assigned to its topics.
        previous: The model this one replaces: its ids are kept for topics
            that stayed (see :data:`KEEP_ID_SIMILARITY`).

    Returns:
        The model; with no questions, or none with words, it has no topics.

    Raises:
        ValueError: If a parameter is out of range.
    """
    if n_topics is not None and (isinstance(n_topics, bool) or n_topics < 1):
        raise ValueError(
            f"n_topics must be a whole number of at least 1, got {n_topics!r}"
        )
    if not 0.0 < max_distance < 2.0:
        raise ValueError(f"max_distance must be in (0, 2), got {max_distance!r}")
    if isinstance(min_size, bool) or min_size < 1:
        raise ValueError(f"min_size must be at least 1, got {min_size!r}")
    if sample_size < max(2, n_topics or 0):
        raise ValueError(
            f"sample_size must be at least 2 and at least n_topics, got {sample_size!r}"
        )
    params = {"n_topics": n_topics, "max_distance": max_distance,
              "min_size": min_size, "sample_size": sample_size}  # fmt: skip
    min_similarity = 1.0 - max_distance
    empty = TopicModel([], np.zeros((0, 256), np.float32), min_similarity,
                       fitted_on=len(questions), params=params)  # fmt: skip
    # The sample: the distinct texts with the smallest hashes, each weighted
    # by how often it occurs (a question asked 50 times is one point).
    counts = Counter(q for q in questions if q.strip())
    texts = sorted(counts, key=lambda q: (_hash_key(q), q))[:sample_size]
    if len(texts) < 2:
        return empty
    vectors = embed(texts)
    keep = np.flatnonzero(np.linalg.norm(vectors, axis=1) > 0)
    texts = [texts[i] for i in keep]
    vectors = vectors[keep]
    weights = np.array([counts[t] for t in texts], dtype=np.float64)
    if len(texts) < max(2, n_topics or 0):
        return empty

    from scipy.cluster.hierarchy import fcluster, linkage

    tree = linkage(vectors.astype(np.float64), method="average", metric="cosine")
    if n_topics is not None:
        groups = fcluster(tree, n_topics, criterion="maxclust")
    else:
        groups = fcluster(tree, max_distance, criterion="distance")
    members: dict[int, list[int]] = {}
    for index, group in enumerate(groups.tolist()):
        members.setdefault(group, []).append(index)
    limit = 1 if n_topics is not None else min_size
    kept = [m for m in members.values() if weights[m].sum() >= limit]
    if not kept:
        return empty
    centroids = np.stack(
        [(vectors[m] * weights[m, None]).sum(axis=0) for m in kept]
    ).astype(np.float32)
    _normalise(centroids)
    # The sample's own questions, assigned as new ones would be: the members
    # a topic is labelled from are those it would be given.
    sims = vectors @ centroids.T
    best = sims.argmax(axis=1)
    near = sims[np.arange(len(best)), best] >= min_similarity
    owned = [np.flatnonzero((best == k) & near) for k in range(len(kept))]
    order = sorted(
        (k for k in range(len(kept)) if owned[k].size),
        key=lambda k: (-weights[owned[k]].sum(), texts[owned[k][0]]),
    )
    if not order:
        return empty
    terms = _terms([[texts[i] for i in owned[k]] for k in order],
                   [weights[owned[k]] for k in order])  # fmt: skip
    topics: list[Topic] = []
    for rank, k in enumerate(order):
        mine = owned[k]
        closest = mine[
            np.lexsort((np.array([texts[i] for i in mine]), -sims[mine, k]))[0]
        ]
        question = texts[closest]
        topics.append(
            Topic(_topic_id(question), terms[rank], question[:200],
                  int(weights[mine].sum()))
        )  # fmt: skip
    model = TopicModel(
        topics, np.ascontiguousarray(centroids[order]), min_similarity,
        fitted_on=len(questions), params=params,
    )  # fmt: skip
    _name(model, previous)
    return model


def _topic_id(question: str) -> str:
    return (
        "t"
        + hashlib.blake2b(
            question.encode("utf-8", "replace"), digest_size=4
        ).hexdigest()
    )


def _name(model: TopicModel, previous: TopicModel | None) -> None:
    """Give *model*'s topics *previous*'s ids where they match; unique ids."""
    ids = [t.id for t in model.topics]
    if previous is not None and previous.topics and previous.embedder == model.embedder:
        sims = model.centroids @ previous.centroids.T
        pairs = sorted(
            (
                (float(sims[i, j]), i, j)
                for i, j in zip(*np.nonzero(sims >= KEEP_ID_SIMILARITY), strict=True)
            ),
            key=lambda p: (-p[0], p[1], p[2]),
        )
        new_used: set[int] = set()
        old_used: set[int] = set()
        for _, i, j in pairs:
            if i not in new_used and j not in old_used:
                new_used.add(i)
                old_used.add(j)
                ids[i] = previous.topics[j].id
        reserved = {previous.topics[j].id for j in old_used}
        for i in range(len(ids)):
            if i not in new_used and ids[i] in reserved:
                ids[i] = ids[i] + "x"
    seen: set[str] = set()
    for i, topic_id in enumerate(ids):
        unique, n = topic_id, 1
        while unique in seen:
            n += 1
            unique = f"{topic_id}-{n}"
        seen.add(unique)
        ids[i] = unique
    model.topics = [
        Topic(i, t.terms, t.question, t.size)
        for i, t in zip(ids, model.topics, strict=True)
    ]


def load_questions(rows: Iterable[str]) -> list[str]:
    """The question of each stored turn, from its ``messages_json`` text."""
    return [turn_question(json.loads(text)) for text in rows]
