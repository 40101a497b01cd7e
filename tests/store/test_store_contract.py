"""
The store contract: every :class:`~context_trace._store.base.ReportStore` passes it.

Run against each factory of ``conftest.STORES``; nothing here names a database.
Every test runs on every store (fixture ``store``) except where an operation
does not apply to a store by design: the outbox (``outbox_store``: only stores
with an outbox of their own) and ratings resolved in the write's result
(``resolving_store``: only stores that resolve them when written). The reasons
are in ``conftest.WITH_OUTBOX`` and ``conftest.RESOLVE_WHEN_WRITTEN``.
"""

from __future__ import annotations

import pytest

from context_trace._record import Conversation, Feedback, Message
from context_trace._store.base import Outbox, Reads, ReportStore, Store


def turn(
    tid: str,
    session: str | None = "s1",
    user: str | None = "alice",
    at: float = 1_700_000_000.0,
    ask: str = "hello",
    answer: str | None = "hi there",
) -> Conversation:
    messages = [Message("user", ask)]
    if answer is not None:
        messages.append(Message("assistant", answer))
    return Conversation(
        id=tid,
        user_id=user,
        session_id=session,
        started_at=at,
        ended_at=at + 1.0,
        messages=tuple(messages),
        model="fake-model",
    )


def rating(
    rid: str, session: str = "s1", turn_id: str | None = None, at: float = 1.8e9
) -> Feedback:
    return Feedback(
        id=rid,
        session_id=session,
        user_id="someone-else",
        rating=1,
        conversation_id=turn_id,
        created_at=at,
    )


class TestShape:
    def test_the_store_and_its_reads_have_the_interface(
        self, store: ReportStore
    ) -> None:
        """The store and its reads match the protocols (ReportStore, Reads)."""
        store.write([turn("t1")])
        with store.reads() as reads:
            parts = [isinstance(store, ReportStore), isinstance(reads, Reads)]
        assert [True, True] == parts

    def test_a_store_with_an_outbox_has_the_whole_interface(
        self, outbox_store: Store
    ) -> None:
        """A store with an outbox is a Store, and its outbox an Outbox."""
        assert [True, True] == [
            isinstance(outbox_store, Store),
            isinstance(outbox_store.outbox, Outbox),
        ]


