"""
A Flask chat app whose conversations context_trace records per user and session.

Run it with ``python examples/flask_app.py`` (it serves on http://127.0.0.1:5000)::

    curl -X POST http://127.0.0.1:5000/chat/alice -H 'X-Session-Id: s1' \\
         -H 'Content-Type: application/json' -d '{"message": "Hi there"}'
    curl 'http://127.0.0.1:5000/stream/alice?message=Tell+me+more' -H 'X-Session-Id: s1'
    curl -X POST http://127.0.0.1:5000/feedback -H 'X-Session-Id: s1' \\
         -H 'Content-Type: application/json' -d '{"rating": 1}'

then ``context-trace users`` lists what was recorded (in the local SQLite store,
``~/.context_trace/traces.db`` unless ``CONTEXT_TRACE_DB`` says otherwise; set
``CONTEXT_TOKEN`` to send it to Context instead).

``ContextTrace(app)`` gives every request a scope from its ``X-User-Id`` /
``X-Session-Id`` headers; the routes below narrow it to the user in the URL.
The model is a fake that echoes the question: swap in a real chat model in
``make_chain``. Importing this module only builds ``app``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from flask import Flask, Response, request
from langchain_core.language_models.fake_chat_models import ParrotFakeChatModel
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import Runnable

from context_trace import current_session, track_user
from context_trace.integrations.flask import ContextTrace


def make_chain() -> Runnable[dict[str, str], str]:
    """The chain every route calls. Replace the fake model with a real one."""
    prompt = ChatPromptTemplate.from_messages(
        [("system", "You are a helpful assistant."), ("human", "{message}")]
    )
    model = ParrotFakeChatModel()  # e.g. langchain_openai.ChatOpenAI(model="...")
    return prompt | model | StrOutputParser()


CHAIN = make_chain()

app = Flask(__name__)
ContextTrace(app)


def _session_id() -> str | None:
    session = current_session()
    return session.id if session is not None else None


@app.post("/chat/<user_id>")
@track_user(user_id=lambda user_id: user_id)
def chat(user_id: str) -> dict[str, Any]:
    """Answer one message; the turn is recorded for *user_id*."""
    message = request.get_json(force=True)["message"]
    answer = CHAIN.invoke({"message": message})
    return {"user_id": user_id, "session_id": _session_id(), "answer": answer}


@track_user(user_id=lambda user_id: user_id)
def _answer_stream(user_id: str, message: str) -> Iterator[str]:
    # A decorated generator runs every step in the user's scope, even though
    # the server iterates it after the view has returned.
    yield from CHAIN.stream({"message": message})


@app.get("/stream/<user_id>")
def stream(user_id: str) -> Response:
    """Stream the answer chunk by chunk; recorded for *user_id* as well."""
    message = request.args.get("message", "Hello")
    return Response(_answer_stream(user_id, message), mimetype="text/plain")


@app.post("/feedback")
def feedback() -> tuple[dict[str, Any], int]:
    """Rate the last answer of the session named by the X-Session-Id header."""
    session = current_session()
    if session is None:
        return {"error": "send the conversation's X-Session-Id header"}, 400
    try:
        session.rate(request.get_json(force=True)["rating"])
    except (KeyError, TypeError, ValueError) as exc:
        return {"error": str(exc)}, 400
    return {"session_id": session.id, "ratings": session.ratings}, 200


if __name__ == "__main__":
    app.run(host="127.0.0.1", port=5000)
