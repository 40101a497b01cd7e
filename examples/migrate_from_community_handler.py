"""
Migrating from langchain_community's ContextCallbackHandler: one import changes.

Before::

    from langchain_community.callbacks.context_callback import ContextCallbackHandler

After::

    from context_trace import ContextCallbackHandler

Everything else stays as it was: the handler is passed by hand in
``callbacks=[...]`` (to the chat model, to the chain, or bound with
``with_config``) and the user is tagged with ``headers={"user_id": ...}`` on the
chat model. What changes underneath: one handler can serve concurrent requests
(no message list is shared between turns), LCEL chains work (no
``outputs["text"]`` needed), and nothing is posted from inside the callback (a
background thread exports).

A fake chat model stands in for ``ChatOpenAI`` so this runs without keys::

    python examples/migrate_from_community_handler.py

It records to a temporary SQLite file (or to ``$CONTEXT_TRACE_DB``) and prints
what was recorded. With a token (``ContextCallbackHandler(token=...)`` or
``CONTEXT_TOKEN``) the conversations go to the Context API as well.
"""

from __future__ import annotations

import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from langchain_core.language_models.fake_chat_models import ParrotFakeChatModel
from langchain_core.messages import HumanMessage, SystemMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate

import context_trace

# The one line that changes (was: from langchain_community.callbacks.context_callback
# import ContextCallbackHandler).
from context_trace import ContextCallbackHandler

# The local store's reader (``context-trace`` on the command line shows the same).
from context_trace._store.reader import SQLiteReader


class FakeChatOpenAI(ParrotFakeChatModel):
    """
    Stands in for ``langchain_openai.ChatOpenAI``: echoes the last message.

    Like ``ChatOpenAI(headers=...)`` it reports its headers in the invocation
    params LangChain hands to callbacks, which is where the user id is read.
    """

    headers: dict[str, str] | None = None

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {**super()._identifying_params, "headers": self.headers}


PROMPT = ChatPromptTemplate.from_messages(
    [("system", "You are a helpful assistant."), ("human", "{question}")]
)


def main() -> None:
    if not os.environ.get("CONTEXT_TRACE_DB"):
        tmp = tempfile.mkdtemp(prefix="context-trace-example-")
        context_trace.configure(db_path=Path(tmp) / "traces.db")
    db_path = context_trace.get_config().db_path

    # As before: one handler (token from CONTEXT_TOKEN, or pass token="...").
    handler = ContextCallbackHandler()

    # 1. The pattern from LangChain's Context docs: the handler on the chat
    #    model, the user in its headers.
    chat = FakeChatOpenAI(headers={"user_id": "123"}, callbacks=[handler])
    chat.invoke(
        [
            SystemMessage("You are a helpful assistant."),
            HumanMessage("I'd like to know the weather."),
        ]
    )

    # 2. An LCEL chain with the handler in config. The community handler failed
    #    here (it read outputs["text"]); the answer is now found in any output.
    chain = PROMPT | FakeChatOpenAI(headers={"user_id": "456"}) | StrOutputParser()
    chain.invoke({"question": "What can you do?"}, config={"callbacks": [handler]})

    # 3. One handler shared by concurrent requests: each turn keeps its own user.
    def request(user_id: str) -> str:
        per_user = PROMPT | FakeChatOpenAI(headers={"user_id": user_id})
        bound = (per_user | StrOutputParser()).with_config(callbacks=[handler])
        return bound.invoke({"question": f"Hello from user {user_id}"})

    with ThreadPoolExecutor(3) as pool:
        list(pool.map(request, ["alice", "bob", "carol"]))

    # 4. The next step after migrating: no handler at all. Inside track_user every
    #    run is recorded for that user (it wins over a header user, too).
    plain = PROMPT | ParrotFakeChatModel() | StrOutputParser()
    with context_trace.track_user("789"):
        plain.invoke({"question": "And without passing callbacks?"})

    context_trace.flush()
    with SQLiteReader(db_path) as reader:
        conversations = sorted(
            reader.conversations(), key=lambda c: (c.started_at, c.id)
        )
    print(f"Recorded {len(conversations)} conversations in {db_path}")
    for conversation in conversations:
        print(f"\nuser={conversation.user_id}")
        for message in conversation.messages:
            print(f"  {message.role:>9}: {message.content}")
    context_trace.shutdown()


if __name__ == "__main__":
    main()
