"""FastAPI: the middleware plus @track_user on endpoints whose signatures FastAPI reads."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any
from uuid import UUID, uuid4

import pytest

pytest.importorskip("fastapi")

from fastapi import Depends, FastAPI
from fastapi.responses import StreamingResponse
from fastapi.testclient import TestClient
from langchain_core.language_models.fake_chat_models import ParrotFakeChatModel
from langchain_core.output_parsers import StrOutputParser
from pydantic import BaseModel

from context_trace import (
    Conversation,
    InMemoryExporter,
    context_session,
    current_session,
    current_user,
    flush,
    track_user,
)
from context_trace.integrations.asgi import ContextTraceMiddleware

CHAIN = ParrotFakeChatModel() | StrOutputParser()


class ChatBody(BaseModel):
    message: str


def prefix() -> str:
    return "dep"


def make_app() -> FastAPI:
    app = FastAPI()
    app.add_middleware(ContextTraceMiddleware)

    @app.post("/chat/{user_id}")
    @track_user(user_id=lambda user_id: user_id)
    def chat(
        user_id: str, body: ChatBody, tone: str = "plain", dep: str = Depends(prefix)
    ) -> dict[str, Any]:
        answer = CHAIN.invoke(body.message)
        session = current_session()
        return {
            "answer": answer,
            "user": current_user(),
            "session": session.id if session else None,
            "tone": tone,
            "dep": dep,
        }

    @app.post("/achat/{user_id}")
    @track_user(user_id=lambda user_id: user_id)
    async def achat(
        user_id: str, body: ChatBody, tone: str = "plain", dep: str = Depends(prefix)
    ) -> dict[str, Any]:
        answer = await CHAIN.ainvoke(body.message)
        session = current_session()
        return {
            "answer": answer,
            "user": current_user(),
            "session": session.id if session else None,
            "tone": tone,
            "dep": dep,
        }

    @app.get("/stream/{user_id}")
    @track_user(user_id=lambda user_id: user_id)
    def stream(user_id: str, message: str) -> StreamingResponse:
        def body() -> Iterator[str]:
            yield from CHAIN.stream(message)
            yield f"|{current_user()}"

        return StreamingResponse(body(), media_type="text/plain")

    @app.get("/astream/{user_id}")
    @track_user(user_id=lambda user_id: user_id)
    async def astream(user_id: str, message: str) -> StreamingResponse:
        async def body() -> AsyncIterator[str]:
            async for chunk in CHAIN.astream(message):
                yield chunk
            yield f"|{current_user()}"

        return StreamingResponse(body(), media_type="text/plain")

    @app.get("/users/{user_id}/ask")
    @context_session(session_id=lambda conversation: conversation)
    @track_user(user_id=lambda user_id: user_id)
    def ask(user_id: UUID, message: str, conversation: UUID) -> dict[str, Any]:
        session = current_session()
        return {
            "answer": CHAIN.invoke(message),
            "user": current_user(),
            "session": session.id if session else None,
        }

    @app.get("/profiles/{profile_id}/ask")
    @track_user(user_id=lambda profile_id: {"profile": profile_id})
    def ask_profile(profile_id: int, message: str) -> dict[str, Any]:
        return {"answer": CHAIN.invoke(message), "user": current_user()}

    return app


def conversations(exporter: InMemoryExporter) -> list[Conversation]:
    assert flush(10.0)
    return exporter.conversations


class TestTrackUserOnEndpoints:
    @pytest.mark.parametrize("path", ["/chat", "/achat"])
    def test_path_query_body_and_depends_still_work(
        self, exporter: InMemoryExporter, path: str
    ) -> None:
        """A decorated sync or async endpoint gets its parameters; the path user wins."""
        client = TestClient(make_app())

        response = client.post(
            f"{path}/u-path?tone=warm",
            json={"message": "hi"},
            headers={"X-User-Id": "u-header", "X-Session-Id": "s-1"},
        )

        assert {
            "answer": "hi",
            "user": "u-path",
            "session": "s-1",
            "tone": "warm",
            "dep": "dep",
        } == response.json()
        assert "s-1" == response.headers["X-Session-Id"]
        [conversation] = conversations(exporter)
        assert ("u-path", "s-1") == (conversation.user_id, conversation.session_id)

    @pytest.mark.parametrize("path", ["/stream", "/astream"])
    def test_a_streaming_endpoint_is_attributed_to_its_path_user(
        self, exporter: InMemoryExporter, path: str
    ) -> None:
        """A decorated endpoint returning a StreamingResponse records for its user."""
        client = TestClient(make_app())

        response = client.get(
            f"{path}/u-path?message=hello",
            headers={"X-User-Id": "u-header", "X-Session-Id": "s-2"},
        )

        assert "hello|u-path" == response.text
        [conversation] = conversations(exporter)
        assert ("u-path", "s-2") == (conversation.user_id, conversation.session_id)
        assert [("user", "hello"), ("assistant", "hello")] == [
            (m.role, m.content) for m in conversation.messages
        ]

    @pytest.mark.parametrize("path", ["/chat/{user_id}", "/achat/{user_id}"])
    def test_openapi_schema_lists_the_parameters(self, path: str) -> None:
        """FastAPI still sees the path, query and body parameters (not the dependency)."""
        schema = TestClient(make_app()).get("/openapi.json").json()
        operation = schema["paths"][path]["post"]

        assert [("user_id", "path", True), ("tone", "query", False)] == [
            (p["name"], p["in"], p["required"]) for p in operation["parameters"]
        ]
        assert {"$ref": "#/components/schemas/ChatBody"} == operation["requestBody"][
            "content"
        ]["application/json"]["schema"]

    def test_validation_still_applies(self, exporter: InMemoryExporter) -> None:
        """A body that fails validation is a 422 and records nothing."""
        client = TestClient(make_app())

        response = client.post("/chat/u1", json={"text": "wrong field"})

        assert 422 == response.status_code
        assert [] == conversations(exporter)


class TestUUIDIds:
    def test_uuid_path_and_query_parameters_attribute_every_request(
        self, exporter: InMemoryExporter
    ) -> None:
        """``user_id: UUID`` (and a UUID session) resolve to their canonical strings."""
        client = TestClient(make_app())
        users = [uuid4() for _ in range(3)]
        conversation = uuid4()

        answers = [
            client.get(
                f"/users/{str(user).upper()}/ask",
                params={"message": f"m{n}", "conversation": conversation.hex},
            ).json()
            for n, user in enumerate(users)
        ]

        assert [
            {"answer": f"m{n}", "user": str(user), "session": str(conversation)}
            for n, user in enumerate(users)
        ] == answers
        assert [(str(user), str(conversation)) for user in users] == [
            (c.user_id, c.session_id) for c in conversations(exporter)
        ]

    def test_resolver_returning_a_non_id_records_the_turn_anonymously(
        self, exporter: InMemoryExporter, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A resolver value that is no id: served, recorded with no user, warned by name."""
        client = TestClient(make_app())

        with caplog.at_level(logging.WARNING, logger="context_trace"):
            answers = [
                client.get(f"/profiles/{n}/ask", params={"message": f"m{n}"}).json()
                for n in range(3)
            ]

        warned = [r.getMessage() for r in caplog.records]
        assert [{"answer": f"m{n}", "user": None} for n in range(3)] == answers
        assert [(None, f"m{n}") for n in range(3)] == [
            (c.user_id, c.answer) for c in conversations(exporter)
        ]
        assert 1 == len(warned)
        assert "ask_profile()" in warned[0]
        assert "user_id" in warned[0]
        assert "dict" in warned[0]
