"""
Satisfaction: each implicit-signal rule (a case that fires, a near miss that
does not), the scores, and ``context-trace unhappy`` on a real store.

The store is recorded through the real pipeline: scopes around LangChain runs
with fake chat models (scripted answers, a failing provider, a stream its
consumer stops reading) and real ratings.
"""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path
from typing import Any

import pytest
from langchain_core.language_models.fake_chat_models import (
    FakeListChatModel,
    GenericFakeChatModel,
)
from langchain_core.messages import AIMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate

import context_trace
from context_trace import _runtime, _satisfaction, cli
from context_trace._satisfaction import analyze, similarity, turn_signals
from context_trace._store.analytics import Analytics
from context_trace._store.ui_index import UIIndex

from .stores import record_store
from .test_cli import _env, run_cli


def _names(signals: list[_satisfaction.Signal]) -> list[str]:
    return [s.name for s in signals]


# --------------------------------------------------------------------------- rules
class TestRephrase:
    def test_rephrased_question_fires(self) -> None:
        """A question sharing at least half its content words with the previous one fires."""
        signals = turn_signals(
            "I was charged twice, why?",
            "A pending hold disappears in 3 days.",
            previous="Why was I charged twice this month?",
        )
        assert _names(signals) == ["rephrase"]
        assert "similarity 0.67" in signals[0].reason

    def test_repeated_question_fires(self) -> None:
        """The same question again (case and spacing aside) fires as a repeat."""
        signals = turn_signals(
            "where is  my ORDER?", "It ships today.", previous="Where is my order?"
        )
        assert [(s.name, s.reason) for s in signals] == [
            ("rephrase", "repeats the previous question")
        ]

    def test_follow_up_on_the_same_subject_does_not_fire(self) -> None:
        """A follow-up sharing one word of five (similarity 0.2) is not a rephrase."""
        assert similarity(
            "Why was I charged twice this month?",
            "Can you refund the duplicate charge?",
        ) == pytest.approx(0.2)
        assert not turn_signals(
            "Can you refund the duplicate charge?",
            "There is nothing to refund.",
            previous="Why was I charged twice this month?",
        )

    def test_same_question_with_another_number_does_not_fire(self) -> None:
        """Only the number changed (similarity 0.6): a new question, not a rephrase."""
        assert similarity(
            "Set a timer for 5 minutes", "Set a timer for 10 minutes"
        ) == pytest.approx(0.6)
        assert not turn_signals(
            "Set a timer for 10 minutes", "Done.", previous="Set a timer for 5 minutes"
        )

    def test_same_question_about_another_place_does_not_fire(self) -> None:
        """Only the proper nouns changed (similarity 0.5): a new question."""
        before = "Which metro goes from the airport to the Louvre?"
        after = "Which metro goes from the airport to the Eiffel Tower?"
        assert similarity(before, after) == pytest.approx(0.5)
        assert not turn_signals(after, "Take line 6.", previous=before)

    def test_rephrase_that_also_changes_a_value_still_fires(self) -> None:
        """A changed number beside a changed wording is still a rephrase (0.5)."""
        signals = turn_signals(
            "Set a 10 minute countdown timer",
            "Done.",
            previous="Set a timer for 5 minutes",
        )
        assert _names(signals) == ["rephrase"]

    def test_first_turn_of_a_session_does_not_fire(self) -> None:
        """Without a previous question in the session there is nothing to rephrase."""
        assert not turn_signals("Where is my order?", "It ships today.")


