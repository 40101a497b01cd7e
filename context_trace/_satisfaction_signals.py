"""
Satisfaction's rules and a turn's implicit signals (see ``_satisfaction``).

The constants are the rules written out in README's "Satisfaction" section;
:func:`turn_signals` reads one turn (and the one before it in its session).
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

# --------------------------------------------------------------------------- rules
#: Penalty of each signal in a turn's score (``rating_up`` is a bonus).
WEIGHTS: dict[str, float] = {
    "error": 0.5,
    "no_answer": 0.4,
    "not_helped": 0.5,
    "rephrase": 0.3,
    "negative": 0.3,
    "abandoned": 0.3,
    "ended_after_failure": 0.2,
    "rating_down": 0.6,
    "rating_up": -0.2,
}
#: Jaccard similarity of two questions' content words at or above which the
#: second one rephrases (or repeats) the first.
REPHRASE_THRESHOLD = 0.5
#: VADER's compound score at or below which the user's words are negative.
SENTIMENT_THRESHOLD = -0.5
#: Seconds without activity after which a session counts as ended.
IDLE_GAP = 30 * 60
#: Users with fewer turns are not listed as unhappy (too little evidence).
MIN_TURNS = 3

_STOPWORDS = frozenset(
    [
        "a",
        "an",
        "the",
        "i",
        "me",
        "my",
        "mine",
        "you",
        "your",
        "yours",
        "we",
        "us",
        "our",
        "it",
        "its",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "being",
        "am",
        "do",
        "does",
        "did",
        "done",
        "to",
        "of",
        "in",
        "on",
        "for",
        "at",
        "by",
        "with",
        "from",
        "and",
        "or",
        "but",
        "so",
        "if",
        "then",
        "than",
        "this",
        "that",
        "these",
        "those",
        "there",
        "here",
        "can",
        "could",
        "would",
        "will",
        "shall",
        "should",
        "may",
        "might",
        "must",
        "please",
        "what",
        "why",
        "how",
        "when",
        "where",
        "who",
        "whom",
        "which",
        "whose",
        "have",
        "has",
        "had",
        "get",
        "got",
        "just",
        "also",
        "any",
        "some",
        "again",
        "still",
        "about",
        "into",
        "out",
        "up",
    ]
)
_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)*")
_SUFFIXES = ("ing", "ed", "es", "s")
# The user says the answer did not help (matched on normalised text, as words).
_NOT_HELPED = re.compile(
    r"\b(?:"
    r"(?:didn't|did not|doesn't|does not|don't|do not|wasn't|was not|isn't|is not)"
    r" (?:really )?help(?:ful)?"
    r"|not (?:very |really )?helpful|unhelpful|no help"
    r"|(?:that's|that is|this is|that was|you're|you are|your answer is) wrong"
    r"|wrong answer"
    r"|not what i (?:asked|meant|wanted|need|needed)"
    r"|(?:that's|that is) not (?:it|right|correct|what i)"
    r"|(?:didn't|did not|doesn't|does not|you didn't|you did not) answer"
    r"|still (?:doesn't|does not|isn't|is not|not) work(?:ing)?"
    r"|still (?:broken|not fixed)"
    r")\b"
)
# Frustration the sentiment lexicon can miss.
# A phrase right after "not", "n't" or "never" ("I'm not frustrated") does not count.
_FRUSTRATION = re.compile(
    r"(?<!not )(?<!n't )(?<!never )\b(?:useless|ridiculous|frustrat\w*|annoy(?:ing|ed)|waste of (?:my )?time"
    r"|wasting my time|are you even listening|fed up|sick of|forget it"
    r"|never ?mind|this is stupid|so stupid|pointless|hopeless)\b"
    r"|[!?]{3,}"
)
# The assistant did not answer: matched in the answer's first sentence.
_NO_ANSWER = re.compile(
    r"\b(?:"
    r"i (?:don't|do not) know"
    r"|i(?:'m| am) not sure"
    r"|i (?:can't|cannot|can not|am unable to|'m unable to|am not able to"
    r"|'m not able to) (?:help|answer|assist|provide|find|access|do that)"
    r"|i (?:don't|do not) have (?:access|information|that information|enough"
    r" information|any information)"
    r"|as an ai"
    r"|i (?:didn't|did not|don't|do not) understand"
    r"|could you (?:please )?rephrase"
    r")\b"
)
_SENTENCE_END = re.compile(r"[.!?\n]")
# The signals after which a session's end counts against it.
_FAILED = ("error", "no_answer")


@dataclass(frozen=True)
class Signal:
    """One implicit (or explicit) sign that a turn went badly, or well."""

    name: str
    reason: str

    @property
    def weight(self) -> float:
        return WEIGHTS[self.name]


def normalise(text: str) -> str:
    """NFKC, case-folded, typographic apostrophes made plain, spaces collapsed."""
    text = unicodedata.normalize("NFKC", text).casefold()
    text = text.replace("\u2019", "'").replace("\u2018", "'")
    return " ".join(text.split())


def _stem(word: str) -> str:
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)]
            break
    return word[:-1] if word.endswith("e") and len(word) > 3 else word


def content_words(text: str) -> frozenset[str]:
    """The set of *text*'s stemmed words, stop words left out."""
    words = _WORD.findall(normalise(text))
    return frozenset(_stem(w) for w in words if w not in _STOPWORDS)


