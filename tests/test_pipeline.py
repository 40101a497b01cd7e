"""The background pipeline: batching, flush, drops, failures, shutdown, fork, exit."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from langchain_core.runnables import RunnableLambda

import context_trace as ct
from context_trace._exporters.base import ExportResult
from context_trace._pipeline import BatchPipeline
from context_trace._record import Conversation, Message, Record
from context_trace.testing import capture

from .conftest import echo_chain


def _record(i: int) -> Conversation:
    return Conversation(
        id=f"r{i}",
        user_id=f"u{i % 7}",
        session_id=None,
        started_at=1.0,
        ended_at=2.0,
        messages=(Message("user", f"q{i}"), Message("assistant", f"a{i}")),
    )


class RecordingExporter:
    """Keeps batches; can be made to block or fail."""

    def __init__(self) -> None:
        self.batches: list[list[Record]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.fail_with: Exception | None = None
        self.shutdown_calls = 0
        self.seen_users: list[str | None] = []

    def export(self, batch: Sequence[Record]) -> ExportResult:
        self.entered.set()
        self.seen_users.append(ct.current_user())
        self.gate.wait(30)
        if self.fail_with is not None:
            raise self.fail_with
        self.batches.append(list(batch))
        return ExportResult.success(len(batch))

    def shutdown(self, timeout: float | None = None) -> None:
        self.shutdown_calls += 1

    @property
    def ids(self) -> list[str]:
        return [r.id for b in self.batches for r in b]


@pytest.fixture
def exporter() -> RecordingExporter:
    return RecordingExporter()


@pytest.fixture
def make_pipeline(exporter: RecordingExporter):
    made: list[BatchPipeline] = []

    def make(**kwargs: object) -> BatchPipeline:
        kwargs.setdefault("flush_interval", 30.0)
        pipeline = BatchPipeline(exporter, **kwargs)  # type: ignore[arg-type]
        made.append(pipeline)
        return pipeline

    yield make
    exporter.gate.set()
    for pipeline in made:
        pipeline.shutdown(5)


class TestDelivery:
    def test_flush_delivers_everything_emitted_before_it_in_order(
        self, exporter, make_pipeline
    ):
        """flush() returns once every earlier record is exported, in emit order."""
        pipeline = make_pipeline(max_batch=64)
        for i in range(1000):
            pipeline.emit(_record(i))

        assert pipeline.flush(10)
        assert [f"r{i}" for i in range(1000)] == exporter.ids
        assert all(len(b) <= 64 for b in exporter.batches)

    def test_full_batch_wakes_the_worker_without_flush(self, exporter, make_pipeline):
        """A full batch is exported before the (long) interval passes."""
        pipeline = make_pipeline(max_batch=10)
        for i in range(10):
            pipeline.emit(_record(i))

        assert exporter.entered.wait(10)

    def test_flush_from_many_threads_while_emitting(self, exporter, make_pipeline):
        """Concurrent emitters and flushers: every record is exported exactly once."""
        pipeline = make_pipeline(max_batch=50, max_queue=100_000)

        def work(t: int) -> None:
            for i in range(500):
                pipeline.emit(_record(t * 1000 + i))
                if i % 100 == 0:
                    pipeline.flush(10)

        threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

        assert pipeline.flush(10)
        assert 4000 == len(exporter.ids)
        assert 4000 == len(set(exporter.ids))
        assert 4000 == pipeline.stats()["exported"]

    def test_worker_runs_outside_user_scopes(self, exporter, make_pipeline):
        """The worker thread never sees the scope it was started from."""
        pipeline = make_pipeline()
        with ct.track_user("someone"):
            pipeline.emit(_record(1))
            assert pipeline.flush(10)

        assert [None] == exporter.seen_users


class TestBackpressure:
    def test_emit_does_not_block_while_the_exporter_hangs(
        self, exporter, make_pipeline
    ):
        """With the exporter stuck, emit keeps returning and records queue up."""
        exporter.gate.clear()
        pipeline = make_pipeline(max_batch=1, max_queue=1000)
        pipeline.emit(_record(0))
        assert exporter.entered.wait(10)
        for i in range(1, 500):
            pipeline.emit(_record(i))

        assert 499 == pipeline.stats()["queued"]
        assert not pipeline.flush(0.05)
        exporter.gate.set()
        assert pipeline.flush(10)
        assert 500 == len(exporter.ids)

    def test_full_queue_drops_new_records_counts_and_warns_once(
        self, exporter, make_pipeline, caplog
    ):
        """Past max_queue, new records are dropped and counted with one warning."""
        exporter.gate.clear()
        pipeline = make_pipeline(max_batch=1, max_queue=10)
        pipeline.emit(_record(0))
        assert exporter.entered.wait(10)
        with caplog.at_level(logging.WARNING, logger="context_trace"):
            for i in range(1, 101):
                pipeline.emit(_record(i))
        exporter.gate.set()
        assert pipeline.flush(10)

        stats = pipeline.stats()
        assert 90 == stats["dropped"]
        assert 11 == stats["exported"]
        assert [f"r{i}" for i in range(11)] == exporter.ids
        drops = [r for r in caplog.records if "dropping" in r.getMessage()]
        assert 1 == len(drops)


class SlowExporter:
    """Takes 5 ms per batch: much slower than many app threads can record."""

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.users: list[str | None] = []

    def export(self, batch: Sequence[Record]) -> ExportResult:
        time.sleep(0.005)
        for record in batch:
            assert isinstance(record, Conversation)
            self.ids.append(record.id)
            self.users.append(record.user_id)
        return ExportResult.success(len(batch))

    def shutdown(self, timeout: float | None = None) -> None:
        pass


class TestOverload:
    def test_threads_outpacing_a_slow_exporter_lose_nothing(self, monkeypatch):
        """16 threads x 150 turns into a slow exporter: all 2,400 stored, 0 dropped."""
        # A generous bound: the test is about waiting instead of dropping, not
        # about how long a loaded CI machine takes to schedule the worker.
        monkeypatch.setenv("CONTEXT_TRACE_BACKPRESSURE_TIMEOUT", "10")
        exporter = SlowExporter()
        ct.configure(exporter=exporter, max_queue=64, max_batch=16)
        chain = echo_chain()
        barrier = threading.Barrier(16)

        def work(k: int) -> None:
            barrier.wait()
            for i in range(150):
                with ct.track_user(f"t{k}"):
                    chain.invoke({"q": f"t{k} {i}"})

        threads = [threading.Thread(target=work, args=(k,)) for k in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert ct.flush(30)
        stats = ct.stats()

        assert 0 == stats["dropped"]
        assert 2400 == stats["exported"]
        assert 2400 == len(set(exporter.ids))
        assert {f"t{k}": 150 for k in range(16)} == {
            user: exporter.users.count(user) for user in set(exporter.users)
        }
        assert stats["waited"] > 0

    def test_a_hung_exporter_costs_one_wait_not_one_per_emit(
        self, exporter, make_pipeline
    ):
        """With the worker stuck, one emit waits out the bound; the rest drop at once."""
        exporter.gate.clear()
        pipeline = make_pipeline(max_batch=1, max_queue=10, backpressure_timeout=0.5)
        pipeline.emit(_record(0))
        assert exporter.entered.wait(10)
        started = time.monotonic()
        for i in range(1, 101):
            pipeline.emit(_record(i))
        elapsed = time.monotonic() - started
        exporter.gate.set()
        assert pipeline.flush(10)
        stats = pipeline.stats()

        assert 0.5 <= elapsed < 3.0
        assert 1 == stats["waited"]
        assert 90 == stats["dropped"]
        assert [f"r{i}" for i in range(11)] == exporter.ids

    def test_the_high_water_mark_is_256_queued_turns(self, exporter, make_pipeline):
        """With the worker busy, 256 queued turns cost no wait; the next one waits.

        Queued turns hold their LangChain objects and RSS keeps the peak, so the
        mark is small (it was 2 x max_batch = 1,024).
        """
        exporter.gate.clear()
        pipeline = make_pipeline(backpressure_timeout=0.2)
        pipeline.emit(_record(0))
        pipeline.flush(0)  # wake the worker: it takes r0 and blocks in export
        assert exporter.entered.wait(10)
        for i in range(1, 257):
            pipeline.emit(_record(i))
        before = pipeline.stats()["waited"]
        pipeline.emit(_record(257))
        after = pipeline.stats()["waited"]
        exporter.gate.set()
        assert pipeline.flush(10)

        assert (0, 1) == (before, after)
        assert 258 == pipeline.stats()["exported"]

    def test_turns_are_released_once_converted(self):
        """While the exporter writes a batch, the turns it came from are already free:
        what waits for the write is the record, not the turn's objects."""
        import gc
        import weakref

        class Turnish:
            def __init__(self, i: int) -> None:
                self.i = i

        refs: dict[str, weakref.ref[Turnish]] = {}
        alive: list[int] = []

        class Checking(RecordingExporter):
            def export(self, batch: Sequence[Record]) -> ExportResult:
                gc.collect()
                alive.append(sum(refs[r.id]() is not None for r in batch))
                return super().export(batch)

        def prepare(items: Sequence[object]) -> list[Record]:
            return [_record(item.i) for item in items if isinstance(item, Turnish)]

        exporter = Checking()
        pipeline = BatchPipeline(
            exporter, prepare=prepare, max_batch=512, flush_interval=30.0
        )
        try:
            for i in range(300):
                item = Turnish(i)
                refs[f"r{i}"] = weakref.ref(item)
                pipeline.emit(item)
                del item
            assert pipeline.flush(10)
        finally:
            pipeline.shutdown(5)

        assert 300 == len(exporter.ids)
        assert [0] * len(alive) == alive

    def test_the_worker_itself_never_waits(self, make_pipeline):
        """An item emitted from the worker thread at the mark is queued or dropped at once."""
        pipeline: BatchPipeline | None = None
        waited: list[float] = []

        class Reentrant(RecordingExporter):
            def export(self, batch: Sequence[Record]) -> ExportResult:
                if pipeline is not None and not waited:
                    started = time.monotonic()
                    for i in range(100, 130):
                        pipeline.emit(_record(i))
                    waited.append(time.monotonic() - started)
                return super().export(batch)

        pipeline = BatchPipeline(
            Reentrant(), max_batch=4, max_queue=16, backpressure_timeout=5.0
        )
        try:
            pipeline.emit(_record(0))
            assert pipeline.flush(10)
            stats = pipeline.stats()
        finally:
            pipeline.shutdown(5)

        assert waited[0] < 1.0
        assert 0 == stats["waited"]
        assert 14 == stats["dropped"]