class TestNegative:
    def test_negative_sentiment_fires(self) -> None:
        """VADER's compound score at or below -0.5 fires, with the score as reason."""
        pytest.importorskip("vaderSentiment")
        (signal,) = turn_signals("This is terrible, I hate this awful service.", "ok")
        assert signal.name == "negative"
        assert signal.reason.startswith("negative sentiment (VADER -")

    def test_frustration_phrase_fires(self) -> None:
        """A frustration phrase fires even when the lexicon scores it mildly."""
        assert _names(turn_signals("seriously, this is ridiculous", "ok")) == [
            "negative"
        ]
        assert _names(turn_signals("where is it???", "ok")) == ["negative"]

    def test_mildly_negative_or_negated_words_do_not_fire(self) -> None:
        """A plain complaint (VADER above -0.5) and a negated phrase do not fire."""
        assert not turn_signals("Why was I charged twice this month?", "ok")
        assert not turn_signals("I'm not frustrated, just curious", "ok")
        assert not turn_signals("Is this a useful feature?", "ok")

    @pytest.mark.parametrize(
        "text",
        [
            "How do I kill a process on linux?",
            "kill the stuck job",
            "my payment failed, what do I do?",
            "the upload error says access denied",
            "fatal error in the build",
            "what do i do now that my car battery is dead",
            "who do i contact to report fraud on my visa",
            "how long can i freeze tofu before it goes bad",
            "i need to cancel my reservation for rob at red robin",
        ],
    )
    def test_domain_words_are_not_sentiment(self, text: str) -> None:
        """Words that name a task or a fault (kill, failed, error, dead, fraud,
        cancel; food that goes bad) do not make a question negative."""
        pytest.importorskip("vaderSentiment")
        assert "negative" not in _names(turn_signals(text, "ok"))

    @pytest.mark.parametrize(
        "text",
        [
            "this is terrible, the worst service ever",
            "I hate this, you are useless",
            "I hate that my order failed, this is awful",
        ],
    )
    def test_feelings_beside_domain_words_still_fire(self, text: str) -> None:
        """The near miss: a feeling is negative even beside a domain word."""
        pytest.importorskip("vaderSentiment")
        assert "negative" in _names(turn_signals(text, "ok"))


class TestNotHelped:
    @pytest.mark.parametrize(
        "text",
        [
            "That didn't help.",
            "no, that's not what I asked",
            "your answer is wrong",
            "it still doesn't work",
        ],
    )
    def test_saying_it_did_not_help_fires(self, text: str) -> None:
        """The user's phrases saying the answer did not help fire, quoting the phrase."""
        names = _names(turn_signals(text, "ok"))
        assert "not_helped" in names

    def test_near_misses_do_not_fire(self) -> None:
        """'wrong' about something else, or a question about help, does not fire."""
        assert "not_helped" not in _names(
            turn_signals("The wrong size arrived, can I swap it?", "Yes.")
        )
        assert "not_helped" not in _names(
            turn_signals("Did that help other customers?", "Yes.")
        )


class TestNoAnswer:
    @pytest.mark.parametrize(
        "answer",
        [
            "I don't know.",
            "I'm sorry, I can't help with that request.",
            "Hmm, I'm not sure I understood; could you rephrase that?",
            "   ",
        ],
    )
    def test_non_answer_fires(self, answer: str) -> None:
        """A refusal, 'I don't know' (first sentence) or an empty answer fires."""
        assert _names(turn_signals("Where is my order?", answer)) == ["no_answer"]

    def test_hedge_after_a_real_answer_does_not_fire(self) -> None:
        """The phrase past the answer's first sentence does not fire."""
        assert not turn_signals(
            "When does it arrive?",
            "It ships today. I'm not sure the carrier delivers on Sundays.",
        )

    def test_failed_or_abandoned_turn_is_not_also_a_non_answer(self) -> None:
        """A failed turn is an error, an abandoned one is abandonment: not no_answer."""
        assert _names(turn_signals("q", "", error="Timeout: slow")) == ["error"]
        assert _names(turn_signals("q", "", abandoned=True)) == ["abandoned"]


# --------------------------------------------------------------------------- a store
UNHAPPY = "una"
HAPPY = "hal"
QUIET = "quinn"


class ProviderDown(Exception):
    """The model provider's error."""


def _chain(answers: list[str]) -> Any:
    prompt = ChatPromptTemplate.from_messages([("human", "{q}")])
    return prompt | FakeListChatModel(responses=answers) | StrOutputParser()


def _failing(_: object) -> Any:
    raise ProviderDown("provider down")