def _parameters(text: str) -> frozenset[str]:
    """
    The content words of *text* that name a value rather than ask something:
    a word with a digit in it, or a capitalised word that does not start a
    sentence (a proper noun: a city, a product, a name).
    """
    text = unicodedata.normalize("NFKC", text).replace("\u2019", "'")
    found = set()
    for match in _WORD.finditer(text):
        word = match.group(0)
        before = text[: match.start()].rstrip()
        initial = not before or before[-1] in ".!?:\n"
        if any(c.isdigit() for c in word) or (word[0].isupper() and not initial):
            folded = word.casefold()
            if folded not in _STOPWORDS:
                found.add(_stem(folded))
    return frozenset(found)


def changes_a_parameter(a: str, b: str) -> bool:
    """
    Whether *b* asks *a*'s question again with another value: each has a
    content word the other lacks, and all those words are values (see
    :func:`_parameters`): "weather in Paris" then "weather in London".
    """
    first, second = content_words(a), content_words(b)
    gone, new = first - second, second - first
    return bool(gone and new) and gone <= _parameters(a) and new <= _parameters(b)


def similarity(a: str, b: str) -> float:
    """Jaccard similarity of two texts' content words (0 when either has none)."""
    first, second = content_words(a), content_words(b)
    if not first or not second:
        return 0.0
    return len(first & second) / len(first | second)


#: Words that name a task, a thing or a fault in the user's domain rather
#: than a feeling ("kill a process", "cancel my order", "charged twice", "my
#: battery is dead", "report fraud"): they carry no sentiment here, although
#: VADER's lexicon scores them negative.
NEUTRAL_WORDS = frozenset(
    [
        "abort",
        "aborted",
        "block",
        "blocked",
        "broken",
        "cancel",
        "canceled",
        "cancelled",
        "charged",
        "crash",
        "damaged",
        "dead",
        "debt",
        "denied",
        "destroy",
        "die",
        "died",
        "dies",
        "dispute",
        "emergency",
        "error",
        "errors",
        "failed",
        "failing",
        "fails",
        "failure",
        "fake",
        "fatal",
        "fraud",
        "kill",
        "killed",
        "killing",
        "kills",
        "lost",
        "missing",
        "penalty",
        "problem",
        "problems",
        "rejected",
        "risk",
        "sick",
        "rob",
        "stolen",
        "stuck",
        "violation",
        "war",
        "warning",
    ]
)
# Food that "goes bad" spoils: a fact, not a feeling.
_SPOILS = re.compile(r"\b(?:go|goes|going|gone|went) bad\b", re.IGNORECASE)


@lru_cache(maxsize=1)
def _vader() -> Any:
    try:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
    except ImportError:
        return None
    analyzer = SentimentIntensityAnalyzer()
    # Its own copy of the lexicon, without the domain words.
    analyzer.lexicon = {
        word: value
        for word, value in analyzer.lexicon.items()
        if word not in NEUTRAL_WORDS
    }
    return analyzer


