"""
The server side of ``benchmarks/server.py``: one chat app in one process.

    python benchmarks/_server_app.py SPEC_JSON

``benchmarks/server.py`` starts this, one process per framework and mode, and
drives it with its load client; run by hand only to debug it. *SPEC_JSON* holds
``framework`` (``flask``: Flask under waitress's thread pool; ``fastapi``:
FastAPI under uvicorn), ``mode`` (``bare``, ``noop``, ``tracked``,
``langfuse``, ``langsmith``), ``db`` (the SQLite store of ``tracked``), ``threads`` (waitress),
``connection_limit``, ``agent`` (also serve the agent routes), ``stub`` (the
loopback stub the peers send to) and the model's ``ttft``, ``per_token`` and
``tokens``.

Routes, each answering one message (``{"message": "..."}`` in a POST body):
``/invoke/chain`` (the whole answer as JSON), ``/stream/chain`` (the answer's
tokens as they come, ``text/plain`` in chunks), and with ``agent`` the same for
``/invoke/agent`` and ``/stream/agent``. The chain is ``ChatPromptTemplate |
SleepyChatModel | StrOutputParser``; the agent is LangChain's ``create_agent``
(or LangGraph's ``create_react_agent``) with one tool, on the same model.

Protocol with the parent: one JSON line on stdout once listening
(``{"port": N, "pid": P, ...}``); the parent closes our stdin to stop us; we stop
serving, flush context_trace (``tracked``) or the peer's client, and print one
last JSON line (``{"stopped": true, "stats": ...}``) before exiting 0. We never
touch the network beyond 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any, cast

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from langchain_core.callbacks import (  # noqa: E402 - after the sys.path line
    AsyncCallbackManagerForLLMRun,
    BaseCallbackHandler,
    CallbackManagerForLLMRun,
)
from langchain_core.language_models import BaseChatModel  # noqa: E402
from langchain_core.messages import (  # noqa: E402
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    ToolMessage,
    UsageMetadata,
)
from langchain_core.output_parsers import StrOutputParser  # noqa: E402
from langchain_core.outputs import (  # noqa: E402
    ChatGeneration,
    ChatGenerationChunk,
    ChatResult,
)
from langchain_core.prompts import ChatPromptTemplate  # noqa: E402
from langchain_core.tools import tool  # noqa: E402

_MODEL_NAME = "sleepy-chat-1"
_ANSWER = (
    "Paris is the capital of France and its largest city, on the Seine, "
    "known for the Louvre, the Eiffel Tower, cafés, museums and long walks "
    "along the river at dusk."
)
_WORDS = _ANSWER.split()


# --------------------------------------------------------------------------- model
class SleepyChatModel(BaseChatModel):
    """
    A chat model that waits like a remote one: it *sleeps*, it does not compute.

    The first token comes after ``ttft`` seconds, every further one ``per_token``
    seconds later; ``tokens`` tokens in all. ``invoke`` waits the whole time in
    one sleep (a non-streamed API call returns the finished answer); ``stream``
    yields each token when it is due. Async paths use ``asyncio.sleep``. With tools
    bound (an agent), its first answer to a question calls ``get_weather`` and
    its answer after the tool's result is text.
    """

    ttft: float = 0.2
    per_token: float = 0.002
    tokens: int = 20

    @property
    def _llm_type(self) -> str:
        return "sleepy-chat"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_name": _MODEL_NAME}

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> Any:
        # An agent binds its tools; the model only needs to know it has some.
        return self.bind(tools=[getattr(t, "name", str(t)) for t in tools])

    def _total_seconds(self) -> float:
        return self.ttft + max(0, self.tokens - 1) * self.per_token

    def _texts(self) -> list[str]:
        return [
            _WORDS[i % len(_WORDS)] + ("" if i == self.tokens - 1 else " ")
            for i in range(self.tokens)
        ]

    @staticmethod
    def _wants_tool(messages: Sequence[BaseMessage], kwargs: dict[str, Any]) -> bool:
        return bool(kwargs.get("tools")) and not isinstance(messages[-1], ToolMessage)

    def _usage(self, messages: Sequence[BaseMessage], out: int) -> UsageMetadata:
        prompt = sum(len(str(m.content).split()) for m in messages)
        usage = {
            "input_tokens": prompt,
            "output_tokens": out,
            "total_tokens": prompt + out,
        }
        return cast("UsageMetadata", usage)

    def _result(
        self, messages: Sequence[BaseMessage], kwargs: dict[str, Any]
    ) -> ChatResult:
        meta = {"model_name": _MODEL_NAME}
        if self._wants_tool(messages, kwargs):
            message = AIMessage(
                content="",
                tool_calls=[_tool_call()],
                response_metadata=meta,
                usage_metadata=self._usage(messages, 8),
            )
        else:
            message = AIMessage(
                content="".join(self._texts()),
                response_metadata=meta,
                usage_metadata=self._usage(messages, self.tokens),
            )
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _chunks(
        self, messages: Sequence[BaseMessage], kwargs: dict[str, Any]
    ) -> Iterator[tuple[float, ChatGenerationChunk]]:
        """(seconds to wait first, chunk) for each chunk of the streamed answer."""
        if self._wants_tool(messages, kwargs):
            call = _tool_call()
            chunk = AIMessageChunk(
                content="",
                tool_call_chunks=[
                    {
                        "name": call["name"],
                        "args": json.dumps(call["args"]),
                        "id": call["id"],
                        "index": 0,
                        "type": "tool_call_chunk",
                    }
                ],
                response_metadata={"model_name": _MODEL_NAME},
            )
            yield self._total_seconds(), ChatGenerationChunk(message=chunk)
            return
        texts = self._texts()
        for i, text in enumerate(texts):
            last = i == len(texts) - 1
            chunk = AIMessageChunk(
                content=text,
                response_metadata={"model_name": _MODEL_NAME} if last else {},
                usage_metadata=self._usage(messages, self.tokens) if last else None,
            )
            yield (
                (self.ttft if i == 0 else self.per_token),
                ChatGenerationChunk(message=chunk),
            )

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        time.sleep(self._total_seconds())
        return self._result(messages, kwargs)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        await asyncio.sleep(self._total_seconds())
        return self._result(messages, kwargs)

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        for wait, chunk in self._chunks(messages, kwargs):
            time.sleep(wait)
            if run_manager is not None:
                run_manager.on_llm_new_token(str(chunk.message.content), chunk=chunk)
            yield chunk

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        for wait, chunk in self._chunks(messages, kwargs):
            await asyncio.sleep(wait)
            if run_manager is not None:
                await run_manager.on_llm_new_token(
                    str(chunk.message.content), chunk=chunk
                )
            yield chunk


def _tool_call() -> dict[str, Any]:
    return {
        "name": "get_weather",
        "args": {"city": "Paris"},
        "id": f"call_{uuid.uuid4().hex[:12]}",
        "type": "tool_call",
    }


@tool
def get_weather(city: str) -> str:
    """Return the current weather in *city*."""
    return f"It is 18 degrees and sunny in {city}."


def build_agent(model: SleepyChatModel) -> Any:
    """LangChain 1.x's ``create_agent``, else LangGraph's ``create_react_agent``."""
    try:
        from langchain.agents import (  # type: ignore[import-not-found, unused-ignore]
            create_agent,
        )
    except ImportError:
        from langgraph.prebuilt import create_react_agent

        return create_react_agent(
            model, [get_weather], prompt="You are a helpful assistant."
        )
    return create_agent(
        model, [get_weather], system_prompt="You are a helpful assistant."
    )


# --------------------------------------------------------------------------- runner
class Runner:
    """The chain (and agent) every route calls, with the mode's callbacks, if any."""

    def __init__(self, spec: dict[str, Any], callbacks: list[Any]) -> None:
        model = SleepyChatModel(
            ttft=spec["ttft"], per_token=spec["per_token"], tokens=spec["tokens"]
        )
        prompt = ChatPromptTemplate.from_messages(
            [("system", "You are a helpful assistant."), ("human", "{message}")]
        )
        self.chain = prompt | model | StrOutputParser()
        self.agent = build_agent(model) if spec["agent"] else None
        self.kinds = ("chain", "agent") if self.agent is not None else ("chain",)
        # A peer's handler is passed per request, as its docs show.
        self.config: Any = {"callbacks": callbacks} if callbacks else None

    def _agent_input(self, message: str) -> dict[str, Any]:
        return {"messages": [{"role": "user", "content": message}]}

    def invoke(self, kind: str, message: str) -> str:
        if self.agent is not None and kind == "agent":
            state = self.agent.invoke(self._agent_input(message), config=self.config)
            return str(state["messages"][-1].content)
        return str(self.chain.invoke({"message": message}, config=self.config))

    async def ainvoke(self, kind: str, message: str) -> str:
        if self.agent is not None and kind == "agent":
            state = await self.agent.ainvoke(
                self._agent_input(message), config=self.config
            )
            return str(state["messages"][-1].content)
        return str(await self.chain.ainvoke({"message": message}, config=self.config))

    def stream(self, kind: str, message: str) -> Iterator[str]:
        if self.agent is not None and kind == "agent":
            for chunk, _meta in self.agent.stream(
                self._agent_input(message), config=self.config, stream_mode="messages"
            ):
                if isinstance(chunk, AIMessageChunk) and chunk.content:
                    yield str(chunk.content)
            return
        for text in self.chain.stream({"message": message}, config=self.config):
            if text:  # an empty chunk would end a chunked HTTP body
                yield text

    async def astream(self, kind: str, message: str) -> AsyncIterator[str]:
        if self.agent is not None and kind == "agent":
            async for chunk, _meta in self.agent.astream(
                self._agent_input(message), config=self.config, stream_mode="messages"
            ):
                if isinstance(chunk, AIMessageChunk) and chunk.content:
                    yield str(chunk.content)
            return
        async for text in self.chain.astream({"message": message}, config=self.config):
            if text:
                yield text


