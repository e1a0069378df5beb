"""``openai_upstream`` against a second, real ``inferflux serve`` on loopback.

The backend is built from a :class:`RequestBackendSpec`, as the engine builds it, and driven
through ``generate()``; what the upstream answers directly (with httpx) is the reference, so
no test depends on what the model says.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx
import pytest

from inferflux_core.contracts import (
    ChatMessage,
    Finish,
    GenerationOptions,
    InferenceEvent,
    InferenceRequest,
    OutputConstraint,
    RequestBackendSpec,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    ToolChoice,
    ToolSpec,
    UsageReport,
)
from inferflux_core.errors import (
    ConfigError,
    InvalidRequestError,
    UpstreamRequestError,
    UpstreamUnavailableError,
)
from inferflux_core.plugins import PluginHost
from inferflux_plugins.backends.openai_upstream import OpenAIUpstreamBackend
from inferflux_plugins.backends.openai_upstream.payload import request_body
from tests.conftest import MODEL_NAME
from tests.upstream_server import UpstreamServer, free_loopback_url, upstream_server

__all__ = ["upstream_server"]  # the module-scoped fixture

T = TypeVar("T")
GREEDY = GenerationOptions(temperature=0.0, max_tokens=12)
WEATHER = ToolSpec(
    "get_weather",
    "The weather in a city",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)


def backend_for(upstream: UpstreamServer, **options: Any) -> OpenAIUpstreamBackend:
    """The backend serving model ``gw`` from ``upstream``'s default model."""
    settings = {"base_url": upstream.api_url, "api_key": upstream.api_key, **options}
    spec = RequestBackendSpec("gw", MODEL_NAME, 2048, 8, options=settings)
    return OpenAIUpstreamBackend(spec)


def chat(text: str, options: GenerationOptions = GREEDY, **fields: Any) -> InferenceRequest:
    """A one-message conversation for model ``gw``."""
    return InferenceRequest("gw", messages=(ChatMessage("user", text),), options=options, **fields)


def run(backend: OpenAIUpstreamBackend, scenario: Callable[[], Awaitable[T]]) -> T:
    """Run ``scenario`` on a fresh event loop, then close the backend on it."""

    async def main() -> T:
        try:
            return await scenario()
        finally:
            await backend.close()

    return asyncio.run(main())


def collect(backend: OpenAIUpstreamBackend, request: InferenceRequest) -> list[InferenceEvent]:
    """Every event ``generate(request)`` yields."""

    async def scenario() -> list[InferenceEvent]:
        return [event async for event in backend.generate(request)]

    return run(backend, scenario)


def texts(events: list[InferenceEvent], n: int = 1) -> list[str]:
    """Each choice's text."""
    return [
        "".join(e.text for e in events if isinstance(e, TextDelta) and e.choice == c)
        for c in range(n)
    ]


def direct(upstream: UpstreamServer, path: str, body: dict[str, Any]) -> httpx.Response:
    """``POST`` straight to the upstream, not streamed."""
    return httpx.post(
        f"{upstream.api_url}{path}",
        json={"model": MODEL_NAME, **body},
        headers={"Authorization": f"Bearer {upstream.api_key}"},
        timeout=120,
    )


def check_stream_shape(events: list[InferenceEvent], n: int) -> None:
    """Each choice finishes once, after its deltas; one usage report, last."""
    assert isinstance(events[-1], UsageReport)
    assert not any(isinstance(e, UsageReport) for e in events[:-1])
    finishes = [e for e in events if isinstance(e, Finish)]
    assert sorted(f.choice for f in finishes) == list(range(n))
    for finish in finishes:
        after = events[events.index(finish) + 1 :]
        assert not any(getattr(e, "choice", None) == finish.choice for e in after)


# -- generation ---------------------------------------------------------------------------