def sentiment_available() -> bool:
    """Whether VADER (the ``analytics`` extra) is installed."""
    return _vader() is not None


def compound(text: str) -> float | None:
    """VADER's compound score of *text* (-1..1), or None without VADER."""
    analyzer = _vader()
    if analyzer is None:
        return None
    return float(analyzer.polarity_scores(_SPOILS.sub("spoils", text))["compound"])


def _first_sentence(text: str) -> str:
    match = _SENTENCE_END.search(text)
    return text[: match.start()] if match else text


def _quote(text: str, limit: int = 60) -> str:
    flat = " ".join(text.split())
    return repr(flat if len(flat) <= limit else flat[: limit - 1] + "\u2026")


def turn_signals(
    question: str,
    answer: str,
    *,
    error: str | None = None,
    abandoned: bool = False,
    previous: str | None = None,
) -> list[Signal]:
    """
    The implicit signals one turn carries, from its own record.

    Args:
        question: The user's words this turn.
        answer: The assistant's answer ('' when none).
        error: The turn's error, if it failed.
        abandoned: Whether the user abandoned the answer's stream.
        previous: The user's words in the session's previous turn, if any.
    """
    signals: list[Signal] = []
    said = normalise(question)
    if previous is not None and said:
        earlier = normalise(previous)
        score = similarity(earlier, said)
        if earlier == said:
            signals.append(Signal("rephrase", "repeats the previous question"))
        elif score >= REPHRASE_THRESHOLD and not changes_a_parameter(
            previous, question
        ):
            signals.append(
                Signal(
                    "rephrase",
                    f"rephrases the previous question {_quote(previous)}"
                    f" (similarity {score:.2f})",
                )
            )
    if said:
        value = compound(question)
        phrase = _FRUSTRATION.search(said)
        if value is not None and value <= SENTIMENT_THRESHOLD:
            signals.append(
                Signal("negative", f"negative sentiment (VADER {value:+.2f})")
            )
        elif phrase:
            signals.append(
                Signal("negative", f"frustration: {_quote(phrase.group(0), 30)}")
            )
        said_not_helped = _NOT_HELPED.search(said)
        if said_not_helped:
            signals.append(
                Signal(
                    "not_helped",
                    f"says it did not help: {_quote(said_not_helped.group(0), 40)}",
                )
            )
    if abandoned:
        signals.append(Signal("abandoned", "left the answer's stream before its end"))
    if error is not None:
        signals.append(Signal("error", f"the turn failed: {_quote(error)}"))
    elif not abandoned:
        reply = normalise(answer)
        if not reply:
            signals.append(Signal("no_answer", "empty answer"))
        else:
            found = _NO_ANSWER.search(_first_sentence(reply))
            if found:
                signals.append(
                    Signal("no_answer", f"did not answer: {_quote(found.group(0), 40)}")
                )
    return signals


# --------------------------------------------------------------------------- turns
def split_turn(messages: Sequence[Sequence[Any]]) -> tuple[str, str]:
    """
    (the user's words, the answer) of a turn's stored messages.

    The user's words are the last run of ``user`` messages; the answer is the
    last ``assistant`` message after them ('' when there is none).
    """
    start = end = -1
    for i, message in enumerate(messages):
        if message[0] == "user":
            if end != i - 1 or start < 0:
                start = i
            end = i
    if start < 0:
        return "", ""
    question = "\n".join(str(m[1] or "") for m in messages[start : end + 1])
    answer = ""
    for message in messages[end + 1 :]:
        if message[0] == "assistant" and str(message[1] or "").strip():
            answer = str(message[1])
    return question, answer


def _decode(meta: str | None, messages: str | None) -> tuple[str, str, bool]:
    """(the user's words, the answer, abandoned) of a stored turn."""
    try:
        metadata = json.loads(meta) if meta else {}
        decoded = json.loads(messages) if messages else []
    except ValueError:
        metadata, decoded = {}, []
    question, answer = split_turn(decoded)
    abandoned = str(metadata.get("stream_abandoned", "")).lower() == "true"
    return question, answer, abandoned
