"""Models served by a request-level backend (the clearly named test double
``EchoRequestBackend``): the same front doors, the engine's request runner in front of it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from inferflux_core.config import Settings
from inferflux_core.contracts import (
    ChatMessage,
    GenerationOptions,
    InferenceRequest,
    TextDelta,
    ToolSpec,
    UsageReport,
)
from inferflux_core.engine import Engine
from inferflux_core.engine.collect import collect
from inferflux_core.errors import InvalidRequestError, QueueFullError
from inferflux_core.frontdoors import CompletionsDoor, Driver, Usage
from tests.conftest import RunningServer, free_port, start_server
from tests.request_backend_double import NAME, EchoDoublePlugin, EchoRequestBackend

PLUGINS = [("echo_double", EchoDoublePlugin())]


def settings(**options: Any) -> Settings:
    return Settings.model_validate(
        {
            "server": {"port": free_port(), "log_level": "warning"},
            "auth": {"mode": "disabled"},
            "models": [
                {"name": "echo", "source": "upstream-model", "backend": NAME, "options": options,
                 "max_sequences": 1},
                {"name": "unready", "source": "x", "backend": NAME, "options": {"ready": False}},
            ],
            "scheduler": {"max_queue": 2},
        }
    )  # fmt: skip


@pytest.fixture(scope="module")
def echo_server() -> Iterator[RunningServer]:
    running = start_server(settings(), extra_plugins=PLUGINS)
    yield running
    running.stop()


def client(server: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.api_url, api_key=server.api_key, max_retries=0)


def test_a_chat_completion_is_relayed_whole_and_streamed(echo_server: RunningServer) -> None:
    messages: Any = [{"role": "user", "content": "hello there world"}]
    whole = client(echo_server).chat.completions.create(model="echo", messages=messages)
    assert whole.choices[0].message.content == "hello there world"
    assert whole.choices[0].finish_reason == "stop"
    assert whole.usage is not None and whole.usage.completion_tokens == 3
    stream = client(echo_server).chat.completions.create(
        model="echo", messages=messages, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "hello there world"
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 6


def test_a_field_the_backend_cannot_serve_is_a_400_naming_it(echo_server: RunningServer) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client(echo_server).chat.completions.create(
            model="echo", messages=[{"role": "user", "content": "hi"}], logprobs=True
        )
    assert caught.value.body["param"] == "logprobs"  # type: ignore[index]


def test_tool_calls_are_parsed_out_of_the_text_of_a_backend_without_native_tools(
    echo_server: RunningServer,
) -> None:
    call = '<tool_call>\n{"name": "f", "arguments": {"a": 1}}\n</tool_call>'
    tools: Any = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    reply = client(echo_server).chat.completions.create(
        model="echo", messages=[{"role": "user", "content": call}], tools=tools
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls and choice.message.tool_calls[0].function.name == "f"
    backend = echo_server.engine.model("echo").backend
    assert isinstance(backend, EchoRequestBackend)
    sent = backend.requests[-1]
    assert sent.tools == () and "<tools>" in (sent.messages or ())[0].content  # type: ignore[operator]


def test_readyz_names_a_backend_that_is_not_ready(echo_server: RunningServer) -> None:
    reply = httpx.get(f"{echo_server.base_url}/readyz")
    assert reply.status_code == 503
    assert reply.json()["unavailable"] == [{"model": "unready", "reason": "the double says no"}]


def _request(text: str, priority: int = 0) -> InferenceRequest:
    return InferenceRequest("echo", messages=(ChatMessage("user", text),), priority=priority)


def test_admission_priority_cancellation_on_the_engine() -> None:
    """One runs, two wait (max_queue 2), the next is a 429; the higher priority waiter runs
    first; a consumer that goes away aborts its request in the backend."""

    async def scenario() -> None:
        engine = Engine(settings(hold=True), extra_plugins=PLUGINS)
        await engine.start()
        try:
            backend = engine.model("echo").backend
            assert isinstance(backend, EchoRequestBackend) and backend.started
            running = await engine.open(_request("first"))
            low = asyncio.create_task(engine.open(_request("low", priority=1)))
            await asyncio.sleep(0.05)
            high = asyncio.create_task(engine.open(_request("high", priority=5)))
            await asyncio.sleep(0.05)
            with pytest.raises(QueueFullError):
                await engine.open(_request("refused"))
            assert not high.done() and not low.done()
            await running.aclose()  # type: ignore[attr-defined]
            assert backend.aborted == [backend.requests[0].request_id], "closing aborts it"
            backend.release()
            events = [e async for e in await high]
            assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "high"
            assert isinstance(events[-1], UsageReport)
            low_events = [e async for e in await low]
            assert isinstance(low_events[-1], UsageReport)
            texts = [r.messages[0].content for r in backend.requests if r.messages]
            assert texts == ["first", "high", "low"]
            result = await engine.collect(_request("again"))
            assert result.choices[0].text == "again"
            assert len(backend.aborted) == 1
        finally:
            await engine.stop()

    asyncio.run(scenario())


def test_forced_tool_calls_need_native_tools() -> None:
    async def scenario() -> None:
        engine = Engine(settings(), extra_plugins=PLUGINS)
        await engine.start()
        try:
            request = InferenceRequest(
                "echo",
                messages=(ChatMessage("user", "x"),),
                tools=(ToolSpec("f"),),
                tool_choice=__import__(
                    "inferflux_core.contracts", fromlist=["ToolChoice"]
                ).ToolChoice("required"),
                options=GenerationOptions(n=1),
            )
            with pytest.raises(InvalidRequestError) as caught:
                await engine.open(request)
            assert caught.value.param == "tool_choice"
            collected = await engine.collect(_request("a b"))
            assert collected.choices[0].text == "a b"
            assert collected.choices[0].finish_reason == "stop"
        finally:
            await engine.stop()

    asyncio.run(scenario())


def test_the_driver_merges_prompts_and_charges_prompt_tokens_before_any_event() -> None:
    """Completions with two prompts: two engine requests, their choices numbered one after the
    other and their usage summed; the prompt tokens are on the meter as soon as it is open."""

    async def scenario() -> None:
        engine = Engine(settings(), extra_plugins=PLUGINS)
        await engine.start()
        try:
            door = CompletionsDoor(engine)
            call = door.parse({"model": "echo", "prompt": ["one two", "three"], "n": 1})
            usage = Usage()
            events = await Driver(engine).events(call, usage)
            assert (usage.prompt_tokens, usage.completion_tokens) == (3, 0)
            result = await collect(events)
            assert [c.text for c in result.choices] == ["one two", "three"]
            assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (3, 3)
            assert usage.total_tokens == 6
            whole = door.encode(call, result)
            assert [c["index"] for c in whole["choices"]] == [0, 1]
        finally:
            await engine.stop()

    asyncio.run(scenario())
