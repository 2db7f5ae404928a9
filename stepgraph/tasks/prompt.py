"""Prompt tasks: one chat completion from an OpenAI-compatible endpoint (httpx).

``POST {base_url}/chat/completions`` with the model and the prompt as the last user
message; the result is the first choice's message content. A connection that fails and
the answers 429 and 5xx are retried ``retries`` times, waiting ``retry_delay`` seconds,
doubled each time.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from ..errors import MissingExtraError

__all__ = ["PromptError", "PromptSettings", "complete"]


class PromptError(Exception):
    """The endpoint did not give a completion (``status`` is the HTTP status, if any)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class PromptSettings:
    """Where and how a prompt task asks."""

    model: str
    base_url: str
    api_key: str | None = None
    system: str | None = None
    timeout: float = 60.0
    retries: int = 2
    retry_delay: float = 0.5
    temperature: float | None = None

    def __post_init__(self) -> None:
        # A negative count would skip the loop in complete() altogether.
        if self.retries < 0:
            raise ValueError(f"retries is a count of retries (0 or more), not {self.retries!r}")
        if self.retry_delay < 0:
            raise ValueError(f"retry_delay is 0 or more seconds, not {self.retry_delay!r}")


def _httpx() -> Any:
    try:
        import httpx
    except ImportError as exc:
        raise MissingExtraError("prompt tasks", "httpx", "prompt") from exc
    return httpx


async def complete(settings: PromptSettings, prompt: str) -> str:
    """The endpoint's answer to ``prompt``.

    Raises:
        PromptError: an HTTP error (its status code), a refused or failed connection,
            or an answer that is not a chat completion.
    """
    httpx = _httpx()
    messages: list[dict[str, str]] = []
    if settings.system:
        messages.append({"role": "system", "content": settings.system})
    messages.append({"role": "user", "content": str(prompt)})
    body: dict[str, Any] = {"model": settings.model, "messages": messages}
    if settings.temperature is not None:
        body["temperature"] = settings.temperature
    headers = {"Authorization": f"Bearer {settings.api_key}"} if settings.api_key else {}
    url = settings.base_url.rstrip("/") + "/chat/completions"
    delay = settings.retry_delay
    async with httpx.AsyncClient(timeout=settings.timeout) as client:
        for attempt in range(settings.retries + 1):
            last = attempt == settings.retries
            try:
                response = await client.post(url, json=body, headers=headers)
            except httpx.HTTPError as exc:
                if last:
                    raise PromptError(f"cannot reach {url}: {type(exc).__name__}: {exc}") from exc
            else:
                status = response.status_code
                if status < 400:
                    return _content(response, url)
                if last or not (status == 429 or status >= 500):
                    raise PromptError(
                        f"{url} answered HTTP {status}: {response.text[:200]}", status=status
                    )
            await asyncio.sleep(delay)
            delay *= 2
    raise AssertionError("unreachable")  # pragma: no cover


def _content(response: Any, url: str) -> str:
    try:
        choice = response.json()["choices"][0]
        content = choice["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise PromptError(f"{url} did not answer a chat completion: {response.text[:200]}") from exc
    if not isinstance(content, str):
        # null for a refusal or a tool call: no answer (str() would make it the text "None")
        reason = choice.get("finish_reason") if isinstance(choice, dict) else None
        raise PromptError(
            f"{url} answered a chat completion without text content "
            f"(content {content!r}, finish_reason {reason!r}): {response.text[:200]}"
        )
    return content
