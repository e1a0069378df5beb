"""The agent frameworks users call us through, against the real server and model.

LangChain (``langchain-openai``), ``instructor`` and the OpenAI Agents SDK each talk to the
live test server through their own OpenAI client. Every client gets an ``httpx`` client that
records the JSON bodies it sends, so each test also checks that the framework took the path
the test is about (a forced tool call, a ``json_schema`` response format, ...), and a guard
makes sure nothing reaches for a host other than loopback.

SmolLM2-135M is tiny: assertions rest on what the server guarantees (greedy decoding is
deterministic, forced calls and schemas are enforced by a grammar), not on its answers.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
from collections.abc import Iterator
from enum import StrEnum
from typing import Annotated, Any

import httpx
import openai
import pytest
from pydantic import BaseModel, Field

from tests.conftest import MODEL_NAME, RunningServer
from tests.integration.test_embeddings_api import model_embedding_length

# The Agents SDK exports traces to OpenAI unless told not to; set before it is imported.
os.environ["OPENAI_AGENTS_DISABLE_TRACING"] = "1"

import agents
import instructor
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI, OpenAIEmbeddings

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
QUESTION = "What will the weather be in Paris for 3 days?"


class Unit(StrEnum):
    """A temperature unit."""

    celsius = "celsius"
    fahrenheit = "fahrenheit"


class Forecast(BaseModel):
    """A weather forecast request: a city, a number of days, a unit."""

    city: str = Field(max_length=30)
    days: int = Field(ge=1, le=7)
    unit: Unit


class Pet(StrEnum):
    """A kind of pet."""

    cat = "cat"
    dog = "dog"
    fish = "fish"


class PetCount(BaseModel):
    """How many pets of one kind someone has."""

    pet: Pet
    count: int = Field(ge=0, le=10)


# -- recording and guarding the traffic --------------------------------------------------------


class Recorder:
    """The JSON bodies of the requests a framework sent, by path."""

    def __init__(self) -> None:
        self.bodies: list[tuple[str, dict[str, Any]]] = []

    def record(self, request: httpx.Request) -> None:
        """An ``httpx`` request hook: keep the path and the decoded body."""
        body = json.loads(request.content) if request.content else {}
        self.bodies.append((request.url.path, body))

    async def record_async(self, request: httpx.Request) -> None:
        """The same hook for an ``httpx.AsyncClient``."""
        self.record(request)

    def last(self, path_end: str) -> dict[str, Any]:
        """The last body sent to a path ending in ``path_end``."""
        for path, body in reversed(self.bodies):
            if path.endswith(path_end):
                return body
        raise AssertionError(f"no request to {path_end}: {[p for p, _ in self.bodies]}")

    def all(self, path_end: str) -> list[dict[str, Any]]:
        """Every body sent to a path ending in ``path_end``, in order."""
        return [body for path, body in self.bodies if path.endswith(path_end)]


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def http_client(recorder: Recorder) -> Iterator[httpx.Client]:
    with httpx.Client(timeout=120, event_hooks={"request": [recorder.record]}) as client:
        yield client


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch, server: RunningServer) -> Iterator[None]:
    """Refuse, and fail the test on, any name lookup of a host other than loopback.

    Catches a framework reaching out at test time (tiktoken fetching encodings, the Agents
    SDK exporting traces), even from a background thread whose error nobody sees. The
    server is started first so that its own start-up is not under the guard.
    """
    attempts: list[str] = []
    real_getaddrinfo = socket.getaddrinfo

    def guarded(host: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else host
        if name is not None and name not in LOOPBACK:
            attempts.append(str(name))
            raise OSError(f"test guard: no network beyond loopback (asked for {name})")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", guarded)
    yield
    assert server.wait_idle(), "a request was left holding a sequence"
    assert not attempts, f"something tried to reach {attempts}"


# -- LangChain -----------------------------------------------------------------------------------


@pytest.fixture
def chat(server: RunningServer, http_client: httpx.Client) -> ChatOpenAI:
    """LangChain's chat model on the test server, greedy, short answers."""
    return ChatOpenAI(
        base_url=server.api_url,
        api_key=server.api_key,  # type: ignore[arg-type]
        model=MODEL_NAME,
        temperature=0,
        max_tokens=128,  # type: ignore[call-arg]
        max_retries=0,
        http_client=http_client,
    )