def test_a_conversation_streams_the_upstreams_text_then_finish_and_usage(
    upstream_server: UpstreamServer,
) -> None:
    events = collect(backend_for(upstream_server), chat("Name three colours."))
    check_stream_shape(events, 1)
    reference = direct(
        upstream_server,
        "/chat/completions",
        {"messages": [{"role": "user", "content": "Name three colours."}], **greedy_wire()},
    ).json()
    assert texts(events) == [reference["choices"][0]["message"]["content"]]
    assert sum(isinstance(e, TextDelta) for e in events) > 1, "the text came in one piece"
    finish = next(e for e in events if isinstance(e, Finish))
    assert finish.reason == reference["choices"][0]["finish_reason"]
    usage = events[-1]
    assert isinstance(usage, UsageReport)
    assert usage.prompt_tokens == reference["usage"]["prompt_tokens"]
    assert usage.completion_tokens == reference["usage"]["completion_tokens"]


def greedy_wire() -> dict[str, Any]:
    """:data:`GREEDY` as an OpenAI request's fields."""
    return {"temperature": 0.0, "max_tokens": GREEDY.max_tokens}


def test_a_prompt_goes_to_completions(upstream_server: UpstreamServer) -> None:
    request = InferenceRequest("gw", prompt="The river rises in the hills", options=GREEDY)
    events = collect(backend_for(upstream_server), request)
    check_stream_shape(events, 1)
    reference = direct(
        upstream_server, "/completions", {"prompt": "The river rises in the hills", **greedy_wire()}
    ).json()
    assert texts(events) == [reference["choices"][0]["text"]]


def test_logprobs_come_with_each_token_and_their_alternatives(
    upstream_server: UpstreamServer,
) -> None:
    options = GenerationOptions(temperature=0.0, max_tokens=8, logprobs=3)
    events = collect(backend_for(upstream_server), chat("Say hello.", options))
    deltas = [e for e in events if isinstance(e, TextDelta)]
    entries = [entry for d in deltas for entry in d.logprobs]
    assert len(entries) == 8
    assert "".join(e.text for e in entries) == texts(events)[0]
    for entry in entries:
        assert entry.logprob <= 0.0 and entry.bytes == entry.text.encode()
        assert 1 <= len(entry.top) <= 3
        assert max(t.logprob for t in entry.top) >= entry.logprob - 1e-6


def test_n_2_streams_two_choices_that_each_finish(upstream_server: UpstreamServer) -> None:
    options = GenerationOptions(temperature=0.0, max_tokens=8, n=2)
    events = collect(backend_for(upstream_server), chat("Say hello.", options))
    check_stream_shape(events, 2)
    first, second = texts(events, 2)
    assert first and first == second  # greedy: the same text twice
    usage = events[-1]
    assert isinstance(usage, UsageReport) and usage.completion_tokens == 16


def test_a_forced_tool_call_comes_back_as_tool_call_deltas(
    upstream_server: UpstreamServer,
) -> None:
    request = chat(
        "What is the weather in Paris?",
        GenerationOptions(temperature=0.0, max_tokens=64),
        tools=(WEATHER,),
        tool_choice=ToolChoice("function", "get_weather"),
    )
    events = collect(backend_for(upstream_server), request)
    check_stream_shape(events, 1)
    calls = [e for e in events if isinstance(e, ToolCallDelta)]
    assert calls and {c.call for c in calls} == {0}
    assert calls[0].name == "get_weather" and calls[0].id
    assert all(c.name is None and c.id is None for c in calls[1:])
    arguments = json.loads("".join(c.arguments for c in calls))
    assert isinstance(arguments.get("city"), str)
    assert next(e for e in events if isinstance(e, Finish)).reason == "tool_calls"


def test_a_conversation_with_a_tool_result_is_answered_as_the_upstream_answers_it(
    upstream_server: UpstreamServer,
) -> None:
    history = (
        ChatMessage("user", "What is the weather in Paris?"),
        ChatMessage(
            "assistant", None, tool_calls=(ToolCall("c1", "get_weather", '{"city": "Paris"}'),)
        ),
        ChatMessage("tool", "sunny, 21 degrees", tool_call_id="c1"),
    )
    request = InferenceRequest("gw", messages=history, options=GREEDY, tools=(WEATHER,))
    events = collect(backend_for(upstream_server), request)
    check_stream_shape(events, 1)
    # The same request, not streamed: what the upstream answers to it whole.
    body = {**request_body(request, MODEL_NAME), "stream": False}
    del body["stream_options"]
    reference = direct(upstream_server, "/chat/completions", body).json()
    assert texts(events) == [reference["choices"][0]["message"]["content"] or ""]


