"""A local fake of the OpenAI HTTP API, for integration tests and benchmarks.

It listens on loopback and speaks enough of the real wire format (JSON bodies,
SSE streaming, OpenAI-style error objects) that the real ``openai`` client can
talk to it unchanged; only ``base_url`` differs. Standard library only, and no
Django import, so the bench script and plain pytest can use it.

Usage::

    fake = FakeOpenAI(latency_s=0.1).start()
    fake.script({"text": "Hello there"})
    fake.script({"tool_call": {"name": "lookup_order", "arguments": {"id": 7}}})
    fake.script({"error": 500})
    fake.script({"hang": 5})
    ...  # point the app at fake.base_url
    fake.stop()

Standalone::

    python -m tests.fakes.openai_server --port 8999 --latency 0.2 --token-delay 0.01
"""

from __future__ import annotations

import argparse
import base64
import collections
import hashlib
import json
import math
import random
import struct
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

EMBEDDING_DIMENSIONS = 384
DEFAULT_MODEL = "fake-model"
MODELS = ("fake-model", "gpt-4o-mini", "text-embedding-3-small")

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
}


class _ClientGone(Exception):
    """The client closed the connection (e.g. it timed out) while we were writing."""


def _count_tokens(text: str) -> int:
    # Whitespace words are a good-enough stand-in for tokens in usage figures.
    return max(1, len(text.split())) if text else 0


