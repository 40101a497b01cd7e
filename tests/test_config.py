"""configure(), environment variables, sampling, redaction and the off switch."""

from __future__ import annotations

import logging

import pytest

import context_trace as ct
from context_trace import _runtime
from context_trace.testing import capture

from .conftest import echo_chain

FAKE_TOKEN = "test-token-5e3c9a"


class TestEnvironment:
    def test_environment_is_read_lazily_at_first_use(self, monkeypatch, tmp_path):
        """Variables set after import but before first use are honoured."""
        monkeypatch.setenv("CONTEXT_TRACE_SAMPLE_RATE", "0.25")
        monkeypatch.setenv("CONTEXT_TRACE_MAX_QUEUE", "77")
        monkeypatch.setenv("CONTEXT_TRACE_FLUSH_INTERVAL", "0.5")
        monkeypatch.setenv("CONTEXT_TRACE_DB", str(tmp_path / "x.db"))
        _runtime.reset()

        config = ct.get_config()

        assert 0.25 == config.sample_rate
        assert 77 == config.max_queue
        assert 0.5 == config.flush_interval
        assert tmp_path / "x.db" == config.db_path

    def test_explicit_arguments_win_over_the_environment(self, monkeypatch):
        """configure(sample_rate=...) beats CONTEXT_TRACE_SAMPLE_RATE."""
        monkeypatch.setenv("CONTEXT_TRACE_SAMPLE_RATE", "0.25")

        assert 1.0 == ct.configure(sample_rate=1.0).sample_rate

    @pytest.mark.parametrize("name", ["CONTEXT_TOKEN", "GETCONTEXT_TOKEN"])
    def test_token_from_either_variable(self, monkeypatch, name):
        """Both CONTEXT_TOKEN and GETCONTEXT_TOKEN provide the token."""
        monkeypatch.setenv(name, FAKE_TOKEN)
        _runtime.reset()

        assert FAKE_TOKEN == ct.get_config().token

    @pytest.mark.parametrize(
        ("name", "value"),
        [
            ("CONTEXT_TRACE_SAMPLE_RATE", "lots"),
            ("CONTEXT_TRACE_MAX_QUEUE", "1.5"),
            ("CONTEXT_TRACE_DISABLED", "maybe"),
            ("CONTEXT_TRACE_SAMPLE_RATE", "2"),
            ("CONTEXT_TRACE_FLUSH_ON_SIGTERM", "sometimes"),
        ],
    )
    def test_bad_environment_values_name_the_variable(self, monkeypatch, name, value):
        """A malformed variable fails with a message naming it (or its setting)."""
        monkeypatch.setenv(name, value)
        _runtime.reset()

        with pytest.raises(
            ValueError, match=name.removeprefix("CONTEXT_TRACE_").lower() + "|" + name
        ):
            ct.get_config()


class TestValidation:
    @pytest.mark.parametrize(
        ("kwargs", "error", "name"),
        [
            (
                {"sample_rate": 1.5},
                ValueError,
                "sample_rate must be between 0.0 and 1.0, got 1.5",
            ),
            ({"sample_rate": -0.1}, ValueError, "sample_rate"),
            ({"sample_rate": "half"}, TypeError, "sample_rate"),
            ({"max_queue": 0}, ValueError, "max_queue"),
            ({"max_queue": 2.5}, TypeError, "max_queue"),
            ({"flush_interval": 0}, ValueError, "flush_interval"),
            ({"enabled": "yes"}, TypeError, "enabled"),
            ({"flush_on_sigterm": 1}, TypeError, "flush_on_sigterm must be a bool"),
            ({"endpoint": "ftp://x"}, ValueError, "endpoint"),
            ({"token": 123}, TypeError, "token"),
            ({"exporter": object()}, TypeError, "exporter"),
            ({"redact": 42}, TypeError, "redact"),
            ({"redact": ["email", "ssn"]}, ValueError, "ssn"),
            ({"run_metadata": "sometimes"}, ValueError, "run_metadata"),
            ({"run_metadata": 1}, ValueError, "run_metadata must be True, False"),
            ({"run_metadata": 0.0}, ValueError, "run_metadata must be True, False"),
            ({"db_path": 3}, TypeError, "db_path"),
        ],
    )
    def test_bad_values_raise_naming_the_parameter(self, kwargs, error, name):
        """configure() rejects bad input at once, saying which argument and why."""
        with pytest.raises(error, match=name.replace("(", r"\(").replace(".", r"\.")):
            ct.configure(**kwargs)

    def test_unknown_arguments_are_rejected(self):
        """A misspelt option is a TypeError, not silently ignored."""
        with pytest.raises(TypeError, match="sample_rat"):
            ct.configure(sample_rat=0.5)  # type: ignore[call-arg]