class TestCapabilities:
    def test_declared_backlog_and_idle_are_used(self, make_pipeline):
        """An exporter with pending() and idle() gets both used; a plain attribute is not."""

        class Outboxish(RecordingExporter):
            def __init__(self) -> None:
                super().__init__()
                self.idled = 0

            def idle(self) -> ExportResult:
                self.idled += 1
                return ExportResult()

            def pending(self) -> int:
                return 7

        class NotACapability(RecordingExporter):
            pending = 3  # an attribute, not the Backlog protocol's method

        outbox = Outboxish()
        declared = BatchPipeline(outbox, flush_interval=30.0)
        plain = BatchPipeline(NotACapability(), flush_interval=30.0)
        try:
            declared.emit(_record(1))
            plain.emit(_record(2))
            assert declared.flush(10)
            assert plain.flush(10)
            stats, plain_stats = declared.stats(), plain.stats()
        finally:
            declared.shutdown(5)
            plain.shutdown(5)

        assert 7 == stats["pending"]
        assert outbox.idled >= 1  # flush() runs one delivery pass
        assert 0 == plain_stats["pending"]


class TestFailures:
    def test_exporter_exception_is_counted_and_the_worker_survives(
        self, exporter, make_pipeline, caplog
    ):
        """An exporter that raises loses that batch only; later batches go through."""
        pipeline = make_pipeline(max_batch=5)
        exporter.fail_with = RuntimeError("backend exploded")
        for i in range(5):
            pipeline.emit(_record(i))
        with caplog.at_level(logging.WARNING, logger="context_trace"):
            assert pipeline.flush(10)
        exporter.fail_with = None
        for i in range(5, 8):
            pipeline.emit(_record(i))
        assert pipeline.flush(10)

        stats = pipeline.stats()
        assert 5 == stats["failed"]
        assert 3 == stats["exported"]
        assert ["r5", "r6", "r7"] == exporter.ids
        assert any("exporter raised" in r.getMessage() for r in caplog.records)

    def test_a_failing_conversion_skips_one_record_only(self, exporter, make_pipeline):
        """prepare() failing on one item does not lose the others."""
        pipeline = make_pipeline()
        pipeline.emit(_record(1))
        pipeline.emit(object())  # not a record: skipped by prepare
        pipeline.emit(_record(2))
        assert pipeline.flush(10)

        assert ["r1", "r2"] == exporter.ids
        assert 1 == pipeline.stats()["failed"]


