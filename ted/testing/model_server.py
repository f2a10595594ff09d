"""A model provider on 127.0.0.1, for tests and benchmarks: real SDKs, real HTTP, no network.

It speaks two wire formats — OpenAI chat completions (`POST /v1/chat/completions`) and
Anthropic Messages (`POST /v1/messages`) — closely enough for the official SDKs to parse its
answers, and it answers from a script:

    with ModelServer([Reply.error(429), Reply.error(500), '{"answer": 4}']) as server:
        model = OpenAIModel("m", ModelSettings(api_key="k", base_url=server.openai_base_url))
        ...                                   # the SDK retries twice, then gets the answer
    assert [r.status for r in server.requests] == [429, 500, 200]

Each request — retries included — takes the next entry of the script, in arrival order: a
string is a normal answer; a `Reply` can also be slow (`Reply.slow`), hang past the client's
timeout (`Reply.hang`), fail with an HTTP status (`Reply.error(429 | 500 | 529 | …)`, with a
short retry-after), break the body (`Reply.broken_json`), or carry reasoning apart from the
reply (`Reply(text=…, reasoning=…)`: OpenAI-compatible servers' `reasoning_content`, Anthropic's
`thinking` block). A reply that is well-formed on
the wire but invalid for the requested schema is just a string such as "not json". The
script can instead be a function of the `RecordedRequest` (for benchmarks: any number of
requests, answers that depend on the prompt). `latency=` delays every answer. Every request
is recorded (body, headers, the status and usage it got) so a test can assert what the SDK
sent and how often it retried.

The server runs uvicorn in a background thread with its own event loop, so slow answers
never block the test's loop and sync and async tests use it alike.
"""

import asyncio
import json
import math
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any, Literal, Self

import uvicorn
from pydantic import BaseModel, Field
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ted.llm.base import OutputSchema

Api = Literal["openai", "anthropic"]


class Reply(BaseModel):
    """How the server answers one request."""

    text: str = ""
    status: int = Field(200, description="An HTTP error status (429, 500, 529, 401…) answers with that error.")
    delay: float = Field(0.0, description="Seconds to wait first; beyond the client's timeout this is a hang.")
    retry_after: float | None = Field(
        0.01,
        description="Seconds, sent with error statuses as retry-after-ms and retry-after. Both SDKs honour it "
        "instead of their own backoff (0.5 s and up), which keeps retry tests fast.",
    )
    malformed: bool = Field(False, description="Answer 200 with a body that is not valid JSON.")
    should_retry: bool | None = Field(
        None, description="Sent as x-should-retry, which both SDKs obey over their own retry policy."
    )
    reasoning: str | None = Field(None, description="Reasoning sent apart from the reply, as the wire format has it.")

    @classmethod
    def error(cls, status: int, *, retry_after: float | None = 0.01) -> "Reply":
        return cls(status=status, retry_after=retry_after)

    @classmethod
    def hang(cls, seconds: float = 30.0) -> "Reply":
        return cls(delay=seconds, text="(too late)")

    @classmethod
    def slow(cls, seconds: float, text: str) -> "Reply":
        return cls(delay=seconds, text=text)

    @classmethod
    def broken_json(cls) -> "Reply":
        return cls(malformed=True)


Script = Sequence[str | Reply] | Callable[["RecordedRequest"], str | Reply]


