"""
A FastAPI chat app whose conversations context_trace records per user and session.

Run it with ``uvicorn examples.fastapi_app:app`` from the repository root (or
``python examples/fastapi_app.py``); it serves on http://127.0.0.1:8000::

    curl -X POST http://127.0.0.1:8000/chat/alice -H 'X-Session-Id: s1' \\
         -H 'Content-Type: application/json' -d '{"message": "Hi there"}'
    curl 'http://127.0.0.1:8000/stream/alice?message=Tell+me+more' -H 'X-Session-Id: s1'
    curl -X POST http://127.0.0.1:8000/feedback -H 'X-Session-Id: s1' \\
         -H 'Content-Type: application/json' -d '{"rating": 1}'

then ``context-trace users`` lists what was recorded (in the local SQLite store,
``~/.context_trace/traces.db`` unless ``CONTEXT_TRACE_DB`` says otherwise; set
``CONTEXT_TOKEN`` to send it to Context instead).

``ContextTraceMiddleware`` gives every request a scope from its ``X-User-Id`` /
``X-Session-Id`` headers and flushes queued turns when the server shuts down;
the routes below narrow the scope to the user in the URL. The model is a fake
that echoes the question: swap in a real chat model in ``make_chain``.
Importing this module only builds ``app``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Literal

from fastapi import FastAPI, HTTPException
from fastapi.responses import StreamingResponse
from langchain_core.language_models.fake_chat_models import ParrotFakeChatModel
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import Runnable
from pydantic import BaseModel

from context_trace import current_session, track_user
from context_trace.integrations.asgi import ContextTraceMiddleware


def make_chain() -> Runnable[dict[str, str], str]:
    """The chain every route calls. Replace the fake model with a real one."""
    prompt = ChatPromptTemplate.from_messages(
        [("system", "You are a helpful assistant."), ("human", "{message}")]
    )
    model = ParrotFakeChatModel()  # e.g. langchain_openai.ChatOpenAI(model="...")
    return prompt | model | StrOutputParser()


CHAIN = make_chain()

app = FastAPI(title="context_trace example")
app.add_middleware(ContextTraceMiddleware)


class ChatRequest(BaseModel):
    message: str


class RatingRequest(BaseModel):
    rating: Literal[-1, 0, 1]


def _session_id() -> str | None:
    session = current_session()
    return session.id if session is not None else None


@app.post("/chat/{user_id}")
@track_user(user_id=lambda user_id: user_id)
async def chat(user_id: str, body: ChatRequest) -> dict[str, Any]:
    """Answer one message; the turn is recorded for *user_id*."""
    answer = await CHAIN.ainvoke({"message": body.message})
    return {"user_id": user_id, "session_id": _session_id(), "answer": answer}


@track_user(user_id=lambda user_id: user_id)
async def _answer_stream(user_id: str, message: str) -> AsyncIterator[str]:
    # A decorated async generator runs every step in the user's scope.
    async for chunk in CHAIN.astream({"message": message}):
        yield chunk


@app.get("/stream/{user_id}")
async def stream(user_id: str, message: str = "Hello") -> StreamingResponse:
    """Stream the answer chunk by chunk; recorded for *user_id* as well."""
    return StreamingResponse(_answer_stream(user_id, message), media_type="text/plain")


@app.post("/feedback")
async def feedback(body: RatingRequest) -> dict[str, Any]:
    """Rate the last answer of the session named by the X-Session-Id header."""
    session = current_session()
    if session is None:
        raise HTTPException(400, "send the conversation's X-Session-Id header")
    session.rate(body.rating)
    return {"session_id": session.id, "ratings": session.ratings}


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=8000)
