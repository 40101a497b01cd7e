"""The web examples (examples/flask_app.py, examples/fastapi_app.py) work as documented."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import threading
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from context_trace import Conversation, InMemoryExporter, _runtime, flush

pytest.importorskip("flask")
pytest.importorskip("fastapi")

ROOT = Path(__file__).resolve().parents[2]


def load_example(name: str, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """Import examples/<name>.py by path (examples/ is not an installed package)."""
    spec = importlib.util.spec_from_file_location(
        f"_example_{name}", ROOT / "examples" / f"{name}.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # Registered while the test runs: pydantic resolves the module's annotations there.
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    return module


def conversations(exporter: InMemoryExporter) -> list[Conversation]:
    assert flush(10.0)
    return exporter.conversations


class Client:
    """Flask's and Starlette's test clients behind one small interface."""

    def __init__(self, name: str, module: ModuleType) -> None:
        self.name = name
        if name == "flask_app":
            self._client: Any = module.app.test_client()
        else:
            from fastapi.testclient import TestClient

            self._client = TestClient(module.app)

    def post(self, path: str, body: dict[str, Any], **headers: str) -> Any:
        return self._client.post(path, json=body, headers=_headers(headers))

    def get(self, path: str, **headers: str) -> Any:
        return self._client.get(path, headers=_headers(headers))

    @staticmethod
    def json(response: Any) -> Any:
        return response.get_json() if hasattr(response, "get_json") else response.json()

    @staticmethod
    def text(response: Any) -> str:
        if hasattr(response, "get_data"):
            return str(response.get_data(as_text=True))
        return str(response.text)


def _headers(headers: dict[str, str]) -> dict[str, str]:
    # x_session_id="s1" -> X-Session-Id: s1
    return {
        "-".join(p.capitalize() for p in k.split("_")): v for k, v in headers.items()
    }


@pytest.fixture(params=["flask_app", "fastapi_app"])
def client(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Client:
    """A test client for each example app."""
    return Client(request.param, load_example(request.param, monkeypatch))


class TestExamples:
    @pytest.mark.parametrize("name", ["flask_app", "fastapi_app"])
    def test_import_has_no_side_effects(
        self, name: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Importing an example builds its app and nothing else: no thread, no pipeline."""
        threads = threading.active_count()

        module = load_example(name, monkeypatch)

        assert threads == threading.active_count()
        assert _runtime._STATE.pipeline is None
        assert callable(module.app)

    def test_chat_route_records_the_url_user(
        self, exporter: InMemoryExporter, client: Client
    ) -> None:
        """POST /chat/<user_id> answers and records the turn for that user and session."""
        response = client.post(
            "/chat/alice", {"message": "Hi there"}, x_session_id="s1"
        )

        assert {"user_id": "alice", "session_id": "s1", "answer": "Hi there"} == (
            client.json(response)
        )
        assert "s1" == response.headers["X-Session-Id"]
        [conversation] = conversations(exporter)
        assert ("alice", "s1") == (conversation.user_id, conversation.session_id)
        assert [
            ("system", "You are a helpful assistant."),
            ("user", "Hi there"),
            ("assistant", "Hi there"),
        ] == [(m.role, m.content) for m in conversation.messages]

    def test_stream_route_records_the_url_user(
        self, exporter: InMemoryExporter, client: Client
    ) -> None:
        """GET /stream/<user_id> streams the answer and records it for that user."""
        response = client.get(
            "/stream/bob?message=Tell+me+more", x_user_id="someone-else"
        )

        assert (200, "Tell me more") == (response.status_code, client.text(response))
        [conversation] = conversations(exporter)
        assert ("bob", "Tell me more") == (conversation.user_id, conversation.answer)

    def test_feedback_rates_the_session(
        self, exporter: InMemoryExporter, client: Client
    ) -> None:
        """POST /feedback with the session header records a rating for that session."""
        headers = {"x_session_id": "s1", "x_user_id": "alice"}
        client.post("/chat/alice", {"message": "Hi"}, **headers)

        response = client.post("/feedback", {"rating": 1}, **headers)

        assert {"session_id": "s1", "ratings": [1]} == client.json(response)
        assert flush(10.0)
        assert [("s1", "alice", 1)] == [
            (f.session_id, f.user_id, f.rating) for f in exporter.feedback
        ]

    def test_feedback_without_a_session_is_refused(
        self, exporter: InMemoryExporter, client: Client
    ) -> None:
        """Feedback without X-Session-Id is a 400 and records nothing."""
        response = client.post("/feedback", {"rating": 1})

        assert 400 == response.status_code
        assert flush(10.0)
        assert [] == exporter.feedback

    def test_feedback_with_a_bad_rating_is_refused(
        self, exporter: InMemoryExporter, client: Client
    ) -> None:
        """A rating outside -1..1 is refused (Flask: 400, FastAPI's validation: 422)."""
        response = client.post("/feedback", {"rating": 5}, x_session_id="s1")

        assert {"flask_app": 400, "fastapi_app": 422}[client.name] == (
            response.status_code
        )
        assert flush(10.0)
        assert [] == exporter.feedback

    def test_fastapi_example_imports_as_uvicorn_names_it(self) -> None:
        """`uvicorn examples.fastapi_app:app` resolves from the repository root."""
        result = subprocess.run(
            [
                sys.executable,
                "-c",
                "import examples.fastapi_app as m; print(type(m.app).__name__)",
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )

        assert "FastAPI" == result.stdout.strip()