class RecordedRequest(BaseModel):
    """One request as the server received it, and what it answered."""

    number: int = Field(description="0-based arrival order.")
    api: Api
    path: str
    headers: dict[str, str]
    body: dict[str, Any] | None = Field(description="The parsed JSON body; None if it was not JSON.")
    received_at: float = Field(description="time.monotonic() at arrival.")
    status: int | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0

    @property
    def api_key(self) -> str | None:
        # Anthropic documents `x-api-key`, but its SDK may send `Authorization: Bearer` instead.
        if self.api == "anthropic" and "x-api-key" in self.headers:
            return self.headers["x-api-key"]
        auth = self.headers.get("authorization", "")
        return auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else None

    @property
    def messages(self) -> list[dict[str, Any]]:
        return list((self.body or {}).get("messages", []))

    @property
    def prompt(self) -> str:
        """All the text the request carries (system prompt and messages), for scripted functions."""
        texts: list[str] = []
        system = (self.body or {}).get("system")
        texts += _texts(system) if system is not None else []
        for message in self.messages:
            texts += _texts(message.get("content"))
        return "\n".join(texts)

    @property
    def cacheable_prefix(self) -> str | None:
        """The prompt prefix the provider would cache: for Anthropic the system prompt when a
        block of it carries `cache_control`; for OpenAI (which caches by itself) the system message."""
        body = self.body or {}
        if self.api == "anthropic":
            system = body.get("system")
            marked = isinstance(system, list) and any(isinstance(b, dict) and b.get("cache_control") for b in system)
            return "\n".join(_texts(system)) if marked else None
        first = self.messages[0] if self.messages else {}
        return "\n".join(_texts(first.get("content"))) if first.get("role") in ("system", "developer") else None

    @property
    def images(self) -> list[dict[str, Any]]:
        """Image parts exactly as sent on the wire (Anthropic `image` blocks, OpenAI `image_url` parts)."""
        return [
            part
            for message in self.messages
            if isinstance(message.get("content"), list)
            for part in message["content"]
            if part.get("type") in ("image", "image_url")
        ]

    @property
    def output(self) -> OutputSchema | None:
        """The reply schema the request asks for (its name and JSON schema), if any: what a script
        answers by, rather than the prompt's wording."""
        body = self.body or {}
        if self.api == "anthropic":
            choice = body.get("tool_choice") or {}
            for tool in body.get("tools", []):
                if choice.get("type") == "any" or tool.get("name") == choice.get("name"):
                    return OutputSchema(name=tool["name"], json_schema=tool.get("input_schema") or {})
            return None
        given = (body.get("response_format") or {}).get("json_schema")
        return OutputSchema(name=given["name"], json_schema=given.get("schema") or {}) if given else None


def _texts(content: Any) -> list[str]:
    if isinstance(content, str):
        return [content]
    if isinstance(content, list):
        return [part["text"] for part in content if isinstance(part, dict) and isinstance(part.get("text"), str)]
    return []


# The least prompt prefix Anthropic's Sonnet/Opus and OpenAI's models cache.
CACHE_MIN_TOKENS = 1024


def _tokens(text: str) -> int:
    # A fixed, documented rule (4 characters a token) so tests can predict the usage figures.
    return max(1, math.ceil(len(text) / 4))