class TestWrite:
    def test_a_written_turn_reads_back(self, store: ReportStore) -> None:
        """A turn written reads back with its user, session, model and messages."""
        store.write([turn("t1")])

        with store.reads() as reads:
            stored = reads.conversation("t1")
            users = [u.user_id for u in reads.users()]
            sessions = [s.session_id for s in reads.sessions()]

        assert stored is not None
        assert ("alice", "s1", "fake-model") == (
            stored.user_id,
            stored.session_id,
            stored.model,
        )
        assert [("user", "hello"), ("assistant", "hi there")] == [
            (m.role, m.content) for m in stored.messages
        ]
        assert (["alice"], ["s1"]) == (users, sessions)

    def test_the_same_turn_written_twice_is_stored_once(
        self, store: ReportStore
    ) -> None:
        """Writing a turn id again changes nothing: one turn, one session, one user."""
        store.write([turn("t1")])
        store.write([turn("t1")])
        store.write([turn("t1"), turn("t1")])

        with store.reads() as reads:
            ids = [c.id for c in reads.conversations()]
            (user,) = reads.users()
            (session,) = reads.sessions()

        assert (["t1"], 1, 1) == (ids, user.conversations, session.turns)

    def test_a_record_that_is_not_one_is_refused_before_anything_is_stored(
        self, store: ReportStore
    ) -> None:
        """A batch holding a non-record raises TypeError and stores none of it."""
        with pytest.raises(TypeError, match="not a context_trace record"):
            store.write([turn("t1"), "not a record"])  # type: ignore[list-item]

        store.write([turn("t2")])
        with store.reads() as reads:
            assert ["t2"] == [c.id for c in reads.conversations()]

    def test_a_failed_transaction_keeps_nothing(self, store: ReportStore) -> None:
        """Two writes in a transaction that raises are both undone."""

        def write_then_fail() -> None:
            with store.transaction():
                store.write([turn("t1")])
                store.write([turn("t2", session="s2")])
                raise RuntimeError("boom")

        with pytest.raises(RuntimeError, match="boom"):
            write_then_fail()
        store.write([turn("t3")])

        with store.reads() as reads:
            ids = [c.id for c in reads.conversations()]
        assert ["t3"] == ids

    def test_a_transaction_commits_its_writes_together(
        self, store: ReportStore
    ) -> None:
        """Inside one transaction a write is visible to the next read; both commit."""
        with store.transaction():
            store.write([turn("t1")])
            inside = [m.content for m in store.session_transcript("s1")]
            store.write([turn("t2", at=1_800_000_000.0, ask="more", answer="ok")])

        with store.reads() as reads:
            ids = [c.id for c in reads.conversations()]
        assert (["hello", "hi there"], ["t1", "t2"]) == (inside, ids)

    def test_a_failed_transaction_keeps_no_outbox_row(
        self, outbox_store: Store
    ) -> None:
        """A write and an outbox put in a transaction that raises are both undone."""

        def write_then_fail() -> None:
            with outbox_store.transaction():
                outbox_store.write([turn("t1")])
                outbox_store.outbox.put([turn("t2")])
                raise RuntimeError("boom")

        with pytest.raises(RuntimeError, match="boom"):
            write_then_fail()

        with outbox_store.reads() as reads:
            ids = [c.id for c in reads.conversations()]
        assert ([], 0) == (ids, outbox_store.outbox.counts()["pending"])

    def test_a_transaction_commits_a_write_and_a_put_together(
        self, outbox_store: Store
    ) -> None:
        """Inside one transaction a write is visible to the outbox and both commit."""
        with outbox_store.transaction():
            outbox_store.write([turn("t1")])
            outbox_store.outbox.put([turn("t2")])
            inside = [m.content for m in outbox_store.session_transcript("s1")]

        with outbox_store.reads() as reads:
            ids = [c.id for c in reads.conversations()]
        assert (["hello", "hi there"], ["t1"], 1) == (
            inside,
            ids,
            outbox_store.outbox.counts()["pending"],
        )


class TestTranscript:
    def test_a_session_transcript_is_in_turn_order(self, store: ReportStore) -> None:
        """Turns written out of order read back in the order they started."""
        store.write([turn("t2", at=2_000.0, ask="second", answer="two")])
        store.write([turn("t1", at=1_000.0, ask="first", answer="one")])
        store.write([turn("t3", at=3_000.0, ask="third", answer="three")])

        assert ["first", "one", "second", "two", "third", "three"] == [
            m.content for m in store.session_transcript("s1")
        ]

    def test_an_unknown_session_has_an_empty_transcript(
        self, store: ReportStore
    ) -> None:
        """The transcript of a session the store never saw is empty."""
        store.write([turn("t1")])

        assert [] == store.session_transcript("nobody")