def test_langchain_invoke_returns_an_ai_message_with_content(
    chat: ChatOpenAI, recorder: Recorder
) -> None:
    reply = chat.invoke("What is the capital of France?", max_tokens=24)
    assert isinstance(reply, AIMessage)
    assert isinstance(reply.content, str) and reply.content.strip()
    assert reply.response_metadata["finish_reason"] in {"stop", "length"}
    assert reply.response_metadata["model_name"] == MODEL_NAME
    usage = reply.usage_metadata
    assert usage is not None and usage["output_tokens"] > 0
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    sent = recorder.last("/chat/completions")
    assert sent["temperature"] == 0
    assert sent["max_completion_tokens"] == 24


def test_langchain_stream_concatenates_to_the_greedy_answer(
    chat: ChatOpenAI, recorder: Recorder
) -> None:
    prompt = "Tell me a short story about a cat."
    whole = chat.invoke(prompt, max_tokens=24)
    chunks = list(chat.stream(prompt, max_tokens=24, stream_usage=True))
    sent = recorder.last("/chat/completions")
    assert sent.get("stream") is True
    assert sent["stream_options"] == {"include_usage": True}
    assert len(chunks) > 2, "the answer came in one piece, not streamed"
    assert all(isinstance(chunk, AIMessageChunk) for chunk in chunks)
    assert "".join(str(chunk.content) for chunk in chunks) == whole.content
    merged = chunks[0]
    for chunk in chunks[1:]:
        merged = merged + chunk
    assert merged.content == whole.content
    assert merged.response_metadata["finish_reason"] == whole.response_metadata["finish_reason"]
    assert merged.usage_metadata is not None and whole.usage_metadata is not None
    for count in ("input_tokens", "output_tokens", "total_tokens"):
        assert merged.usage_metadata[count] == whole.usage_metadata[count]


def test_langchain_logprobs_cover_the_answer(chat: ChatOpenAI) -> None:
    reply = chat.bind(logprobs=True, top_logprobs=2).invoke("Say hello.", max_tokens=12)
    entries = reply.response_metadata["logprobs"]["content"]
    assert "".join(entry["token"] for entry in entries) == reply.content
    for entry in entries:
        assert entry["logprob"] <= 0
        assert len(entry["top_logprobs"]) == 2
        # Greedy: the chosen token is the likeliest.
        assert entry["logprob"] == pytest.approx(entry["top_logprobs"][0]["logprob"])


def test_langchain_n_gives_that_many_generations(chat: ChatOpenAI) -> None:
    sampling = chat.model_copy(update={"n": 3, "temperature": 1.0, "seed": 7})
    result = sampling.generate([[HumanMessage("Name a color.")]], max_tokens=8)
    generations = result.generations[0]
    assert len(generations) == 3
    assert all(isinstance(g.message, AIMessage) and g.message.content for g in generations)


@tool
def get_forecast(city: str, days: int) -> str:
    """Get the weather forecast for a city for a number of days."""
    return f"{city}: sunny for {days} days"


@pytest.mark.parametrize("spec", [Forecast, get_forecast], ids=["pydantic", "tool-function"])
def test_langchain_bind_tools_with_a_named_choice_makes_that_call(
    chat: ChatOpenAI, recorder: Recorder, spec: Any
) -> None:
    name = "Forecast" if spec is Forecast else "get_forecast"
    reply = chat.bind_tools([spec], tool_choice=name).invoke(QUESTION)
    sent = recorder.last("/chat/completions")
    assert sent["tool_choice"] == {"type": "function", "function": {"name": name}}
    assert isinstance(reply, AIMessage)
    assert reply.invalid_tool_calls == []
    assert len(reply.tool_calls) >= 1
    call = reply.tool_calls[0]
    assert call["name"] == name
    assert call["id"] and call["id"].startswith("call_")
    if spec is Forecast:
        Forecast.model_validate(call["args"])
    else:
        assert get_forecast.invoke(call["args"]).startswith(f"{call['args']['city']}: sunny")


