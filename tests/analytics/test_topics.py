"""The topic engine: quality on a small labelled set, determinism, assignment, ids."""

from __future__ import annotations

import csv
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from context_trace.analytics import topics
from context_trace.analytics.topics import MISC

FIXTURE = Path(__file__).with_name("intents.csv")


def _labelled() -> tuple[list[str], list[str]]:
    with FIXTURE.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return [r["text"] for r in rows], [r["intent"] for r in rows]


def test_fixture_quality_well_above_chance() -> None:
    """On 12 labelled intents the product's own topics score NMI >= 0.6, ARI >= 0.3."""
    questions, truth = _labelled()
    model = topics.fit(questions)
    found = model.assign(questions)
    nmi, ari = topics.clustering_scores(truth, found)
    assert nmi >= 0.6, nmi
    assert ari >= 0.3, ari
    assert 6 <= len(model.topics) <= 30


def test_same_questions_in_any_order_give_the_same_topics() -> None:
    """Shuffled input gives the same ids, labels, questions and assignments."""
    questions, _ = _labelled()
    shuffled = list(questions)
    random.Random(3).shuffle(shuffled)
    a, b = topics.fit(questions), topics.fit(shuffled)
    assert [(t.id, t.terms, t.question, t.size) for t in a.topics] == [
        (t.id, t.terms, t.question, t.size) for t in b.topics
    ]
    assert a.assign(questions) == b.assign(questions)


def test_new_questions_join_the_nearest_topic_or_misc() -> None:
    """A paraphrase joins its intent's topic; text near no topic goes to misc."""
    questions, _truth = _labelled()
    model = topics.fit(questions)
    found = dict(zip(questions, model.assign(questions), strict=True))
    alarm = found["set an alarm for 7 am"]
    calories = found["how many calories are in a banana"]
    new = model.assign(
        ["please set an alarm for 9 am", "how many calories in an orange", "", "zzzz"]
    )
    assert new[0] == alarm != MISC
    assert new[1] == calories != MISC
    assert new[2:] == [MISC, MISC]


def test_topic_labels_name_the_intent() -> None:
    """Each topic has terms drawn from its questions and a member as its question."""
    questions, _ = _labelled()
    model = topics.fit(questions)
    by_question = {t.question: t for t in model.topics}
    assert set(by_question) <= set(questions)
    alarm = next(t for t in model.topics if "alarm" in t.question)
    assert "alarm" in alarm.terms
    assert all(t.id.startswith("t") for t in model.topics)
    assert len({t.id for t in model.topics}) == len(model.topics)


def test_n_topics_overrides_the_number_chosen() -> None:
    """n_topics=5 gives exactly five topics."""
    questions, _ = _labelled()
    assert len(topics.fit(questions, n_topics=5).topics) == 5


def test_refit_keeps_the_ids_of_topics_that_stayed() -> None:
    """Fitted again on more data, with the old model given, topics keep their ids."""
    questions, _truth = _labelled()
    first = topics.fit(questions[::2])
    second = topics.fit(questions, previous=first)
    kept = {t.id for t in first.topics} & {t.id for t in second.topics}
    assert len(kept) >= len(first.topics) // 2
    # A question keeps its topic id across the re-fit.
    same = [
        a == b
        for a, b in zip(first.assign(questions), second.assign(questions), strict=True)
        if a != MISC
    ]
    assert sum(same) >= 0.8 * len(same)


def test_model_round_trips_through_json() -> None:
    """to_json/from_json keeps the topics and assigns the same way."""
    questions, _ = _labelled()
    model = topics.fit(questions)
    again = topics.TopicModel.from_json(model.to_json())
    assert again.topics == model.topics
    assert again.assign(questions) == model.assign(questions)


def test_a_model_with_no_topics_round_trips() -> None:
    """A model fitted on too few questions (no topics) reads back, and assigns misc."""
    model = topics.fit(["hello there"])
    again = topics.TopicModel.from_json(model.to_json())

    assert [] == list(again.topics)
    assert [MISC] == list(again.assign(["hello there"]))


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [({"n_topics": 0}, "n_topics"), ({"max_distance": 2.5}, "max_distance"),
     ({"min_size": 0}, "min_size"), ({"sample_size": 1}, "sample_size")],
)  # fmt: skip
def test_bad_parameters_are_named(kwargs: dict[str, float], name: str) -> None:
    """An out-of-range parameter raises ValueError naming it."""
    with pytest.raises(ValueError, match=name):
        topics.fit(["a question", "another question"], **kwargs)  # type: ignore[arg-type]