class TestShutdown:
    def test_shutdown_drains_then_closes_and_is_idempotent(
        self, exporter, make_pipeline
    ):
        """shutdown() exports what is queued, closes the exporter once, and can repeat."""
        pipeline = make_pipeline()
        for i in range(20):
            pipeline.emit(_record(i))

        assert pipeline.shutdown(10)
        assert pipeline.shutdown(10)
        assert 20 == len(exporter.ids)
        assert 1 == exporter.shutdown_calls

    def test_emit_after_shutdown_is_dropped_not_raised(self, exporter, make_pipeline):
        """A record arriving after shutdown is counted as dropped."""
        pipeline = make_pipeline()
        pipeline.shutdown(5)
        pipeline.emit(_record(1))

        assert 1 == pipeline.stats()["dropped"]
        assert [] == exporter.ids

    def test_shutdown_waits_at_most_its_timeout(self, exporter, make_pipeline):
        """A hung exporter cannot hold shutdown past its timeout."""
        exporter.gate.clear()
        pipeline = make_pipeline(max_batch=1)
        pipeline.emit(_record(1))
        assert exporter.entered.wait(10)
        pipeline.emit(_record(2))

        assert not pipeline.shutdown(0.2)


class TestRejectsBadArguments:
    @pytest.mark.parametrize(
        ("kwargs", "name"),
        [
            ({"max_queue": 0}, "max_queue"),
            ({"max_batch": 0}, "max_batch"),
            ({"flush_interval": 0}, "flush_interval"),
        ],
    )
    def test_bad_sizes(self, exporter, kwargs, name):
        """Constructor arguments are checked up front, naming the parameter."""
        with pytest.raises(ValueError, match=name):
            BatchPipeline(exporter, **kwargs)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