def _message_text(content: Any) -> str:
    """Flatten a chat message ``content`` (a string or a list of parts) to text."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                parts.append(part["text"])
            elif isinstance(part, str):
                parts.append(part)
        return " ".join(parts)
    return str(content)


def fake_embedding(text: str, dimensions: int = EMBEDDING_DIMENSIONS) -> list[float]:
    """A deterministic, L2-normalised pseudo-random vector for ``text``."""
    seed = int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")
    rng = random.Random(seed)  # noqa: S311 - test data, not crypto
    vec = [rng.gauss(0.0, 1.0) for _ in range(dimensions)]
    norm = math.sqrt(sum(x * x for x in vec)) or 1.0
    return [x / norm for x in vec]


def default_answer(messages: list[dict[str, Any]]) -> str:
    last_user = ""
    for message in reversed(messages or []):
        if isinstance(message, dict) and message.get("role") == "user":
            last_user = _message_text(message.get("content"))
            break
    return f"Fake answer about: {last_user[:60]} [1]"


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.1 so clients keep connections alive (like the real API); streamed
    # responses use chunked transfer encoding, the others a Content-Length.
    protocol_version = "HTTP/1.1"
    server_version = "FakeOpenAI/1.0"
    server: _Server

    # --- plumbing -------------------------------------------------------------

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        if self.server.fake.verbose:
            super().log_message(format, *args)

    def _write(self, data: bytes) -> None:
        try:
            self.wfile.write(data)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError) as exc:
            raise _ClientGone from exc

    def _send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("x-request-id", f"req_{uuid.uuid4().hex}")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self._write(body)

    def _send_error(self, status: int, message: str, code: str | None = None) -> None:
        error_type = _ERROR_TYPES.get(status, "server_error")
        self._send_json(
            status,
            {
                "error": {
                    "message": message,
                    "type": error_type,
                    "param": None,
                    "code": code,
                }
            },
        )

    def _authorised(self) -> bool:
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Bearer ") and auth[len("Bearer ") :].strip():
            return True
        self._send_error(
            401,
            "You didn't provide an API key (Authorization: Bearer ...).",
            code="invalid_api_key",
        )
        return False

    def _read_json(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if not raw:
            return {}
        return json.loads(raw)

    def _path(self) -> str:
        return self.path.split("?", 1)[0].rstrip("/")

    # --- routes ---------------------------------------------------------------

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        try:
            if self._path() == "/v1/models":
                if not self._authorised():
                    return
                created = int(time.time())
                self._send_json(
                    200,
                    {
                        "object": "list",
                        "data": [
                            {
                                "id": m,
                                "object": "model",
                                "created": created,
                                "owned_by": "fake",
                            }
                            for m in MODELS
                        ],
                    },
                )
            elif self._path() in ("", "/healthz"):
                self._send_json(200, {"ok": True})
            else:
                self._send_error(404, f"Unknown path {self.path}")
        except _ClientGone:
            self.close_connection = True

    def do_POST(self) -> None:  # noqa: N802 - http.server naming
        try:
            path = self._path()
            try:
                body = self._read_json()
            except (ValueError, UnicodeDecodeError):
                self._send_error(400, "We could not parse the JSON body of your request.")
                return
            if path not in ("/v1/chat/completions", "/v1/embeddings"):
                self._send_error(404, f"Unknown path {self.path}")
                return
            if not self._authorised():
                return
            self.server.fake._record(path, body)
            if path == "/v1/chat/completions":
                self._chat(body)
            else:
                self._embeddings(body)
        except _ClientGone:
            self.close_connection = True

    # --- chat -----------------------------------------------------------------

    def _chat(self, body: dict[str, Any]) -> None:
        fake = self.server.fake
        behaviour = fake._next_behaviour()
        hang = float(behaviour.get("hang") or 0)
        if hang and fake._stopping.wait(hang):
            # Shutting down: drop the connection rather than answer.
            self.close_connection = True
            return
        if "error" in behaviour:
            status = int(behaviour["error"])
            self._send_error(status, behaviour.get("message") or f"Fake error {status}")
            return

        model = body.get("model") or DEFAULT_MODEL
        messages = body.get("messages") or []
        prompt_tokens = sum(
            _count_tokens(_message_text(m.get("content"))) for m in messages if isinstance(m, dict)
        )
        completion_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        created = int(time.time())

        tool_call = behaviour.get("tool_call")
        if tool_call:
            text = None
            arguments = tool_call.get("arguments", {})
            arguments_json = arguments if isinstance(arguments, str) else json.dumps(arguments)
            call = {
                "id": tool_call.get("id") or f"call_{uuid.uuid4().hex[:24]}",
                "type": "function",
                "function": {"name": tool_call["name"], "arguments": arguments_json},
            }
            finish_reason = "tool_calls"
            completion_tokens = _count_tokens(arguments_json) + 1
        else:
            text = behaviour["text"] if "text" in behaviour else default_answer(messages)
            call = None
            finish_reason = "stop"
            completion_tokens = _count_tokens(text)
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }

        if fake.latency_s:
            time.sleep(fake.latency_s)

        if not body.get("stream"):
            message: dict[str, Any] = {
                "role": "assistant",
                "content": text,
                "refusal": None,
            }
            if call:
                message["tool_calls"] = [call]
            self._send_json(
                200,
                {
                    "id": completion_id,
                    "object": "chat.completion",
                    "created": created,
                    "model": model,
                    "system_fingerprint": "fp_fake",
                    "choices": [
                        {
                            "index": 0,
                            "message": message,
                            "logprobs": None,
                            "finish_reason": finish_reason,
                        }
                    ],
                    "usage": usage,
                },
            )
            return

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            return {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "system_fingerprint": "fp_fake",
                "choices": [
                    {
                        "index": 0,
                        "delta": delta,
                        "logprobs": None,
                        "finish_reason": finish,
                    }
                ],
            }

        chunks: list[dict[str, Any]] = []
        if call:
            fn = call["function"]
            chunks.append(
                chunk(
                    {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [
                            {
                                "index": 0,
                                "id": call["id"],
                                "type": "function",
                                "function": {"name": fn["name"], "arguments": ""},
                            }
                        ],
                    }
                )
            )
            for fragment in _split_fragments(fn["arguments"]):
                chunks.append(
                    chunk({"tool_calls": [{"index": 0, "function": {"arguments": fragment}}]})
                )
        else:
            chunks.append(chunk({"role": "assistant", "content": "", "refusal": None}))
            for piece in _split_words(text or ""):
                chunks.append(chunk({"content": piece}))
        chunks.append(chunk({}, finish_reason))
        if (body.get("stream_options") or {}).get("include_usage"):
            for c in chunks:
                c["usage"] = None
            final = chunk({})
            final["choices"] = []
            final["usage"] = usage
            chunks.append(final)

        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("x-request-id", f"req_{uuid.uuid4().hex}")
        self.end_headers()
        for i, c in enumerate(chunks):
            if i and fake.token_delay_s:
                time.sleep(fake.token_delay_s)
            self._write_chunk(f"data: {json.dumps(c)}\n\n".encode())
        self._write_chunk(b"data: [DONE]\n\n")
        self._write(b"0\r\n\r\n")

    def _write_chunk(self, data: bytes) -> None:
        self._write(f"{len(data):X}\r\n".encode("ascii") + data + b"\r\n")

    # --- embeddings -----------------------------------------------------------

    def _embeddings(self, body: dict[str, Any]) -> None:
        raw_input = body.get("input")
        if isinstance(raw_input, str):
            inputs = [raw_input]
        elif isinstance(raw_input, list) and all(isinstance(x, str) for x in raw_input):
            inputs = raw_input
        else:
            # Token-id inputs are legal for OpenAI but nobody here sends them.
            self._send_error(400, "'input' must be a string or a list of strings.")
            return
        dimensions = int(body.get("dimensions") or EMBEDDING_DIMENSIONS)
        as_base64 = body.get("encoding_format") == "base64"
        data = []
        for index, text in enumerate(inputs):
            vector = fake_embedding(text, dimensions)
            embedding: Any = vector
            if as_base64:
                embedding = base64.b64encode(struct.pack(f"<{dimensions}f", *vector)).decode()
            data.append({"object": "embedding", "index": index, "embedding": embedding})
        tokens = sum(_count_tokens(t) for t in inputs)
        self._send_json(
            200,
            {
                "object": "list",
                "data": data,
                "model": body.get("model") or "text-embedding-3-small",
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            },
        )


def _split_words(text: str) -> list[str]:
    """Split on spaces, each space kept with the next word, so "".join() == text."""
    pieces: list[str] = []
    for i, word in enumerate(text.split(" ")):
        pieces.append(word if i == 0 else " " + word)
    return [p for p in pieces if p] or [text]


def _split_fragments(arguments: str) -> list[str]:
    """At least two fragments, as OpenAI streams argument JSON in small pieces."""
    if len(arguments) < 2:
        return [arguments, ""]
    size = max(1, math.ceil(len(arguments) / 4))
    return [arguments[i : i + size] for i in range(0, len(arguments), size)]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # The default backlog of 5 drops SYNs when many clients connect at once, and the
    # kernel's 1 s SYN retry then shows up as fake "model latency".
    request_queue_size = 1024

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients drop idle keep-alive connections (and time out on "hang"); not news.
        if isinstance(sys.exc_info()[1], (ConnectionError, _ClientGone, TimeoutError)):
            return
        super().handle_error(request, client_address)

    fake: FakeOpenAI


class FakeOpenAI:
    """A loopback OpenAI-compatible server with a queue of scripted behaviours."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        latency_s: float = 0.0,
        token_delay_s: float = 0.0,
        verbose: bool = False,
    ) -> None:
        self.host = host
        self.port = port
        self.latency_s = latency_s
        self.token_delay_s = token_delay_s
        self.verbose = verbose
        self.base_url = ""
        self._lock = threading.Lock()
        self._queue: collections.deque[dict[str, Any]] = collections.deque()
        self._requests: list[dict[str, Any]] = []
        self._paths: list[str] = []
        self._stopping = threading.Event()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle ------------------------------------------------------------

    def _bind(self) -> _Server:
        httpd = _Server((self.host, self.port), _Handler)
        httpd.fake = self
        self._httpd = httpd
        self.port = httpd.server_address[1]
        self.base_url = f"http://{self.host}:{self.port}/v1"
        self._stopping.clear()
        return httpd

    def start(self) -> FakeOpenAI:
        httpd = self._bind()
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            daemon=True,
            name=f"fake-openai-{self.port}",
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # wakes handlers that are "hanging"
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- scripting ------------------------------------------------------------

    def script(self, *behaviours: dict[str, Any]) -> None:
        """Queue behaviours for the next chat requests, in order."""
        for behaviour in behaviours:
            if not isinstance(behaviour, dict) or not (
                {"text", "tool_call", "error", "hang"} & behaviour.keys()
            ):
                raise ValueError(f"Unknown fake behaviour: {behaviour!r}")
            with self._lock:
                self._queue.append(dict(behaviour))

    def reset(self) -> None:
        """Forget queued behaviours and recorded requests."""
        with self._lock:
            self._queue.clear()
            self._requests.clear()
            self._paths.clear()

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._queue)

    def _next_behaviour(self) -> dict[str, Any]:
        with self._lock:
            return self._queue.popleft() if self._queue else {}

    # --- recorded requests ----------------------------------------------------

    def _record(self, path: str, body: Any) -> None:
        with self._lock:
            self._requests.append(body)
            self._paths.append(path)

    @property
    def requests(self) -> list[Any]:
        """A snapshot of every received JSON body (chat and embeddings)."""
        with self._lock:
            return list(self._requests)

    @property
    def chat_requests(self) -> list[Any]:
        with self._lock:
            return [
                b
                for p, b in zip(self._paths, self._requests, strict=True)
                if p.endswith("/chat/completions")
            ]

    @property
    def embedding_requests(self) -> list[Any]:
        with self._lock:
            return [
                b
                for p, b in zip(self._paths, self._requests, strict=True)
                if p.endswith("/embeddings")
            ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve a fake OpenAI-compatible API.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8999)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before the first byte")
    parser.add_argument("--token-delay", type=float, default=0.0, help="seconds between chunks")
    parser.add_argument("--verbose", action="store_true", help="log every request")
    args = parser.parse_args(argv)
    fake = FakeOpenAI(
        host=args.host,
        port=args.port,
        latency_s=args.latency,
        token_delay_s=args.token_delay,
        verbose=args.verbose,
    )
    fake._bind()
    print(f"Fake OpenAI listening on {fake.base_url}", flush=True)
    httpd = fake._httpd
    if httpd is None:  # pragma: no cover - _bind always sets it
        raise SystemExit("could not bind")
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        httpd.server_close()


if __name__ == "__main__":
    main()