class TestSecrets:
    def test_token_is_masked_in_repr(self):
        """repr(config) never shows the token."""
        config = ct.configure(token=FAKE_TOKEN, endpoint="http://127.0.0.1:9")

        assert FAKE_TOKEN not in repr(config)
        assert FAKE_TOKEN not in str(config)
        assert "'***'" in repr(config)


class TestOffSwitch:
    def test_disabled_scopes_record_nothing(self, monkeypatch):
        """CONTEXT_TRACE_DISABLED=1 makes scopes no-ops for recording."""
        monkeypatch.setenv("CONTEXT_TRACE_DISABLED", "1")
        _runtime.reset()
        chain = echo_chain()
        with capture() as records, ct.track_user("u1"):
            assert "u1" == ct.current_user()
            assert ct.current_handler() is None
            chain.invoke({"q": "hello"})

        assert [] == records


class TestSampling:
    def _run_sessions(self, n_sessions: int, turns: int) -> list[ct.Conversation]:
        chain = echo_chain()
        with capture() as records:
            for s in range(n_sessions):
                with ct.context_session(f"session-{s}", user_id=f"user-{s}"):
                    for t in range(turns):
                        chain.invoke({"q": f"s{s} t{t}"})
        return records.conversations

    def test_rate_zero_records_nothing(self):
        """sample_rate=0 records no turn at all."""
        ct.configure(sample_rate=0.0)
        chain = echo_chain()
        with capture() as records:
            for i in range(20):
                with ct.track_user(f"u{i}"):
                    chain.invoke({"q": "x"})
            conversations = self._run_sessions(10, 2)

        assert [] == records
        assert [] == conversations

    def test_rate_one_records_everything(self):
        """sample_rate=1 records every turn."""
        ct.configure(sample_rate=1.0)

        assert 30 == len(self._run_sessions(10, 3))

    def test_sessions_are_never_split(self):
        """With sampling, a session is kept whole or dropped whole."""
        ct.configure(sample_rate=0.5)
        conversations = self._run_sessions(200, 3)
        per_session: dict[str | None, int] = {}
        for c in conversations:
            per_session[c.session_id] = per_session.get(c.session_id, 0) + 1

        assert set(per_session.values()) == {3}
        assert 40 < len(per_session) < 160

    def test_session_decision_is_stable_across_processes(self):
        """The keep/drop decision is a pure function of the session id."""
        config = ct.configure(sample_rate=0.3)
        decisions = [config.keep_session(f"s-{i}") for i in range(100)]
        _runtime.reset()
        again = ct.configure(sample_rate=0.3)

        assert decisions == [again.keep_session(f"s-{i}") for i in range(100)]


class TestRedaction:
    def test_builtin_patterns_apply_before_export(self, tmp_path):
        """E-mail, phone and card numbers are replaced before the store sees them."""
        ct.configure(redact=["email", "phone", "card"], db_path=tmp_path / "r.db")
        chain = echo_chain()
        with ct.track_user("u1"):
            chain.invoke(
                {
                    "q": "mail jane.doe@example.com, call +1 415-555-0199, card 4111 1111 1111 1111"
                }
            )
        assert ct.flush(10)

        import sqlite3

        con = sqlite3.connect(tmp_path / "r.db")
        try:
            texts = [t for (t,) in con.execute("select content from messages")]
        finally:
            con.close()
        joined = "\n".join(texts)
        assert "jane.doe@example.com" not in joined
        assert "4111" not in joined
        assert "555-0199" not in joined
        assert "[EMAIL]" in joined
        assert "[CARD]" in joined
        assert "[PHONE]" in joined

    def test_callable_redactor_and_env_list(self, monkeypatch):
        """A callable works, and CONTEXT_TRACE_REDACT=email enables a built-in."""
        ct.configure(redact=lambda text: text.replace("secret", "[X]"))
        chain = echo_chain()
        with capture() as records, ct.track_user("u"):
            chain.invoke({"q": "my secret plan"})
        monkeypatch.setenv("CONTEXT_TRACE_REDACT", "email")
        _runtime.reset()
        with capture() as records2, ct.track_user("u"):
            chain.invoke({"q": "me@example.org"})

        assert "my [X] plan" == records.conversations[0].answer
        assert "[EMAIL]" == records2.conversations[0].answer