class TestFork:
    def test_child_gets_a_fresh_worker_and_exports_on_its_own(self, tmp_path: Path):
        """After fork the child's records go through the child's own worker."""
        db = tmp_path / "fork.db"
        ct.configure(db_path=db, flush_interval=30.0)
        chain = echo_chain()
        with ct.track_user("parent"):
            chain.invoke({"q": "before fork"})
        # The parent's worker is running now; the child must start its own.
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # child
            code = 1
            try:
                os.close(read)
                with ct.track_user("child"):
                    chain.invoke({"q": "from the child"})
                ok = ct.flush(20)
                stats = ct.stats()
                code = (
                    0 if ok and stats["exported"] == 1 and stats["enqueued"] == 1 else 2
                )
            finally:
                os.write(write, str(code).encode())
                os._exit(code)
        os.close(write)
        _, status = os.waitpid(pid, 0)
        child_said = os.read(read, 10).decode()
        os.close(read)
        assert ct.flush(20)

        assert "0" == child_said
        assert 0 == os.waitstatus_to_exitcode(status)
        import sqlite3

        con = sqlite3.connect(db)
        try:
            users = sorted(
                u for (u,) in con.execute("select user_id from conversations")
            )
        finally:
            con.close()
        assert ["child", "parent"] == users


class TestExit:
    def test_records_are_flushed_at_interpreter_exit(self, tmp_path: Path):
        """A script that never calls flush() still exports everything at exit."""
        db = tmp_path / "exit.db"
        script = textwrap.dedent(
            f"""
            import context_trace as ct
            from langchain_core.language_models.fake_chat_models import ParrotFakeChatModel
            ct.configure(db_path={str(db)!r}, flush_interval=60.0)
            model = ParrotFakeChatModel()
            for i in range(50):
                with ct.track_user(f"user-{{i % 5}}"):
                    model.invoke(f"hello {{i}}")
            """
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONTEXT_")}
        done = subprocess.run(
            [sys.executable, "-c", script],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

        assert 0 == done.returncode, done.stderr
        import sqlite3

        con = sqlite3.connect(db)
        try:
            (count,) = con.execute("select count(*) from conversations").fetchone()
        finally:
            con.close()
        assert 50 == count


class TestStoreDeletedWhileRunning:
    def test_stats_count_what_the_recreated_store_holds(self, tmp_path: Path):
        """Turns after the store file is deleted are in a recreated file and counted."""
        db = tmp_path / "deleted.db"
        ct.configure(db_path=db, flush_interval=30.0)
        chain = echo_chain()
        for i in range(20):
            with ct.track_user(f"u{i}"):
                chain.invoke({"q": f"before {i}"})
        assert ct.flush(20)
        db.unlink()
        for i in range(30):
            with ct.track_user(f"u{i}"):
                chain.invoke({"q": f"after {i}"})
        assert ct.flush(20)

        stats = ct.stats()
        assert (50, 0) == (stats["exported"], stats["failed"])
        assert db.exists()
        import sqlite3

        con = sqlite3.connect(db)
        try:
            (count,) = con.execute("select count(*) from conversations").fetchone()
        finally:
            con.close()
        assert 30 == count


class TestThroughTheScopes:
    def test_module_flush_and_stats_cover_recorded_turns(self, exporter):
        """ct.flush() delivers turns recorded under scopes; ct.stats() counts them."""
        ct.configure(exporter=exporter, flush_interval=30.0)
        chain = echo_chain()
        for i in range(30):
            with ct.track_user(f"u{i}"):
                chain.invoke({"q": f"question {i}"})

        assert ct.flush(10)
        assert 30 == ct.stats()["exported"]
        assert {f"u{i}" for i in range(30)} == {
            r.user_id for b in exporter.batches for r in b
        }

    def test_runs_that_are_not_conversations_are_skipped_not_failed(self, exporter):
        """A scope's identity RunnableLambda is counted skipped; only real errors count failed."""
        ct.configure(exporter=exporter, flush_interval=30.0)
        with ct.track_user("u1"):
            RunnableLambda(lambda x: x).invoke("not a conversation")
            echo_chain().invoke({"q": "a real question"})

        assert ct.flush(10)
        stats = ct.stats()
        assert (1, 1, 0) == (stats["exported"], stats["skipped"], stats["failed"])
        assert 2 == stats["enqueued"]

    def test_inline_capture_counts_skipped_runs_too(self):
        """testing.capture() counts a scope's non-conversation run as skipped, not failed."""
        with capture() as records, ct.track_user("u1"):
            RunnableLambda(lambda x: x).invoke("not a conversation")
            stats = ct.stats()

        assert [] == list(records)
        assert (1, 0) == (stats["skipped"], stats["failed"])


class TestServerless:
    def test_outermost_scope_exit_flushes(self, exporter):
        """serverless=True: leaving the outermost scope exports at once, no flush()."""
        ct.configure(exporter=exporter, serverless=True, flush_interval=60.0)
        chain = echo_chain()
        with ct.track_user("lambda-user"):
            chain.invoke({"q": "one"})
            with ct.track_user("inner"):
                chain.invoke({"q": "two"})
            assert [] == exporter.ids  # inner exit is not the outermost

        assert 2 == len(exporter.ids)

    def test_decorated_stream_flushes_when_it_ends(self, exporter):
        """A stream returned from a decorated handler flushes when it is exhausted."""
        ct.configure(exporter=exporter, serverless=True, flush_interval=60.0)
        chain = echo_chain()

        @ct.track_user(user_id=lambda user: user)
        def handler(user: str):
            return chain.stream({"q": f"hello {user}"})

        stream = handler("streamer")
        assert [] == exporter.ids
        assert "hello streamer" == "".join(stream)

        assert 1 == len(exporter.ids)

    def test_without_serverless_nothing_is_exported_before_the_interval(self, exporter):
        """The default mode leaves export to the background worker."""
        ct.configure(exporter=exporter, flush_interval=60.0)
        with ct.track_user("u"):
            echo_chain().invoke({"q": "x"})

        assert [] == exporter.ids
        assert ct.flush(10)
        assert 1 == len(exporter.ids)


class TestFlushRacingShutdown:
    def test_flush_racing_the_worker_exit_returns(self, exporter, make_pipeline):
        """flush() still returns when the worker exits between its check and its marker."""
        pipeline = make_pipeline()
        pipeline.emit(_record(1))
        assert pipeline.flush(10)
        real = pipeline._thread
        assert real is not None
        pipeline._stopping = True  # let the real worker finish its last round
        pipeline._wake.set()
        real.join(10)

        class StillAliveAtTheCheck:
            """The worker as flush() saw it a moment before it exited."""

            def is_alive(self) -> bool:
                return True

        pipeline._thread = StillAliveAtTheCheck()  # type: ignore[assignment]
        pipeline._queue.append(_record(2))

        assert pipeline.flush(2)
        assert ["r1", "r2"] == exporter.ids
        pipeline._thread = real