class TestRatings:
    def test_a_rating_without_a_turn_goes_to_the_last_answered_turn(
        self, store: ReportStore
    ) -> None:
        """A rating naming no turn rates the session's last answered turn, its user's."""
        store.write([turn("t1", at=1_000.0), turn("t2", at=2_000.0, answer=None)])

        store.write([rating("r1")])

        with store.reads() as reads:
            stored = reads.ratings("s1")
        assert [("r1", "t1", "alice", 1)] == [
            (f.id, f.conversation_id, f.user_id, f.rating) for f in stored
        ]

    def test_a_rating_of_a_named_turn_rates_that_turn(self, store: ReportStore) -> None:
        """A rating naming one of the session's turns rates it."""
        store.write([turn("t1", at=1_000.0), turn("t2", at=2_000.0)])

        store.write([rating("r1", turn_id="t1")])

        with store.reads() as reads:
            assert ["t1"] == [f.conversation_id for f in reads.ratings("s1")]

    def test_a_rating_of_an_unknown_session_or_turn_is_not_stored(
        self, store: ReportStore
    ) -> None:
        """Unknown session, or a turn of another session: no rating reads back."""
        store.write([turn("t1"), turn("t9", session="s2")])

        store.write([rating("r1", session="nope"), rating("r2", turn_id="t9")])

        with store.reads() as reads:
            stored = reads.ratings("s1") + reads.ratings("s2") + reads.ratings("nope")
        assert [] == stored

    def test_the_write_result_lists_ratings_resolved_and_refused(
        self, resolving_store: ReportStore
    ) -> None:
        """A store resolving ratings when written lists them resolved, or refused."""
        resolving_store.write(
            [turn("t1", at=1_000.0), turn("t2", at=2_000.0, answer=None)]
        )
        resolving_store.write([turn("t9", session="s2")])

        result = resolving_store.write(
            [rating("r1"), rating("r2", session="nope"), rating("r3", turn_id="t9")]
        )

        assert ([("r1", "t1", "alice")], ["r2", "r3"]) == (
            [(f.id, f.conversation_id, f.user_id) for f in result.ratings],
            [r.feedback.id for r in result.refused],
        )

    def test_the_last_rating_of_a_turn_wins(self, store: ReportStore) -> None:
        """A newer rating of the same turn replaces the older one, in any order."""
        store.write([turn("t1")])
        newer = Feedback("r2", "s1", None, -1, "t1", created_at=1.9e9)

        store.write([newer])
        store.write([rating("r1", turn_id="t1", at=1.8e9)])

        with store.reads() as reads:
            assert [("r2", -1)] == [(f.id, f.rating) for f in reads.ratings("s1")]


class TestOutbox:
    def test_put_claim_done_fail_release_and_counts(self, outbox_store: Store) -> None:
        """Rows move pending -> leased -> gone (done, failed) or back to pending."""
        box = outbox_store.outbox
        box.put([turn("a"), turn("b"), turn("c")], ("context", "otlp"))
        assert {"pending": 6, "leased": 0, "dropped": 0, "failed": 0} == box.counts()

        claimed = box.claim(3, 60.0, "context")
        assert ["a", "b", "c"] == [record.id for _, record in claimed]
        assert (3, 3) == (box.counts()["pending"], box.counts()["leased"])
        assert [] == box.claim(3, 60.0, "context")  # leased: not claimed twice

        (a, _), (b, _), (c, _) = claimed
        box.done([a])
        box.fail([b], "context")
        box.release([c], 0.0)

        assert {"pending": 4, "leased": 0, "dropped": 0, "failed": 1} == box.counts()
        assert {
            "context": {"waiting": 1, "failed": 1},
            "otlp": {"waiting": 3, "failed": 0},
        } == box.destinations()
        assert ["c"] == [record.id for _, record in box.claim(5, 60.0, "context")]

    def test_released_rows_wait_out_their_backoff_until_reset(
        self, outbox_store: Store
    ) -> None:
        """A row released with a backoff is not due; reset_backoff makes it due now."""
        box = outbox_store.outbox
        box.put([turn("a")])
        ((row, _),) = box.claim(1, 60.0)
        box.release([row], 3600.0)

        due_before = box.claim(1, 60.0)
        reset = box.reset_backoff()
        due_after = [record.id for _, record in box.claim(1, 60.0)]

        assert ([], 1, ["a"]) == (due_before, reset, due_after)

    def test_claimed_records_read_back_whole(self, outbox_store: Store) -> None:
        """A queued record comes back from a claim equal to the one put."""
        record = turn("a")
        outbox_store.outbox.put([record, rating("r1", turn_id="a")])

        assert [record, rating("r1", turn_id="a")] == [
            r for _, r in outbox_store.outbox.claim(5, 60.0)
        ]

    def test_keep_local_queues_ratings_as_stored(self, outbox_store: Store) -> None:
        """With keep_local the turn is stored and the rating queued resolved."""
        refused = outbox_store.outbox.put(
            [turn("t1"), rating("r1"), rating("r2", session="nope")], keep_local=True
        )

        queued = [r for _, r in outbox_store.outbox.claim(5, 60.0)]
        with outbox_store.reads() as reads:
            ids = [c.id for c in reads.conversations()]
        assert (1, ["t1"]) == (refused, ids)
        assert [("t1", None), ("r1", "t1")] == [
            (r.id, getattr(r, "conversation_id", None)) for r in queued
        ]