class TestReconfigure:
    def test_reconfigure_flushes_the_previous_pipeline(self):
        """configure() again delivers what the old exporter still had queued."""
        first = ct.InMemoryExporter()
        ct.configure(exporter=first, flush_interval=60.0)
        chain = echo_chain()
        with ct.track_user("u1"):
            chain.invoke({"q": "one"})
        second = ct.InMemoryExporter()
        ct.configure(exporter=second, flush_interval=60.0)
        with ct.track_user("u2"):
            chain.invoke({"q": "two"})
        assert ct.flush(10)

        assert ["u1"] == [c.user_id for c in first.conversations]
        assert first.shut_down
        assert ["u2"] == [c.user_id for c in second.conversations]


class TestRecorderNeverBreaksTheApp:
    def test_enqueue_failure_is_logged_once(self, monkeypatch, caplog):
        """If the pipeline cannot be built, invokes still work; one warning."""

        def broken() -> None:
            raise RuntimeError("no pipeline for you")

        monkeypatch.setattr(_runtime, "_pipeline", broken)
        chain = echo_chain()
        with caplog.at_level(logging.DEBUG, logger="context_trace"):
            for _ in range(5):
                with ct.track_user("u"):
                    assert "fine" == chain.invoke({"q": "fine"})

        warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert 1 == len(warnings)
        assert "could not enqueue" in warnings[0].getMessage()


class TestBadConfigurationNeverBreaksTheApp:
    def test_bad_environment_value_turns_recording_off_with_one_error(
        self, monkeypatch, caplog
    ):
        """CONTEXT_TRACE_SAMPLE_RATE=50% logs once and scopes keep working, unrecorded."""
        monkeypatch.setenv("CONTEXT_TRACE_SAMPLE_RATE", "50%")
        _runtime.reset()
        chain = echo_chain()

        @ct.track_user(user_id=lambda user: user)
        def view(user: str) -> str:
            return chain.invoke({"q": f"hi {user}"})

        with (
            caplog.at_level(logging.DEBUG, logger="context_trace"),
            capture() as records,
        ):
            for i in range(3):
                with ct.track_user(f"u{i}"):
                    assert "x" == chain.invoke({"q": "x"})
                assert f"hi v{i}" == view(f"v{i}")

        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert 1 == len(errors)
        assert "CONTEXT_TRACE_SAMPLE_RATE" in errors[0].getMessage()
        assert [] == records
        with pytest.raises(ValueError, match="CONTEXT_TRACE_SAMPLE_RATE"):
            ct.get_config()

    def test_unusable_exporter_from_the_environment_drops_and_counts(
        self, monkeypatch, caplog
    ):
        """A plain-http remote endpoint: turns are dropped and counted, secrets never logged."""
        monkeypatch.setenv("CONTEXT_TOKEN", FAKE_TOKEN)
        monkeypatch.setenv(
            "CONTEXT_ENDPOINT", "http://user:s3cretpw@analytics.invalid:8080"
        )
        _runtime.reset()
        chain = echo_chain()
        with caplog.at_level(logging.DEBUG):
            for i in range(5):
                with ct.track_user(f"u{i}"):
                    chain.invoke({"q": "x"})

        stats = ct.stats()
        assert 5 == stats["dropped"]
        assert 0 == stats["exported"]
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert 1 == len(errors)
        logged = " ".join(r.getMessage() for r in caplog.records)
        assert "s3cretpw" not in logged
        assert FAKE_TOKEN not in logged

    def test_rejected_configure_keeps_the_previous_configuration(self):
        """configure() with an unusable endpoint raises and changes nothing."""
        first = ct.configure(sample_rate=0.5)

        with pytest.raises(ValueError, match="endpoint") as caught:
            ct.configure(token=FAKE_TOKEN, endpoint="http://user:pw@remote.invalid")

        assert "pw@" not in str(caught.value)
        assert first is ct.get_config()