class ModelServer:
    """Context manager (sync or async) that serves the script on a free port of 127.0.0.1."""

    def __init__(
        self,
        script: Script = ("ok",),
        *,
        latency: float = 0.0,
        api_key: str | None = None,
        cache_min_tokens: int = CACHE_MIN_TOKENS,
    ):
        """`latency` is added to every request; with `api_key` set, any other key gets a 401.

        Prompt caching is answered as the providers do: a cacheable prefix (`RecordedRequest.
        cacheable_prefix`) of at least `cache_min_tokens` is written by the first answer that
        carries it (Anthropic reports the write; OpenAI bills none) and read by every later request
        that arrives after that answer went out, in whole blocks of 128 tokens for OpenAI.
        """
        self.script = script
        self.latency = latency
        self.api_key = api_key
        self.cache_min_tokens = cache_min_tokens
        self._cached: dict[tuple[Api, str], float] = {}  # prefix → when the answer that wrote it went out
        self.requests: list[RecordedRequest] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._uvicorn: uvicorn.Server | None = None
        self.url = ""

    # -- addresses -------------------------------------------------------------------------

    @property
    def openai_base_url(self) -> str:
        """What `OpenAI(base_url=…)` expects: the SDK appends `/chat/completions`."""
        return f"{self.url}/v1"

    @property
    def anthropic_base_url(self) -> str:
        """What `Anthropic(base_url=…)` expects: the SDK appends `/v1/messages`."""
        return self.url

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> Self:
        # Binding the socket ourselves, to port 0, gets a free port with no race between
        # picking a port and listening on it. The protocol is named because asyncio sets
        # TCP_NODELAY only on connections whose socket says IPPROTO_TCP: with proto 0, every
        # answer on a kept-alive connection waited ~40 ms (Nagle's algorithm against the
        # client's delayed ACK), which a latency benchmark would have counted as the loop's.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        app = Starlette(
            routes=[
                Route("/v1/chat/completions", self._openai, methods=["POST"]),
                Route("/v1/messages", self._anthropic, methods=["POST"]),
            ]
        )
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
        self._uvicorn = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self._uvicorn.serve(sockets=[sock])), name="ted-model-server", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._uvicorn.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("The local model server did not start; see the uvicorn log above.")
            time.sleep(0.005)
        return self

    def stop(self) -> None:
        # Hanging answers poll `_stopping`, so uvicorn's graceful shutdown never waits for them.
        self._stopping.set()
        if self._uvicorn is not None:
            self._uvicorn.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        return await asyncio.to_thread(self.start)

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self.stop)

    # -- handling --------------------------------------------------------------------------

    async def _openai(self, request: Request) -> Response:
        return await self._handle(request, "openai")

    async def _anthropic(self, request: Request) -> Response:
        return await self._handle(request, "anthropic")

    async def _handle(self, request: Request, api: Api) -> Response:
        try:
            raw = await request.body()
        except ClientDisconnect:
            # The client gave up while sending (a job cancelling its calls in flight): nothing to
            # answer, and nothing to log, where uvicorn would print a traceback to stderr.
            return Response(status_code=499)
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        with self._lock:
            record = RecordedRequest(
                number=len(self.requests),
                api=api,
                path=request.url.path,
                headers=dict(request.headers),
                body=body if isinstance(body, dict) else None,
                received_at=time.monotonic(),
            )
            self.requests.append(record)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            reply = self._next(record)
            await self._sleep(self.latency + reply.delay)
            response = self._respond(record, reply)
            record.status = response.status_code
            return response
        finally:
            with self._lock:
                self.in_flight -= 1

    def _next(self, record: RecordedRequest) -> Reply:
        if callable(self.script):
            try:
                entry = self.script(record)
            except Exception as e:  # noqa: BLE001 — reported to the client, whatever it is
                # A broken script function is a bug in the test: say so, and stop the SDK retrying.
                return Reply(status=500, text=f"ModelServer script function raised {e!r}", should_retry=False)
        elif record.number < len(self.script):
            entry = self.script[record.number]
        else:
            message = f"ModelServer script exhausted: request {record.number + 1} but only {len(self.script)} replies"
            return Reply(status=500, text=message, should_retry=False)
        return Reply(text=entry) if isinstance(entry, str) else entry

    async def _sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while not self._stopping.is_set() and (left := end - time.monotonic()) > 0:
            await asyncio.sleep(min(left, 0.05))

    def _respond(self, record: RecordedRequest, reply: Reply) -> Response:
        if self.api_key is not None and record.api_key != self.api_key:
            message = "invalid x-api-key" if record.api == "anthropic" else "Incorrect API key provided"
            return _error(record.api, Reply(status=401, retry_after=None), message)
        if reply.status >= 400:
            return _error(record.api, reply, reply.text or f"scripted HTTP {reply.status}")
        if reply.malformed:
            return Response('{"id": "broken", "choices": [', media_type="application/json")
        if record.body is None or not isinstance(record.body.get("messages"), list):
            bad = Reply(status=400, retry_after=None)
            return _error(record.api, bad, "The request body is not JSON with a `messages` list.")
        text, output_tokens, truncated = _fit(reply.text, _max_tokens(record.body))
        record.input_tokens, record.output_tokens = _tokens(record.prompt), output_tokens
        self._cache(record)
        build = _anthropic_message if record.api == "anthropic" else _openai_completion
        return JSONResponse(build(record, text, truncated, reply.reasoning))

    def _cache(self, record: RecordedRequest) -> None:
        prefix = record.cacheable_prefix
        if prefix is None or (tokens := _tokens(prefix)) < self.cache_min_tokens:
            return
        with self._lock:
            written = self._cached.setdefault((record.api, prefix), time.monotonic())
        if written <= record.received_at:
            record.cache_read_tokens = tokens if record.api == "anthropic" else tokens // 128 * 128
        elif record.api == "anthropic":  # in flight before the prefix was cached: it writes too
            record.cache_write_tokens = tokens


