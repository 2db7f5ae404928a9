"""Prompt tasks against a real HTTP server: an OpenAI-compatible stub on 127.0.0.1.

Pinned behaviour: a prompt task POSTs ``{base_url}/chat/completions`` with ``model``
and the body's return value as the last user message (after the ``system=`` message, if
any) and gives the first choice's message content; the key (``api_key=`` or
``OPENAI_API_KEY``) goes as ``Authorization: Bearer``; ``base_url`` falls back to
``OPENAI_BASE_URL``. No endpoint is a ``StepgraphError`` at declaration; a refused
connection or an HTTP error is ``TaskFailed`` naming the task (and the status). Prompt
tasks run on inline or thread backends only; on a ``NoopBackend`` nothing is sent.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest

from stepgraph.backends import (
    Backend,
    InlineBackend,
    NoopBackend,
    ProcessBackend,
    SubprocessBackend,
    ThreadBackend,
)
from stepgraph.errors import BackendError, DependencyFailed, StepgraphError, TaskFailed
from stepgraph.tasks import TaskFlow
from tests.stubs.openai_stub import OpenAIStub

pytest.importorskip("httpx")


@pytest.fixture
def stub() -> Iterator[OpenAIStub]:
    with OpenAIStub() as server:
        yield server


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No endpoint, key or proxy leaks in from the machine running the tests (httpx
    honours proxy variables, which would route 127.0.0.1 away from the stub)."""
    for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


def _backends() -> dict[str, Backend]:
    return {"default": ThreadBackend(2), "inline": InlineBackend()}


def _refused_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then closed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# -- the request and the answer ------------------------------------------------------------


@pytest.mark.parametrize("backend", ["default", "inline"])
async def test_request_path_model_message_and_result(stub: OpenAIStub, backend: str) -> None:
    async with TaskFlow(backends=_backends()) as flow:

        @flow.prompt_task(model="m", base_url=stub.base_url, retries=0, backend=backend)
        async def summarize(text: str) -> str:
            return f"Summarize: {text}"

        answer = await summarize("abc")

    assert answer == "echo: Summarize: abc"
    [request] = stub.requests
    assert request.method == "POST"
    assert request.path == "/v1/chat/completions"
    assert request.body["model"] == "m"
    assert request.messages == [{"role": "user", "content": "Summarize: abc"}]
    assert request.headers["content-type"].startswith("application/json")
    assert "authorization" not in request.headers  # no key anywhere: none sent
    assert "temperature" not in request.body


async def test_plain_def_body_and_trailing_slash(stub: OpenAIStub) -> None:
    async with TaskFlow(backends=_backends()) as flow:

        @flow.prompt_task(model="other-model", base_url=stub.base_url + "/", retries=0)
        def ask(a: int, b: int) -> str:
            return f"add {a} and {b}"

        answer = await ask(2, b=3)

    assert answer == "echo: add 2 and 3"
    [request] = stub.requests
    assert request.path == "/v1/chat/completions"
    assert request.body["model"] == "other-model"
    assert request.messages[-1] == {"role": "user", "content": "add 2 and 3"}


async def test_system_message_comes_first(stub: OpenAIStub) -> None:
    async with TaskFlow(backends=_backends()) as flow:

        @flow.prompt_task(
            model="m",
            base_url=stub.base_url,
            system="You are terse.",
            temperature=0.25,
            retries=0,
        )
        async def question(topic: str) -> str:
            return f"Tell me about {topic}"

        answer = await question("owls")

    assert answer == "echo: Tell me about owls"
    [request] = stub.requests
    assert request.messages == [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Tell me about owls"},
    ]
    assert request.body["temperature"] == 0.25