# --------------------------------------------------------------------------- peers
class NoopHandler(BaseCallbackHandler):
    """
    The ``noop`` mode's handler: does nothing, runs inline.

    What it costs is LangChain's own dispatch to a handler (run managers, run
    ids, one call per event, per streamed token too): the floor under any
    callback-based recorder, the same reference the shared harness uses.
    """

    run_inline = True


class Peer:
    """A peer recorder's LangChain handler, aimed at the loopback stub."""

    def __init__(self, name: str, stub: str) -> None:
        self.name = name
        self.handler: Any = None
        self._flush: Callable[[], None] = lambda: None
        base = f"{stub.rstrip('/')}/{name}"
        if name == "langfuse":
            # Langfuse 3+ sends OTLP/HTTP to {base}/api/public/otel/v1/traces; its
            # own TracerProvider keeps it from becoming the process's global one.
            from langfuse import Langfuse  # type: ignore[import-not-found, unused-ignore]
            from langfuse.langchain import (  # type: ignore[import-not-found, unused-ignore]
                CallbackHandler,
            )
            from opentelemetry.sdk.trace import TracerProvider

            os.environ["LANGFUSE_BASE_URL"] = os.environ["LANGFUSE_HOST"] = base
            client = Langfuse(
                public_key="pk-lf-bench",
                secret_key="sk-lf-bench",
                base_url=base,
                tracer_provider=TracerProvider(),
            )
            self.handler = CallbackHandler(public_key="pk-lf-bench")
            self._flush = client.flush
        elif name == "langsmith":
            import langsmith
            from langchain_core.tracers.langchain import LangChainTracer

            ls_client = langsmith.Client(
                api_url=base, api_key="bench", auto_batch_tracing=True
            )
            tracer = LangChainTracer(client=ls_client, project_name="bench")
            self.handler = tracer

            def flush() -> None:
                tracer.wait_for_futures()
                ls_client.flush(timeout=60)

            self._flush = flush
        else:
            raise ValueError(f"unknown peer {name!r}")

    def flush(self) -> None:
        self._flush()