def _record(path: Path) -> None:
    """Record three users' sessions through the real pipeline."""
    _runtime.configure(db_path=path, token=None)
    with context_trace.track_user(UNHAPPY):
        with context_trace.context_session("una-1") as session:
            _chain(["A pending hold disappears within 3 days."]).invoke(
                {"q": "Why was I charged twice this month?"}
            )
            _chain(["I don't know."]).invoke({"q": "I was charged twice, why?"})
            _chain(["Sorry about that."]).invoke(
                {"q": "That didn't help, this is ridiculous."}
            )
            session.rate(-1)
        with context_trace.context_session("una-2"):
            _chain(["Hello!"]).invoke({"q": "hi"})
            stream: Any = (
                ChatPromptTemplate.from_messages([("human", "{q}")])
                | GenericFakeChatModel(
                    messages=itertools.repeat(AIMessage("one two three four"))
                )
                | StrOutputParser()
            ).stream({"q": "tell me about returns"})
            next(stream)
            stream.close()
            with pytest.raises(ProviderDown):
                (
                    ChatPromptTemplate.from_messages([("human", "{q}")]) | _failing
                ).invoke({"q": "and exchanges?"})
    with context_trace.track_user(HAPPY), context_trace.context_session("hal-1") as s:
        chain = _chain(["Use Forgot password.", "It comes from no-reply.", "Glad!"])
        for q in ("I can't log in.", "Which address sends it?", "Found it, thanks!"):
            chain.invoke({"q": q})
        s.rate(1)
    with context_trace.track_user(QUIET), context_trace.context_session("quinn-1"):
        _chain(["I don't know."]).invoke({"q": "Do you ship to Mars?"})
    assert _runtime.flush(10.0)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store recorded once for the module (clean env and state around it)."""
    return record_store(tmp_path_factory.mktemp("satisfaction") / "traces.db", _record)


def _later() -> float:
    """Two hours from now: every session of the store has ended by then."""
    return time.time() + 2 * 3600


def _turn_signals(store: Path, session: str, turn: int, **kw: Any) -> list[str]:
    report = analyze(store, **kw)
    (found,) = [t for t in report.turns if (t.session_id, t.turn) == (session, turn)]
    return _names(found.signals)


class TestStoreSignals:
    def test_each_signal_fires_on_its_recorded_turn(self, store: Path) -> None:
        """Recorded turns carry the signals their words, answers and runs call for."""
        report = analyze(store, now=_later())
        got = {(t.session_id, t.turn): _names(t.signals) for t in report.turns}
        assert got[("una-1", 1)] == []
        assert got[("una-1", 2)] == ["rephrase", "no_answer"]
        assert set(got[("una-1", 3)]) == {"negative", "not_helped", "rating_down"}
        assert got[("una-2", 2)] == ["abandoned"]
        assert got[("una-2", 3)] == ["error", "ended_after_failure"]
        assert got[("hal-1", 3)] == ["rating_up"]
        assert got[("quinn-1", 1)] == ["no_answer", "ended_after_failure"]

    def test_a_session_still_active_has_not_ended(self, store: Path) -> None:
        """Within the idle gap of its last activity, a session has not ended."""
        assert _turn_signals(store, "una-2", 3, now=time.time()) == ["error"]
        assert _turn_signals(store, "una-2", 3, now=_later(), idle_gap=4 * 3600) == [
            "error"
        ]

    def test_scores_per_turn_session_user_model_and_day(self, store: Path) -> None:
        """Scores are 1 minus the weights, clipped; groups average their turns."""
        report = analyze(store, now=_later())
        by_turn = {(t.session_id, t.turn): t.score for t in report.turns}
        assert by_turn[("una-1", 2)] == pytest.approx(1 - 0.3 - 0.4)
        assert by_turn[("una-1", 3)] == 0.0
        assert by_turn[("hal-1", 3)] == 1.0
        users = {g.key: g for g in report.users()}
        assert users[HAPPY].score == 1.0
        assert users[QUIET].score == pytest.approx(1 - 0.4 - 0.2)
        assert users[QUIET].score < users[UNHAPPY].score < 1.0
        assert report.users()[0].key == QUIET
        sessions = [g.key for g in report.sessions()]
        assert sessions[0] == "quinn-1"
        assert sessions[-1] == "hal-1"
        assert sum(len(g.turns) for g in report.models()) == len(report.turns) == 10
        assert sum(len(g.turns) for g in report.days()) == 10

    def test_since_keeps_only_later_turns(self, store: Path) -> None:
        """--since leaves earlier turns out of the report."""
        assert analyze(store, since=time.time() + 60).turns == []

    def test_bad_arguments_are_refused(self, tmp_path: Path) -> None:
        """A missing store and a negative idle gap are refused, naming the problem."""
        with pytest.raises(FileNotFoundError, match="no context_trace database"):
            analyze(tmp_path / "missing.db")
        with pytest.raises(ValueError, match="idle_gap must be"):
            analyze(tmp_path / "missing.db", idle_gap=-1)


class TestUnhappyCommand:
    def test_json_lists_unhappy_users_with_evidence(
        self, store: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """--json lists users with enough turns, lowest first, with reasons and turns."""
        assert cli.main(["unhappy", "--json", "--db", str(store)]) == 0
        data = json.loads(capsys.readouterr().out)
        assert [u["key"] for u in data["users"]] == [UNHAPPY]
        user = data["users"][0]
        assert user["turns"] == 6
        assert user["ratings_down"] == 1
        evidence = {
            (e["session_id"], e["turn"]): e["reasons"] for e in user["evidence"]
        }
        assert ("una-1", 3) in evidence
        assert ("una-1", 2) in evidence
        assert any("rephrases the previous question" in r for r in evidence["una-1", 2])

    def test_min_turns_and_limit(
        self, store: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """--min-turns 1 also lists the one-turn user (higher: not ended yet); --limit cuts."""
        args = ["unhappy", "--json", "--min-turns", "1", "--db", str(store)]
        assert cli.main(args) == 0
        users = json.loads(capsys.readouterr().out)["users"]
        assert [u["key"] for u in users] == [UNHAPPY, QUIET]
        assert cli.main([*args, "--limit", "1"]) == 0
        users = json.loads(capsys.readouterr().out)["users"]
        assert [u["key"] for u in users] == [UNHAPPY]

    def test_table_in_a_subprocess(self, store: Path) -> None:
        """The table names the user, the signals and each flagged turn's reasons."""
        result = run_cli("unhappy", "--db", str(store), env=_env())
        assert result.returncode == 0, result.stderr
        assert UNHAPPY in result.stdout
        assert "session una-1 turn 2: rephrases the previous question" in result.stdout
        assert "the turn failed: 'ProviderDown: provider down'" in result.stdout

    def test_missing_store_is_a_clear_error(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A store that does not exist: exit 1 and the usual message."""
        assert cli.main(["unhappy", "--db", str(tmp_path / "none.db")]) == 1
        assert "no database at" in capsys.readouterr().err


def index_report(index: UIIndex, **kw: Any) -> _satisfaction.Report:
    """The report read from the dashboard's sidecar (the store attached)."""
    return _satisfaction.analyze_index(index._conn, **kw)


def _by_turn(report: _satisfaction.Report) -> dict[str, list[tuple[str, str]]]:
    return {
        t.conversation_id: [(s.name, s.reason) for s in t.signals] for t in report.turns
    }


class TestDashboardIndex:
    def test_index_gives_the_same_signals_as_the_store(
        self, store: Path, tmp_path: Path
    ) -> None:
        """The sidecar's refresh scores every turn as the CLI does, reasons included."""
        with UIIndex(store, tmp_path / "idx") as index:
            index.build()
            report = index_report(index, now=_later())
        expected = analyze(store, now=_later())
        assert _by_turn(report) == _by_turn(expected)
        assert sorted((t.session_id, t.turn) for t in report.turns) == sorted(
            (t.session_id, t.turn) for t in expected.turns
        )
        assert report.unhappy() == expected.unhappy()

    def test_new_turns_are_scored_incrementally(self, tmp_path: Path) -> None:
        """A turn indexed in a later refresh is compared with its session's earlier turn."""
        path = tmp_path / "live.db"
        _runtime.configure(db_path=path, token=None)
        with context_trace.track_user("ivy"), context_trace.context_session("s"):
            _chain(["Hello."]).invoke({"q": "hi"})
        assert _runtime.flush(10.0)
        with UIIndex(path, tmp_path / "idx") as index:
            with context_trace.track_user("ivy"), context_trace.context_session("s"):
                _chain(["Use Forgot password."]).invoke(
                    {"q": "How do I reset my password?"}
                )
                assert _runtime.flush(10.0)
                index.build()
                assert len(index_report(index).turns) == 2
                _chain(["I don't know."]).invoke({"q": "how do i reset my password??"})
                assert _runtime.flush(10.0)
                index.build()
            report = index_report(index)
        assert [(t.turn, _names(t.signals)) for t in report.turns] == [
            (1, []),
            (2, []),
            (3, ["rephrase", "no_answer"]),
        ]

    def test_users_table_scores_match_the_report(
        self, store: Path, tmp_path: Path
    ) -> None:
        """The users table's SQL score equals the report's, ended sessions and ratings included."""
        with UIIndex(store, tmp_path / "idx") as index:
            index.build()
        with Analytics(store, tmp_path / "idx", now=_later()) as analytics:
            rows = analytics.users(sort="satisfaction", descending=False).items
            report = analytics.satisfaction("all")
        expected = {g.key: g.score for g in report.users()}
        assert {r.user_id: r.satisfaction for r in rows} == pytest.approx(expected)
        assert [r.user_id for r in rows] == [QUIET, UNHAPPY, HAPPY]
        assert expected[QUIET] == pytest.approx(
            1 - 0.4 - 0.2
        )  # ended after a non-answer