async def test_bearer_key_from_api_key(stub: OpenAIStub, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")  # api_key= wins over it
    async with TaskFlow(backends=_backends()) as flow:

        @flow.prompt_task(model="m", base_url=stub.base_url, api_key="sk-explicit", retries=0)
        async def hello() -> str:
            return "hi"

        assert await hello() == "echo: hi"

    [request] = stub.requests
    assert request.headers["authorization"] == "Bearer sk-explicit"


async def test_bearer_key_from_env(stub: OpenAIStub, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    async with TaskFlow(backends=_backends()) as flow:

        @flow.prompt_task(model="m", base_url=stub.base_url, retries=0)
        async def hello() -> str:
            return "hi"

        assert await hello() == "echo: hi"

    [request] = stub.requests
    assert request.headers["authorization"] == "Bearer sk-from-env"


async def test_base_url_from_env(stub: OpenAIStub, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", stub.base_url)
    async with TaskFlow(backends=_backends()) as flow:

        @flow.prompt_task(model="env-model", retries=0)
        async def hello(name: str) -> str:
            return f"hello {name}"

        assert await hello("env") == "echo: hello env"

    [request] = stub.requests
    assert request.path == "/v1/chat/completions"
    assert request.body["model"] == "env-model"


async def test_explicit_base_url_wins_over_env(
    stub: OpenAIStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", f"http://127.0.0.1:{_refused_port()}/v1")
    async with TaskFlow(backends=_backends()) as flow:

        @flow.prompt_task(model="m", base_url=stub.base_url, retries=0)
        async def hello() -> str:
            return "hi"

        assert await hello() == "echo: hi"

    assert len(stub.requests) == 1


# -- futures as arguments ---------------------------------------------------------------------


async def test_function_task_result_feeds_the_prompt(stub: OpenAIStub) -> None:
    async with TaskFlow(backends=_backends()) as flow:

        @flow.function_task
        def load(name: str) -> str:
            return f"the text of {name}"

        @flow.prompt_task(model="m", base_url=stub.base_url, retries=0, backend="inline")
        async def summarize(text: str, *, style: str) -> str:
            return f"Summarize ({style}): {text}"

        @flow.function_task(backend="inline")
        def shout(answer: str) -> str:
            return answer.upper()

        document = load("doc.txt")
        summary = summarize(document, style="short")
        final = await shout(summary)

    assert summary.result() == "echo: Summarize (short): the text of doc.txt"
    assert final == "ECHO: SUMMARIZE (SHORT): THE TEXT OF DOC.TXT"
    [request] = stub.requests
    assert request.messages[-1] == {
        "role": "user",
        "content": "Summarize (short): the text of doc.txt",
    }


async def test_futures_inside_a_list(stub: OpenAIStub) -> None:
    async with TaskFlow(backends=_backends()) as flow:

        @flow.function_task
        def part(n: int) -> str:
            return f"p{n}"

        @flow.prompt_task(model="m", base_url=stub.base_url, retries=0)
        async def join(parts: list[str]) -> str:
            return "+".join(parts)

        answer = await join([part(1), part(2), "p3"])

    assert answer == "echo: p1+p2+p3"
    assert [r.messages[-1]["content"] for r in stub.requests] == ["p1+p2+p3"]


# -- retries and failures --------------------------------------------------------------------


async def test_retries_after_server_errors(stub: OpenAIStub) -> None:
    stub.fail_next(500, times=2)
    async with TaskFlow(backends=_backends()) as flow:

        @flow.prompt_task(model="m", base_url=stub.base_url, retries=2, retry_delay=0.01)
        async def flaky() -> str:
            return "try again"

        answer = await flaky()

    assert answer == "echo: try again"
    requests = stub.requests
    assert [r.status for r in requests] == [500, 500, 200]
    assert all(r.path == "/v1/chat/completions" for r in requests)
    assert all(r.messages[-1]["content"] == "try again" for r in requests)


async def test_retries_run_out(stub: OpenAIStub) -> None:
    stub.fail_next(503, times=3)
    async with TaskFlow(backends=_backends()) as flow:

        @flow.prompt_task(model="m", base_url=stub.base_url, retries=1, retry_delay=0.01)
        async def unlucky() -> str:
            return "x"

        future = unlucky()
        with pytest.raises(TaskFailed) as caught:
            await future

    assert "unlucky" in str(caught.value)
    assert "503" in str(caught.value)
    assert len(stub.requests) == 2  # one try and one retry


async def test_http_401_is_task_failed_without_retry(stub: OpenAIStub) -> None:
    stub.fail_next(401)
    async with TaskFlow(backends=_backends()) as flow:

        @flow.prompt_task(
            model="m", base_url=stub.base_url, api_key="bad", retries=2, retry_delay=0.01
        )
        async def secret_question() -> str:
            return "who are you?"

        with pytest.raises(TaskFailed) as caught:
            await secret_question()

    error = caught.value
    assert "secret_question" in str(error)
    assert "401" in str(error)
    assert error.task == "secret_question"
    assert getattr(error.__cause__, "status", None) == 401
    assert len(stub.requests) == 1  # a 401 is not retried


async def test_dependent_of_failed_prompt_does_not_run(stub: OpenAIStub) -> None:
    stub.fail_next(401)
    ran: list[str] = []
    async with TaskFlow(backends=_backends()) as flow:

        @flow.prompt_task(model="m", base_url=stub.base_url, retries=0)
        async def denied() -> str:
            return "q"

        @flow.function_task(backend="inline")
        def after(answer: str) -> str:
            ran.append(answer)
            return answer

        first = denied()
        second = after(first)
        with pytest.raises(DependencyFailed) as caught:
            await second

    assert ran == []
    assert isinstance(first.exception(), TaskFailed)
    assert "denied" in str(caught.value)


async def test_refused_connection_is_task_failed() -> None:
    url = f"http://127.0.0.1:{_refused_port()}/v1"
    async with TaskFlow(backends=_backends()) as flow:

        @flow.prompt_task(model="m", base_url=url, retries=0, timeout=5.0)
        async def unreachable() -> str:
            return "anyone there?"

        with pytest.raises(TaskFailed) as caught:
            await unreachable()

    error = caught.value
    assert "unreachable" in str(error)
    assert error.task == "unreachable"


async def test_not_a_chat_completion_is_task_failed(stub: OpenAIStub) -> None:
    stub.fail_next(200, payload={"choices": []})
    async with TaskFlow(backends=_backends()) as flow:

        @flow.prompt_task(model="m", base_url=stub.base_url, retries=0)
        async def empty() -> str:
            return "?"

        with pytest.raises(TaskFailed) as caught:
            await empty()

    assert "empty" in str(caught.value)
    assert "chat completion" in str(caught.value)


async def test_null_content_is_task_failed_not_the_text_none(stub: OpenAIStub) -> None:
    refusal = {
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": None, "refusal": "no"},
                "finish_reason": "stop",
            }
        ]
    }
    stub.fail_next(200, payload=refusal)
    async with TaskFlow(backends=_backends()) as flow:

        @flow.prompt_task(model="m", base_url=stub.base_url, retries=0)
        async def refused() -> str:
            return "?"

        with pytest.raises(TaskFailed) as caught:
            await refused()

    assert "refused" in str(caught.value)
    assert "content" in str(caught.value)


async def test_negative_retries_is_an_error_not_a_crash(stub: OpenAIStub) -> None:
    # Rejected at declaration or when called: either way a clear error naming retries
    # (not the "unreachable" AssertionError of an empty retry loop), and nothing is sent.
    async with TaskFlow(backends=_backends()) as flow:
        with pytest.raises((ValueError, StepgraphError)) as caught:

            @flow.prompt_task(model="m", base_url=stub.base_url, retries=-1)
            async def never() -> str:
                return "x"

            await never()

    assert "retries" in str(caught.value)
    assert stub.requests == []


async def test_many_prompts_at_once(stub: OpenAIStub) -> None:
    async with TaskFlow(backends=_backends()) as flow:

        @flow.prompt_task(model="m", base_url=stub.base_url, retries=0)
        async def number(n: int) -> str:
            return f"n={n}"

        futures = [number(n) for n in range(8)]
        answers = [await f for f in futures]

    assert answers == [f"echo: n={n}" for n in range(8)]
    assert sorted(r.messages[-1]["content"] for r in stub.requests) == sorted(
        f"n={n}" for n in range(8)
    )


# -- declaration checks ----------------------------------------------------------------------


async def test_no_endpoint_is_an_error_at_declaration(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    async with TaskFlow(backends=_backends()) as flow:
        with pytest.raises(StepgraphError) as caught:

            @flow.prompt_task(model="m")
            async def nowhere() -> str:
                return "x"

    assert "nowhere" in str(caught.value)
    assert "OPENAI_BASE_URL" in str(caught.value)


@pytest.mark.parametrize(
    "make", [lambda: ProcessBackend(1), lambda: SubprocessBackend()], ids=["process", "subprocess"]
)
def test_prompt_task_on_other_backends_is_backend_error(stub: OpenAIStub, make: Any) -> None:
    # Declaring needs no running flow (and starts no worker process).
    flow = TaskFlow(backends={"default": ThreadBackend(1), "far": make()})
    with pytest.raises(BackendError) as caught:

        @flow.prompt_task(model="m", base_url=stub.base_url, backend="far")
        async def remote() -> str:
            return "x"

    assert "remote" in str(caught.value)
    assert "far" in str(caught.value)
    assert stub.requests == []


async def test_noop_backend_sends_nothing(stub: OpenAIStub) -> None:
    called: list[str] = []
    noop = NoopBackend()
    async with TaskFlow(backends={"default": noop}) as flow:

        @flow.prompt_task(model="m", base_url=stub.base_url, retries=0)
        async def dry(text: str) -> str:
            called.append(text)
            return text

        result = await dry("abc")

    assert result is None
    assert stub.requests == []
    assert called == []  # the body is not run either
    assert noop.calls == 1