def _loopback_env(stub: str | None) -> None:
    """Nothing traces implicitly; whatever has a default endpoint gets the stub."""
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        os.environ.pop(var, None)
        os.environ.pop(var.lower(), None)
    os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"
    for var in ("LANGCHAIN_TRACING_V2", "LANGSMITH_TRACING", "LANGCHAIN_TRACING"):
        os.environ[var] = "false"
    for var in [v for v in os.environ if v.startswith("CONTEXT_")]:
        del os.environ[var]
    os.environ.pop("GETCONTEXT_TOKEN", None)
    base = stub or "http://127.0.0.1:9"  # discard port: nothing listens
    os.environ.update(
        {
            "LANGSMITH_ENDPOINT": base + "/langsmith",
            "LANGCHAIN_ENDPOINT": base + "/langsmith",
            "LANGSMITH_API_KEY": "bench",
            "LANGFUSE_BASE_URL": base + "/langfuse",
            "LANGFUSE_HOST": base + "/langfuse",
            "LANGFUSE_PUBLIC_KEY": "pk-lf-bench",
            "LANGFUSE_SECRET_KEY": "sk-lf-bench",
            "LANGFUSE_MEDIA_UPLOAD_ENABLED": "false",
            "OTEL_TRACES_EXPORTER": "none",
            "OTEL_METRICS_EXPORTER": "none",
            "OTEL_LOGS_EXPORTER": "none",
            "DO_NOT_TRACK": "1",
        }
    )