def _max_tokens(body: dict[str, Any]) -> int | None:
    for key in ("max_tokens", "max_completion_tokens"):
        if isinstance(body.get(key), int):
            return body[key]
    return None


def _fit(text: str, max_tokens: int | None) -> tuple[str, int, bool]:
    """Cut the reply at max_tokens, as a provider would, so truncation is testable."""
    tokens = _tokens(text)
    if max_tokens is None or tokens <= max_tokens:
        return text, tokens, False
    return text[: max_tokens * 4], max_tokens, True


def _anthropic_message(record: RecordedRequest, text: str, truncated: bool, reasoning: str | None) -> dict[str, Any]:
    content: list[dict[str, Any]] = [{"type": "text", "text": text}]
    stop_reason = "max_tokens" if truncated else "end_turn"
    tool_name = _forced_tool(record.body or {})
    if record.output is not None and tool_name and not truncated:
        try:
            value = json.loads(text)
        except ValueError:
            value = None
        # A model that ignores the forced tool answers in text; we mimic that for non-objects,
        # so the adapter's fallback to text (and then the repair call) is exercised.
        if isinstance(value, dict):
            content = [{"type": "tool_use", "id": f"toolu_{uuid.uuid4().hex[:24]}", "name": tool_name, "input": value}]
            stop_reason = "tool_use"
    if reasoning is not None:
        content.insert(0, {"type": "thinking", "thinking": reasoning, "signature": "scripted"})
    return {
        "id": f"msg_{uuid.uuid4().hex[:24]}",
        "type": "message",
        "role": "assistant",
        "model": (record.body or {}).get("model", "unknown"),
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {
            # Anthropic's input_tokens leaves out what was read from or written to the cache.
            "input_tokens": (record.input_tokens or 0) - record.cache_read_tokens - record.cache_write_tokens,
            "output_tokens": record.output_tokens,
            "cache_creation_input_tokens": record.cache_write_tokens,
            "cache_read_input_tokens": record.cache_read_tokens,
        },
    }


def _forced_tool(body: dict[str, Any]) -> str | None:
    choice = body.get("tool_choice") or {}
    if choice.get("type") == "tool":
        return choice.get("name")
    tools = body.get("tools") or []
    return tools[0].get("name") if choice.get("type") == "any" and tools else None


def _openai_completion(record: RecordedRequest, text: str, truncated: bool, reasoning: str | None) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": None}
    if reasoning is not None:
        message["reasoning_content"] = reasoning  # vLLM's and DeepSeek's field
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": (record.body or {}).get("model", "unknown"),
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": "length" if truncated else "stop",
                "logprobs": None,
            }
        ],
        "usage": {
            "prompt_tokens": record.input_tokens,
            "completion_tokens": record.output_tokens,
            "total_tokens": (record.input_tokens or 0) + (record.output_tokens or 0),
            "prompt_tokens_details": {"cached_tokens": record.cache_read_tokens},
        },
    }


_ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
    529: "overloaded_error",
}


def _error(api: Api, reply: Reply, message: str) -> JSONResponse:
    status, headers = reply.status, {}
    if reply.retry_after is not None:
        headers["retry-after-ms"] = str(round(reply.retry_after * 1000))
        headers["retry-after"] = str(reply.retry_after)
    if reply.should_retry is not None:
        headers["x-should-retry"] = "true" if reply.should_retry else "false"
    if api == "anthropic":
        kind = _ANTHROPIC_ERROR_TYPES.get(status, "api_error")
        body: dict[str, Any] = {"type": "error", "error": {"type": kind, "message": message}}
    else:
        kind = {401: "invalid_request_error", 429: "rate_limit_exceeded"}.get(status, "server_error")
        body = {"error": {"message": message, "type": kind, "param": None, "code": None}}
    return JSONResponse(body, status_code=status, headers=headers)
