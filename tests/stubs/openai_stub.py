"""A small OpenAI-compatible HTTP server for tests (standard library only).

It answers ``POST .../chat/completions`` with a chat completion whose content is
``"echo: <the last user message>"``, records every request it gets (path, headers,
JSON body), and can be told to answer an HTTP error status to the next N requests::

    with OpenAIStub() as stub:
        stub.base_url            # "http://127.0.0.1:<port>/v1"
        stub.fail_next(500, times=2)
        ...
        stub.requests[-1].body["model"]

The server listens as soon as it is constructed (the socket is bound and listening
before ``start`` returns), so a client may connect at once: nothing needs to wait.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["OpenAIStub", "RecordedRequest"]


@dataclass(frozen=True)
class RecordedRequest:
    """One request the stub got. ``headers`` has lower-case names."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any = None
    raw: bytes = b""
    status: int = 200  # what the stub answered

    @property
    def messages(self) -> list[dict[str, Any]]:
        """The body's chat messages (empty if there are none)."""
        if isinstance(self.body, dict):
            return list(self.body.get("messages") or [])
        return []

    @property
    def authorization(self) -> str | None:
        return self.headers.get("authorization")


def _last_user_message(body: Any) -> str | None:
    if not isinstance(body, dict):
        return None
    for message in reversed(body.get("messages") or []):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            return content if isinstance(content, str) else json.dumps(content)
    return None


class OpenAIStub:
    """An OpenAI-compatible chat completion server on 127.0.0.1 (a free port).

    Use it as a context manager, or call :meth:`start` and :meth:`stop`.
    """

    def __init__(self, host: str = "127.0.0.1") -> None:
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._failures: deque[tuple[int, Any]] = deque()
        self._server = ThreadingHTTPServer((host, 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None
        self.completions = 0

    # -- control ---------------------------------------------------------------------

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def host(self) -> str:
        return str(self._server.server_address[0])

    @property
    def base_url(self) -> str:
        """The endpoint's base URL, as prompt tasks take it (``.../v1``)."""
        return f"http://{self.host}:{self.port}/v1"

    @property
    def requests(self) -> list[RecordedRequest]:
        """A copy of the requests received so far, in order."""
        with self._lock:
            return list(self._requests)

    def fail_next(self, status: int, times: int = 1, payload: Any = None) -> None:
        """Answer HTTP ``status`` to the next ``times`` requests, with ``payload`` as the
        JSON body (None: an OpenAI-style error body). A 200 with such a body is an answer
        that is not a chat completion."""
        with self._lock:
            self._failures.extend([(status, payload)] * times)

    def reset(self) -> None:
        """Forget the recorded requests and the planned failures."""
        with self._lock:
            self._requests.clear()
            self._failures.clear()

    def start(self) -> OpenAIStub:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=f"openai-stub-{self.port}",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> OpenAIStub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- serving ---------------------------------------------------------------------

    def _answer(
        self, method: str, path: str, headers: dict[str, str], raw: bytes
    ) -> tuple[int, Any]:
        """Record one request; the status and JSON payload to answer."""
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = None
        with self._lock:
            failure = self._failures.popleft() if self._failures else None
            if failure is not None:
                status, payload = failure
                if payload is None:
                    payload = {
                        "error": {
                            "message": f"stub error {status}",
                            "type": "stub_error",
                            "code": status,
                        }
                    }
            elif method != "POST" or not path.rstrip("/").endswith("/chat/completions"):
                status = 404
                payload = {"error": {"message": f"no route {method} {path}", "code": 404}}
            elif not isinstance(body, dict) or "messages" not in body:
                status = 400
                payload = {"error": {"message": "not a chat completion request", "code": 400}}
            else:
                status = 200
                self.completions += 1
                payload = {
                    "id": f"chatcmpl-stub-{self.completions}",
                    "object": "chat.completion",
                    "created": 0,
                    "model": body.get("model"),
                    "choices": [
                        {
                            "index": 0,
                            "message": {
                                "role": "assistant",
                                "content": f"echo: {_last_user_message(body)}",
                            },
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
                }
            self._requests.append(RecordedRequest(method, path, headers, body, raw, status))
        return status, payload

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "OpenAIStub/1.0"

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                headers = {name.lower(): value for name, value in self.headers.items()}
                status, payload = stub._answer(self.command, self.path, headers, raw)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_POST = _serve
            do_GET = _serve

            def log_message(self, format: str, *args: Any) -> None:
                return None  # quiet

        return Handler