@pytest.mark.parametrize("method", ["json_schema", "function_calling"])
def test_langchain_structured_output_is_an_instance_of_the_model(
    chat: ChatOpenAI, recorder: Recorder, method: str
) -> None:
    structured = chat.with_structured_output(Forecast, method=method)  # type: ignore[arg-type]
    result = structured.invoke(QUESTION)
    assert isinstance(result, Forecast)
    assert 1 <= result.days <= 7
    sent = recorder.last("/chat/completions")
    if method == "json_schema":
        assert sent["response_format"]["type"] == "json_schema"
    else:
        assert sent["tool_choice"]["function"]["name"] == "Forecast"


def test_langchain_embeddings_have_the_models_size(
    server: RunningServer, http_client: httpx.Client, recorder: Recorder
) -> None:
    embeddings = OpenAIEmbeddings(
        base_url=server.api_url,
        api_key=server.api_key,  # type: ignore[arg-type]
        model=MODEL_NAME,
        check_embedding_ctx_length=False,
        max_retries=0,
        http_client=http_client,
    )
    texts = ["The capital of France is Paris.", "Cats purr."]
    vectors = embeddings.embed_documents(texts)
    query = embeddings.embed_query(texts[0])
    size = model_embedding_length(server)
    assert [len(v) for v in vectors] == [size, size]
    assert len(query) == size
    assert max(abs(a - b) for a, b in zip(query, vectors[0], strict=True)) < 1e-4
    assert vectors[0] != vectors[1]
    assert recorder.last("/embeddings")["input"] == [texts[0]]


# -- instructor ----------------------------------------------------------------------------------


@pytest.fixture
def sdk_client(server: RunningServer, http_client: httpx.Client) -> openai.OpenAI:
    """An OpenAI SDK client on the test server whose requests are recorded."""
    return openai.OpenAI(
        base_url=server.api_url, api_key=server.api_key, max_retries=0, http_client=http_client
    )


@pytest.mark.parametrize("mode", [instructor.Mode.TOOLS, instructor.Mode.JSON_SCHEMA])
def test_instructor_returns_a_validated_instance(
    sdk_client: openai.OpenAI, recorder: Recorder, mode: instructor.Mode
) -> None:
    client = instructor.from_openai(sdk_client, mode=mode)
    result = client.chat.completions.create(
        model=MODEL_NAME,
        response_model=PetCount,
        messages=[{"role": "user", "content": "I have two cats and a dog. How many cats?"}],
        max_retries=0,
        max_tokens=64,
        temperature=0,
    )
    assert isinstance(result, PetCount)
    assert isinstance(result.pet, Pet)
    assert 0 <= result.count <= 10
    sent = recorder.last("/chat/completions")
    if mode == instructor.Mode.TOOLS:
        assert sent["tool_choice"] == {"type": "function", "function": {"name": "PetCount"}}
    else:
        assert sent["response_format"]["type"] == "json_schema"
        assert sent["response_format"]["json_schema"]["schema"]["title"] == "PetCount"


def test_instructor_partial_stream_ends_in_a_validated_instance(
    sdk_client: openai.OpenAI, recorder: Recorder
) -> None:
    client = instructor.from_openai(sdk_client, mode=instructor.Mode.TOOLS)
    partials = list(
        client.chat.completions.create_partial(
            model=MODEL_NAME,
            response_model=PetCount,
            messages=[{"role": "user", "content": "I have two cats and a dog. How many cats?"}],
            max_retries=0,
            max_tokens=64,
            temperature=0,
            # instructor validates partials strictly, where a str is no StrEnum member.
            strict=False,
        )
    )
    assert recorder.last("/chat/completions")["stream"] is True
    assert len(partials) > 1, "the arguments should arrive in pieces"
    final = PetCount.model_validate(partials[-1].model_dump())
    assert 0 <= final.count <= 10


# -- OpenAI Agents SDK ---------------------------------------------------------------------------