def test_a_json_schema_is_forwarded_as_response_format(upstream_server: UpstreamServer) -> None:
    schema = {
        "type": "object",
        "properties": {"colour": {"type": "string", "enum": ["red", "green"]}},
        "required": ["colour"],
        "additionalProperties": False,
    }
    request = chat(
        "Pick a colour.",
        GenerationOptions(temperature=0.0, max_tokens=40),
        constraint=OutputConstraint("json_schema", schema=schema),
    )
    (text,) = texts(collect(backend_for(upstream_server), request))
    assert json.loads(text)["colour"] in ("red", "green")


def test_the_api_key_may_come_from_the_environment(
    upstream_server: UpstreamServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("UPSTREAM_TEST_KEY", upstream_server.api_key)
    backend = backend_for(upstream_server, api_key=None, api_key_env="UPSTREAM_TEST_KEY")
    events = collect(backend, chat("Say hello."))
    assert isinstance(events[-1], UsageReport) and texts(events)[0]


# -- errors -------------------------------------------------------------------------------


def test_an_unknown_upstream_model_is_the_upstreams_404(upstream_server: UpstreamServer) -> None:
    backend = backend_for(upstream_server, upstream_model="no-such-model")
    with pytest.raises(UpstreamRequestError) as caught:
        collect(backend, chat("Hello"))
    reference = direct(
        upstream_server,
        "/chat/completions",
        {"model": "no-such-model", "messages": [{"role": "user", "content": "Hello"}]},
    )
    assert caught.value.status == reference.status_code == 404
    assert caught.value.message == reference.json()["error"]["message"]
    assert caught.value.code == reference.json()["error"]["code"]


def test_a_wrong_key_is_the_upstreams_401_without_the_key(upstream_server: UpstreamServer) -> None:
    backend = backend_for(upstream_server, api_key="sk-wrong-key-for-the-test")
    with pytest.raises(UpstreamRequestError) as caught:
        collect(backend, chat("Hello"))
    assert caught.value.status == 401
    assert caught.value.error_type == "authentication_error"
    assert "sk-wrong" not in caught.value.message and upstream_server.api_key not in str(
        caught.value.to_body()
    )
    assert "WWW-Authenticate" not in caught.value.headers  # the client's key is not at fault


def test_an_upstream_that_is_down_is_a_quick_503(upstream_server: UpstreamServer) -> None:
    spec = RequestBackendSpec("gw", MODEL_NAME, 2048, 8, options={"base_url": free_loopback_url()})
    backend = OpenAIUpstreamBackend(spec)
    with pytest.raises(UpstreamUnavailableError) as caught:
        collect(backend, chat("Hello"))
    assert caught.value.status == 503 and caught.value.code == "upstream_unavailable"
    assert "cannot be reached" in caught.value.message
    assert "127.0.0.1" not in caught.value.message


def test_a_capability_the_upstream_lacks_is_refused_before_any_event(
    upstream_server: UpstreamServer,
) -> None:
    request = chat("Hello", constraint=OutputConstraint("grammar", grammar='root ::= "a"'))
    with pytest.raises(InvalidRequestError) as caught:
        collect(backend_for(upstream_server), request)
    assert caught.value.status == 400 and caught.value.param == "response_format"


# -- cancellation -------------------------------------------------------------------------

LONG = GenerationOptions(temperature=0.0, max_tokens=1500, ignore_eos=True)


def test_closing_the_iterator_early_frees_the_upstreams_sequence(
    upstream_server: UpstreamServer,
) -> None:
    backend = backend_for(upstream_server)

    async def scenario() -> tuple[float, float]:
        stream = backend.generate(chat("Count to a thousand.", LONG))
        async for event in stream:
            if isinstance(event, TextDelta):
                break
        during = await asyncio.to_thread(upstream_server.active_sequences)
        running = backend.metrics()["num_requests_running"]
        await stream.aclose()  # type: ignore[attr-defined]
        assert backend.metrics()["num_requests_running"] == 0
        return during, running

    during, running = run(backend, scenario)
    assert during >= 1 and running == 1
    assert upstream_server.wait_for_active_sequences(lambda a: a == 0, timeout=5) == 0


def test_abort_ends_the_stream_as_cancelled_and_frees_the_upstream(
    upstream_server: UpstreamServer,
) -> None:
    backend = backend_for(upstream_server)
    request = chat("Count to a thousand.", LONG)

    async def scenario() -> list[InferenceEvent]:
        events: list[InferenceEvent] = []
        async for event in backend.generate(request):
            events.append(event)
            if len(events) == 3:
                await backend.abort(request.request_id)
        return events

    events = run(backend, scenario)
    assert [e for e in events if isinstance(e, Finish)] == [Finish(0, "cancelled")]
    assert isinstance(events[-1], UsageReport)
    assert upstream_server.wait_for_active_sequences(lambda a: a == 0, timeout=5) == 0


# -- readiness, metrics, options ----------------------------------------------------------


def readiness_of(backend: OpenAIUpstreamBackend) -> tuple[bool, str | None]:
    """``readiness()`` as a pair."""

    async def scenario() -> tuple[bool, str | None]:
        state = await backend.readiness()
        return state.ready, state.reason

    return run(backend, scenario)


def test_readiness_probes_the_upstreams_models(upstream_server: UpstreamServer) -> None:
    assert readiness_of(backend_for(upstream_server)) == (True, None)
    ready, reason = readiness_of(backend_for(upstream_server, upstream_model="nope"))
    assert not ready and "does not list model 'nope'" in str(reason)
    ready, reason = readiness_of(backend_for(upstream_server, api_key="sk-wrong"))
    assert not ready and "HTTP 401" in str(reason)
    down = RequestBackendSpec("gw", MODEL_NAME, 2048, 8, options={"base_url": free_loopback_url()})
    ready, reason = readiness_of(OpenAIUpstreamBackend(down))
    assert not ready and "cannot be reached" in str(reason)


def test_the_backend_is_registered_through_the_entry_points() -> None:
    assert PluginHost().get("backends", "openai_upstream") is OpenAIUpstreamBackend


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({}, "models.gw.options.base_url: Field required"),
        ({"base_url": "ftp://x"}, "models.gw.options.base_url: Value error, must be an http"),
        ({"base_url": "http://u:p@h/v1"}, "must not hold credentials"),
        ({"base_url": "http://h", "timeout_seconds": 0}, "models.gw.options.timeout_seconds"),
        ({"base_url": "http://h", "nope": 1}, "models.gw.options.nope: Extra inputs"),
        ({"base_url": "http://h", "headers": {"Authorization": "x"}}, "set by the backend"),
        ({"base_url": "http://h", "api_key": "k", "api_key_env": "K"}, "not both"),
        ({"base_url": "http://h", "api_key_env": "INFERFLUX_TEST_UNSET_KEY"}, "is not set"),
    ],
)
def test_invalid_options_name_their_full_key(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        OpenAIUpstreamBackend(RequestBackendSpec("gw", "m", 2048, 8, options=options))
    assert message in caught.value.message


def test_a_bare_host_gets_v1_and_the_key_is_never_shown() -> None:
    spec = RequestBackendSpec(
        "gw", "m", 2048, 8, options={"base_url": "http://h:1/", "api_key": "sk-secret-1"}
    )
    backend = OpenAIUpstreamBackend(spec)
    assert backend.options.base_url == "http://h:1/v1"
    assert "sk-secret-1" not in repr(backend.options) and "sk-secret-1" not in str(
        backend.options.model_dump()
    )