# --------------------------------------------------------------------------- apps
def build_flask(runner: Runner, tracked: bool) -> Any:
    from flask import Flask, Response, abort, request

    app = Flask("bench")
    if tracked:
        # One scope per request from the X-User-Id / X-Session-Id headers, open
        # until the streamed body is sent (README, "Web frameworks").
        from context_trace.integrations.flask import ContextTrace

        ContextTrace(app)

    @app.post("/invoke/<kind>")
    def invoke(kind: str) -> dict[str, str]:
        if kind not in runner.kinds:
            abort(404)
        message = request.get_json(force=True)["message"]
        return {"answer": runner.invoke(kind, message)}

    @app.post("/stream/<kind>")
    def stream(kind: str) -> Response:
        if kind not in runner.kinds:
            abort(404)
        message = request.get_json(force=True)["message"]
        return Response(runner.stream(kind, message), mimetype="text/plain")

    return app


def build_fastapi(runner: Runner, tracked: bool) -> Any:
    from fastapi import FastAPI, HTTPException, Request
    from fastapi.responses import StreamingResponse

    app = FastAPI()
    if tracked:
        from context_trace.integrations.asgi import ContextTraceMiddleware

        app.add_middleware(ContextTraceMiddleware)

    async def invoke(kind: str, request: Request) -> dict[str, str]:
        if kind not in runner.kinds:
            raise HTTPException(404)
        message = (await request.json())["message"]
        return {"answer": await runner.ainvoke(kind, message)}

    async def stream(kind: str, request: Request) -> StreamingResponse:
        if kind not in runner.kinds:
            raise HTTPException(404)
        message = (await request.json())["message"]
        return StreamingResponse(runner.astream(kind, message), media_type="text/plain")

    # Annotations are strings here (``from __future__``); FastAPI resolves them
    # in the module's globals, where Request is not, so hand it the real types.
    for endpoint in (invoke, stream):
        endpoint.__annotations__.update({"kind": str, "request": Request})
    app.post("/invoke/{kind}")(invoke)
    app.post("/stream/{kind}")(stream)
    return app


# --------------------------------------------------------------------------- serving
def _watch_stdin(stop: Callable[[], None]) -> None:
    """Call *stop* when the parent closes our stdin (or dies)."""

    def watch() -> None:
        sys.stdin.buffer.read()
        stop()

    threading.Thread(target=watch, name="stdin-watch", daemon=True).start()