class ForecastCalls:
    """A ``@function_tool`` that records the arguments of every call it gets."""

    def __init__(self) -> None:
        self.calls: list[Forecast] = []

    def tool(self) -> agents.FunctionTool:
        """The tool an agent is given."""

        @agents.function_tool
        def get_weather(
            city: Annotated[str, Field(max_length=30)],
            days: Annotated[int, Field(ge=1, le=7)],
            unit: Unit,
        ) -> str:
            """Get the weather forecast for a city for a number of days."""
            # Validated again here: the SDK checks the arguments against its own schema.
            self.calls.append(Forecast(city=city, days=days, unit=unit))
            return f"Sunny in {city} for {days} days."

        return get_weather


def run_agent(
    server: RunningServer,
    recorder: Recorder,
    calls: ForecastCalls,
    streamed: bool = False,
    **agent_options: Any,
) -> agents.RunResult | agents.RunResultStreaming:
    """Run an agent with the recording tool on the test server, at most three turns."""
    agents.set_tracing_disabled(True)

    async def run() -> agents.RunResult | agents.RunResultStreaming:
        async with httpx.AsyncClient(
            timeout=120, event_hooks={"request": [recorder.record_async]}
        ) as http:
            client = openai.AsyncOpenAI(
                base_url=server.api_url, api_key=server.api_key, max_retries=0, http_client=http
            )
            agent = agents.Agent(
                name="forecaster",
                instructions="You answer weather questions with the get_weather tool.",
                model=agents.OpenAIChatCompletionsModel(model=MODEL_NAME, openai_client=client),
                tools=[calls.tool()],
                **agent_options,
            )
            if not streamed:
                return await agents.Runner.run(agent, QUESTION, max_turns=3)
            result = agents.Runner.run_streamed(agent, QUESTION, max_turns=3)
            async for _event in result.stream_events():
                pass
            return result

    return asyncio.run(run())


def forced(tool_choice: str) -> agents.ModelSettings:
    return agents.ModelSettings(tool_choice=tool_choice, temperature=0, max_tokens=64)


@pytest.mark.parametrize(
    ("tool_choice", "streamed"),
    [("get_weather", False), ("required", False), ("get_weather", True)],
    ids=["named", "required", "named-streamed"],
)
def test_agents_sdk_forced_tool_call_runs_the_tool_with_valid_arguments(
    server: RunningServer, recorder: Recorder, tool_choice: str, streamed: bool
) -> None:
    calls = ForecastCalls()
    result = run_agent(
        server,
        recorder,
        calls,
        streamed=streamed,
        model_settings=forced(tool_choice),
        tool_use_behavior="stop_on_first_tool",
    )
    first = recorder.all("/chat/completions")[0]
    assert first.get("stream", False) is streamed
    expected = (
        {"type": "function", "function": {"name": "get_weather"}}
        if tool_choice == "get_weather"
        else "required"
    )
    assert first["tool_choice"] == expected
    assert len(calls.calls) >= 1
    call = calls.calls[0]
    assert 1 <= call.days <= 7
    # stop_on_first_tool: the first tool's output is the run's final output.
    assert result.final_output == f"Sunny in {call.city} for {call.days} days."
    assert len(recorder.all("/chat/completions")) == 1


def test_agents_sdk_run_goes_on_after_the_tool_and_ends_or_hits_max_turns(
    server: RunningServer, recorder: Recorder
) -> None:
    calls = ForecastCalls()
    try:
        result = run_agent(server, recorder, calls, model_settings=forced("get_weather"))
    except agents.MaxTurnsExceeded:
        result = None
    requests = recorder.all("/chat/completions")
    assert len(calls.calls) >= 1
    # The second turn sends the call and its result back: the server must take them.
    assert len(requests) >= 2
    second = requests[1]["messages"]
    tool_messages = [m for m in second if m["role"] == "tool"]
    assert tool_messages and tool_messages[0]["content"].startswith("Sunny in ")
    assistant = [m for m in second if m["role"] == "assistant" and m.get("tool_calls")]
    assert assistant[0]["tool_calls"][0]["id"] == tool_messages[0]["tool_call_id"]
    # The SDK resets a forced tool_choice after a call so the model can answer.
    assert requests[1].get("tool_choice") in (None, "auto")
    if result is None:
        assert len(requests) == 3
    else:
        assert isinstance(result.final_output, str) and result.final_output.strip()