def test_too_few_questions_give_no_topics() -> None:
    """No questions, or only empty ones, give a model with no topics; all misc."""
    model = topics.fit(["", "   "])
    assert model.topics == []
    assert model.assign(["hello"]) == [MISC]


def test_turn_question_is_the_users_own_words() -> None:
    """The last run of user messages, not re-sent history or the answer."""
    rows = [["system", "be nice"], ["user", "old question"], ["assistant", "old"],
            ["user", "new question"], ["user", "and more"], ["assistant", "answer"]]  # fmt: skip
    assert topics.turn_question(rows) == "new question\nand more"
    assert topics.turn_question([["assistant", "hi"]]) == ""


def test_scores_match_known_values() -> None:
    """Identical partitions score 1; a merge scores as scikit-learn does (0.7337, 0.4444)."""
    truth = ["a", "a", "b", "b", "c", "c"]
    assert topics.clustering_scores(truth, [1, 1, 2, 2, 3, 3]) == pytest.approx((1, 1))
    nmi, ari = topics.clustering_scores(truth, [1, 1, 1, 1, 3, 3])
    assert (nmi, ari) == pytest.approx((0.7336804, 0.4444444), abs=1e-6)


def test_embeddings_come_from_the_wheel_without_wordllamas_code() -> None:
    """Embedding loads the wheel's files only: wordllama's (downloading) code is never imported."""
    code = (
        "import sys; from context_trace.analytics import topics;"
        "v = topics.embed(['hello there']);"
        "assert v.shape == (1, 256), v.shape;"
        "assert not [m for m in sys.modules if m.startswith('wordllama')];"
        "assert not [m for m in sys.modules if m in ('requests', 'urllib3')]"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    vectors = topics.embed(["hello there", "hello there"])
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0)


def test_a_question_is_the_mean_of_its_token_vectors_in_any_batch() -> None:
    """A question's vector is its tokens' vectors summed in order, averaged, unit length: the same alone, repeated or among others."""
    embedder = topics.Embedder()
    texts = [
        "how do i reset my password for the billing account on my phone today",
        "what's the weather",
        "",
        "how do i reset my password for the billing account on my phone today",
        "set an alarm for seven tomorrow morning please and then play some music",
    ]
    vectors = embedder(texts)
    for text, vector in zip(texts, vectors, strict=True):
        ids = embedder.tokenizer.encode(text, add_special_tokens=False).ids
        expected = np.zeros(embedder.dim, np.float32)
        for i in ids:
            expected = expected + embedder.table[i]
        if ids:
            expected = (expected / len(ids)).astype(np.float32)
            expected /= np.linalg.norm(expected)
        assert np.array_equal(vector, expected), text
        assert np.array_equal(embedder([text])[0], vector)


def test_tokens_by_word_are_the_whole_texts_tokens() -> None:
    """Tokens put together from each word's (kept between calls) are those of the whole text, spaces and special tokens included."""
    embedder = topics.Embedder()
    rng = random.Random(3)
    alphabet = [
        *"ab xy  \u2581<>s/\n\t.,!?'\u00e9\u65e5\U0001f600",
        "<s>",
        "</s>",
        "don't",
    ]
    texts = [
        "", " ", "a", " a", "a ", "a  b", "\u2581", "x<s>y", "hello\nworld again",
        "set an alarm for 7 am", "set an alarm for 7 am please", "\u00a0a b",
        *("".join(rng.choice(alphabet) for _ in range(rng.randrange(40))) for _ in range(300)),
    ]  # fmt: skip
    whole = [
        e.ids for e in embedder.tokenizer.encode_batch(texts, add_special_tokens=False)
    ]
    assert embedder.token_ids(texts) == whole
    assert embedder.token_ids(texts[::-1]) == whole[::-1]


def test_import_context_trace_stays_light() -> None:
    """`import context_trace` imports neither NumPy nor SciPy nor the embeddings."""
    code = (
        "import sys, context_trace, context_trace.cli;"
        "heavy = [m for m in ('numpy', 'scipy', 'tokenizers', 'safetensors', 'wordllama',"
        " 'sklearn') if m in sys.modules];"
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