def _announce(payload: dict[str, Any]) -> None:
    try:
        sys.stdout.write(json.dumps(payload) + "\n")
        sys.stdout.flush()
    except BrokenPipeError:  # the parent is gone; nobody to tell
        pass


def serve_waitress(app: Any, spec: dict[str, Any]) -> None:
    import _thread
    from importlib.metadata import version

    from waitress.server import create_server

    server: Any = create_server(
        app,
        host="127.0.0.1",
        port=0,
        threads=spec["threads"],
        connection_limit=spec["connection_limit"],
        backlog=2048,
        channel_timeout=300,
        asyncore_use_poll=True,
        ident="bench",
    )
    _announce(
        {
            "port": server.effective_port,
            "pid": os.getpid(),
            "server": f"waitress {version('waitress')}",
            "threads": spec["threads"],
        }
    )
    # waitress's run() closes the server on KeyboardInterrupt. interrupt_main()
    # does nothing while SIGINT is ignored, as it is in a background job of a
    # non-interactive shell, so put Python's handler back first.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    _watch_stdin(_thread.interrupt_main)
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
        server.task_dispatcher.shutdown(timeout=10)


def serve_uvicorn(app: Any, spec: dict[str, Any]) -> None:
    import importlib.util

    import uvicorn

    # A free port, no race: we bind it and hand uvicorn the socket. IPPROTO_TCP
    # explicitly: asyncio sets TCP_NODELAY only on sockets whose proto says TCP,
    # and with proto 0 every JSON answer would wait ~40 ms for a delayed ACK
    # (headers and body are two writes), as it never does behind
    # uvicorn's own bind.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(2048)  # connections queue from now on, before uvicorn starts
    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        lifespan="on",
        backlog=2048,
        timeout_keep_alive=30,
    )
    server = uvicorn.Server(config)
    config.load()
    # loop="auto" (the default) picks uvloop when it is installed.
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    _announce(
        {
            "port": sock.getsockname()[1],
            "pid": os.getpid(),
            "server": f"uvicorn {uvicorn.__version__}",
            "http": getattr(config.http_protocol_class, "__name__", "?"),
            "loop": loop,
        }
    )

    def stop() -> None:
        server.should_exit = True  # checked by uvicorn's main loop every 0.1 s

    _watch_stdin(stop)
    server.run(sockets=[sock])


def main() -> None:
    if len(sys.argv) != 2 or not sys.argv[1].startswith("{"):
        # Not a benchmark of its own: a loop that runs every benchmarks/*.py with
        # --smoke finds nothing to do here, as with _dropin.py.
        print("the server of benchmarks/server.py; run that", file=sys.stderr)
        sys.exit(0 if sys.argv[1:] == ["--smoke"] else 2)
    spec: dict[str, Any] = json.loads(sys.argv[1])
    _loopback_env(spec.get("stub"))
    mode = spec["mode"]
    tracked = mode == "tracked"
    callbacks: list[Any] = []
    peer: Peer | None = None
    if tracked:
        import context_trace as ct

        ct.configure(db_path=spec["db"])
    elif mode == "noop":
        callbacks.append(NoopHandler())
    elif mode != "bare":
        peer = Peer(mode, spec["stub"])
        callbacks.append(peer.handler)
    runner = Runner(spec, callbacks)
    if spec["framework"] == "flask":
        serve_waitress(build_flask(runner, tracked), spec)
    else:
        serve_uvicorn(build_fastapi(runner, tracked), spec)

    stats: dict[str, Any] = {}
    if tracked:
        import context_trace as ct

        flushed = ct.flush(timeout=60)
        stats = {**ct.stats(), "flushed": flushed}
        ct.shutdown(timeout=30)
    elif peer is not None:
        peer.flush()
    _announce({"stopped": True, "stats": stats})


if __name__ == "__main__":
    main()
