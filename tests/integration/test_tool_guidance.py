"""Forced tool calls on llguidance (the default model's ``structured_output: auto``): whole
and streamed, the calls come back as ``tool_calls`` whose arguments hold the function's
parameters, ``pattern`` and ``oneOf`` included; with ``structured_output: gbnf`` the GBNF
grammar still forces them, and refuses ``oneOf`` and ``pattern`` as before."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema
import openai
import pytest

from inferflux_core.config import ModelConfig, ServerConfig, Settings
from tests.conftest import (
    MODEL_NAME,
    TEST_BODY_LIMIT,
    TEST_CONTEXT,
    RunningServer,
    free_port,
    start_server,
)

FORMATS = jsonschema.Draft202012Validator.FORMAT_CHECKER
BOOKING: dict[str, Any] = {
    "type": "object",
    "$defs": {"code": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{2}$"}},
    "properties": {
        "flight": {"$ref": "#/$defs/code"},
        "day": {"type": "string", "format": "date"},
        "seat": {
            "oneOf": [
                {"type": "object", "properties": {"row": {"type": "integer", "minimum": 1}}},
                {"type": "null"},
            ]
        },
    },
    "required": ["flight", "day", "seat"],
}
PLAIN: dict[str, Any] = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 30}},
    "required": ["city"],
}
SCHEMAS = {"book_flight": BOOKING, "get_weather": PLAIN}
TOOLS: list[dict[str, Any]] = [
    {"type": "function", "function": {"name": name, "parameters": schema}}
    for name, schema in SCHEMAS.items()
]
QUESTION = [{"role": "user", "content": "Book flight ABC-12 for tomorrow."}]


def _client(server: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=server.api_url, api_key=server.api_key, max_retries=0, timeout=120
    )


def _assert_valid(name: str, arguments: str) -> None:
    jsonschema.validate(json.loads(arguments), SCHEMAS[name], format_checker=FORMATS)


@pytest.fixture
def client(server: RunningServer) -> Iterator[openai.OpenAI]:
    yield _client(server)
    assert server.wait_idle(), "a request was left holding a sequence"


@pytest.fixture(scope="module")
def gbnf_server() -> Iterator[RunningServer]:
    """The default model with ``structured_output: gbnf``, for this module."""
    settings = Settings(
        server=ServerConfig(port=free_port(), max_body_bytes=TEST_BODY_LIMIT, log_level="warning"),
        models=[
            ModelConfig(
                name=MODEL_NAME,
                context_length=TEST_CONTEXT,
                max_sequences=4,
                options={"structured_output": "gbnf"},
            )
        ],
    )
    running = start_server(settings)
    yield running
    running.stop()


@pytest.mark.parametrize("seed", range(3))
def test_forced_call_on_llguidance_holds_pattern_and_one_of(
    client: openai.OpenAI, seed: int
) -> None:
    response = client.chat.completions.create(
        model=MODEL_NAME,
        messages=QUESTION,  # type: ignore[arg-type]
        tools=TOOLS,  # type: ignore[arg-type]
        tool_choice={"type": "function", "function": {"name": "book_flight"}},
        temperature=1.0,
        seed=seed,
        max_tokens=200,
    )
    choice = response.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls
    assert calls is not None and len(calls) == 1
    assert calls[0].function.name == "book_flight"  # type: ignore[union-attr]
    _assert_valid("book_flight", calls[0].function.arguments)  # type: ignore[union-attr]
    assert not choice.message.content


@pytest.mark.parametrize("seed", range(2))
def test_required_calls_on_llguidance_are_each_valid(client: openai.OpenAI, seed: int) -> None:
    response = client.chat.completions.create(
        model=MODEL_NAME,
        messages=QUESTION,  # type: ignore[arg-type]
        tools=TOOLS,  # type: ignore[arg-type]
        tool_choice="required",
        temperature=1.0,
        seed=seed,
        max_tokens=400,
    )
    calls = response.choices[0].message.tool_calls
    assert calls
    for call in calls:
        _assert_valid(call.function.name, call.function.arguments)  # type: ignore[union-attr]


def test_streamed_forced_call_on_llguidance_is_valid(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model=MODEL_NAME,
            messages=QUESTION,  # type: ignore[arg-type]
            tools=TOOLS,  # type: ignore[arg-type]
            tool_choice={"type": "function", "function": {"name": "book_flight"}},
            temperature=0.7,
            seed=5,
            max_tokens=200,
            stream=True,
        )
    )
    deltas = [chunk.choices[0].delta for chunk in chunks if chunk.choices]
    assert all(not delta.content for delta in deltas), "no markup may leak into content"
    calls = [delta.tool_calls[0] for delta in deltas if delta.tool_calls]
    assert calls[0].function is not None and calls[0].function.name == "book_flight"
    arguments = "".join((call.function.arguments or "") if call.function else "" for call in calls)
    _assert_valid("book_flight", arguments)
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_forced_call_on_gbnf_still_works(gbnf_server: RunningServer) -> None:
    client = _client(gbnf_server)
    response = client.chat.completions.create(
        model=MODEL_NAME,
        messages=QUESTION,  # type: ignore[arg-type]
        tools=[TOOLS[1]],  # type: ignore[list-item]
        tool_choice="required",
        seed=1,
        max_tokens=200,
    )
    calls = response.choices[0].message.tool_calls
    assert calls
    for call in calls:
        _assert_valid(call.function.name, call.function.arguments)  # type: ignore[union-attr]
    assert gbnf_server.wait_idle()


def test_forced_one_of_and_pattern_on_gbnf_are_refused_naming_the_keyword(
    gbnf_server: RunningServer,
) -> None:
    body = {"model": MODEL_NAME, "messages": QUESTION, "tools": TOOLS, "tool_choice": "required"}
    response = httpx.post(
        f"{gbnf_server.api_url}/chat/completions",
        json=body,
        headers=gbnf_server.auth_headers,
        timeout=30,
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "tools.0.function.parameters"
    assert error["code"] == "unsupported"
    assert "'oneOf'" in error["message"] or "'pattern'" in error["message"]
