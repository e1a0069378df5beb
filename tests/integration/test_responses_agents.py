"""The OpenAI Agents SDK on its default model class (``OpenAIResponsesModel``, which calls
``POST /v1/responses``) running a tool loop against the real server.

The first turn forces the tool (``tool_choice="required"``); the SDK resets the choice after
the call, as it does by default. The tool turns itself off once it has run, so the next turn
can only answer: the run must end with a final output, whatever the small model says.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import agents
import httpx
import openai
import pytest
from pydantic import BaseModel, Field

from tests.conftest import MODEL_NAME, RunningServer

QUESTION = "What is the weather in Paris?"


class Weather:
    """A ``get_weather`` function tool that records its calls and runs once."""

    def __init__(self) -> None:
        self.cities: list[str] = []

    def tool(self) -> agents.FunctionTool:
        """The tool the agent is given; disabled after its first call."""

        def enabled(context: Any, agent: Any) -> bool:
            return not self.cities

        @agents.function_tool(is_enabled=enabled)
        def get_weather(city: str) -> str:
            """Get the weather in a city."""
            self.cities.append(city)
            return f"Sunny in {city}."

        return get_weather


def run_agent(
    server: RunningServer, weather: Weather, *, streamed: bool, **run_options: Any
) -> tuple[agents.RunResult | agents.RunResultStreaming, list[dict[str, Any]]]:
    """Run the agent on the SDK's default model; the result and the request bodies sent."""
    sent: list[dict[str, Any]] = []

    async def record(request: httpx.Request) -> None:
        sent.append({"path": request.url.path, **json.loads(request.content or b"{}")})

    async def run() -> agents.RunResult | agents.RunResultStreaming:
        async with httpx.AsyncClient(timeout=120, event_hooks={"request": [record]}) as http:
            client = openai.AsyncOpenAI(
                base_url=server.api_url, api_key=server.api_key, max_retries=0, http_client=http
            )
            agents.set_default_openai_client(client, use_for_tracing=False)
            agent = agents.Agent(
                name="forecaster",
                instructions="Answer weather questions with the get_weather tool, in one sentence.",
                model=MODEL_NAME,
                tools=[weather.tool()],
                model_settings=agents.ModelSettings(
                    tool_choice="required",
                    parallel_tool_calls=False,
                    temperature=0,
                    max_tokens=256,
                ),
            )
            if not streamed:
                return await agents.Runner.run(agent, QUESTION, max_turns=4, **run_options)
            result = agents.Runner.run_streamed(agent, QUESTION, max_turns=4, **run_options)
            async for _event in result.stream_events():
                pass
            return result

    agents.set_tracing_disabled(True)
    return asyncio.run(run()), sent


@pytest.mark.parametrize("streamed", [False, True], ids=["whole", "streamed"])
def test_the_default_model_runs_a_tool_loop_to_a_final_output(
    server: RunningServer, streamed: bool
) -> None:
    weather = Weather()
    result, sent = run_agent(server, weather, streamed=streamed)
    assert {body["path"] for body in sent} == {"/v1/responses"}, "not the Responses API"
    assert len(weather.cities) == 1 and weather.cities[0].strip()
    assert isinstance(result.final_output, str) and result.final_output.strip()
    assert len(sent) == 2
    first, second = sent
    assert first["tool_choice"] == "required" and first.get("stream", False) is streamed
    assert [tool["name"] for tool in first["tools"]] == ["get_weather"]
    # The second turn sends the call and what it returned back, and no longer forces a tool.
    calls = [item for item in second["input"] if item.get("type") == "function_call"]
    outputs = [item for item in second["input"] if item.get("type") == "function_call_output"]
    assert len(calls) == 1 and len(outputs) == 1
    assert outputs[0]["call_id"] == calls[0]["call_id"]
    assert outputs[0]["output"] == f"Sunny in {weather.cities[0]}."
    assert second.get("tool_choice") in (None, "auto")


def test_the_default_model_chains_turns_by_previous_response_id(server: RunningServer) -> None:
    weather = Weather()
    result, sent = run_agent(server, weather, streamed=False, auto_previous_response_id=True)
    assert isinstance(result.final_output, str) and result.final_output.strip()
    first, second = sent
    # The second turn sends only the tool's output and points at the stored first turn.
    assert second["previous_response_id"].startswith("resp_")
    assert [item["type"] for item in second["input"]] == ["function_call_output"]
    assert "previous_response_id" not in first


class City(BaseModel):
    """The structured final output the agent is asked for."""

    name: str = Field(max_length=30)
    population_millions: int = Field(ge=0, le=100)


def test_the_default_model_returns_a_structured_final_output(server: RunningServer) -> None:
    sent: list[dict[str, Any]] = []

    async def record(request: httpx.Request) -> None:
        sent.append(json.loads(request.content or b"{}"))

    async def run() -> agents.RunResult:
        async with httpx.AsyncClient(timeout=120, event_hooks={"request": [record]}) as http:
            client = openai.AsyncOpenAI(
                base_url=server.api_url, api_key=server.api_key, max_retries=0, http_client=http
            )
            agents.set_default_openai_client(client, use_for_tracing=False)
            agent = agents.Agent(
                name="geographer",
                instructions="Describe the city the user names.",
                model=MODEL_NAME,
                output_type=City,
                model_settings=agents.ModelSettings(temperature=0, max_tokens=120),
            )
            return await agents.Runner.run(agent, "Paris", max_turns=1)

    agents.set_tracing_disabled(True)
    result = asyncio.run(run())
    assert isinstance(result.final_output, City)
    [body] = sent
    form = body["text"]["format"]
    assert form["type"] == "json_schema" and form["strict"] is True
