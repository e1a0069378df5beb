"""Hostile bodies on Anthropic's routes: each gets a 4xx in Anthropic's error shape, quickly,
and the server answers at once afterwards."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import MODEL_NAME, RunningServer

MESSAGES = "/v1/messages"
COUNT = "/v1/messages/count_tokens"
CASE_SECONDS = 30
HI = [{"role": "user", "content": "Hi"}]


def _body(**fields: Any) -> dict[str, Any]:
    return {"model": MODEL_NAME, "max_tokens": 4, "messages": HI, **fields}


def _user(*blocks: Any) -> list[dict[str, Any]]:
    return [{"role": "user", "content": list(blocks)}]


def _nested(depth: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object"}
    for _ in range(depth):
        schema = {"type": "object", "properties": {"a": schema}}
    return schema


def _tool(schema: Any, name: str = "f") -> dict[str, Any]:
    return {"name": name, "input_schema": schema}


CASES: list[tuple[str, str, Any]] = [
    ("body a list", MESSAGES, b"[]"),
    ("body null", MESSAGES, b"null"),
    ("body a string", MESSAGES, b'"hi"'),
    ("empty body", MESSAGES, b""),
    ("deep nesting", MESSAGES, b'{"model": ' + b"[" * 5000 + b"]" * 5000 + b"}"),
    ("NaN temperature", MESSAGES, b'{"model": "m", "max_tokens": 4, "temperature": NaN}'),
    ("huge max_tokens", MESSAGES, _body(max_tokens=10**30)),
    ("negative max_tokens", MESSAGES, _body(max_tokens=-1)),
    ("float max_tokens", MESSAGES, _body(max_tokens=4.5)),
    ("no max_tokens", MESSAGES, {"model": MODEL_NAME, "messages": HI}),
    ("no messages", MESSAGES, _body(messages=[])),
    ("messages not a list", MESSAGES, _body(messages="hi")),
    ("too many messages", MESSAGES, _body(messages=HI * 20_000)),
    ("role tool", MESSAGES, _body(messages=[{"role": "tool", "content": "x"}])),
    ("content a number", MESSAGES, _body(messages=[{"role": "user", "content": 5}])),
    ("block not an object", MESSAGES, _body(messages=_user(1, "x"))),
    ("block without type", MESSAGES, _body(messages=_user({"text": "x"}))),
    ("block type 10k chars", MESSAGES, _body(messages=_user({"type": "x" * 10_000}))),
    ("text not a string", MESSAGES, _body(messages=_user({"type": "text", "text": ["x"]}))),
    ("lone surrogate", MESSAGES, b'{"model": "m", "max_tokens": 4, "messages": "\\ud800"}'),
    (
        "tool_use in a user turn",
        MESSAGES,
        _body(messages=_user({"type": "tool_use", "id": "t", "name": "f", "input": {}})),
    ),
    (
        "tool_use input a list",
        MESSAGES,
        _body(
            messages=[
                *HI,
                {
                    "role": "assistant",
                    "content": [{"type": "tool_use", "id": "t", "name": "f", "input": [1]}],
                },
                *HI,
            ]
        ),
    ),
    (
        "tool_result content nested lists",
        MESSAGES,
        _body(messages=_user({"type": "tool_result", "tool_use_id": "t", "content": [[[]]]})),
    ),
    ("image in system", MESSAGES, _body(system=[{"type": "image", "source": {}}])),
    ("system a number", MESSAGES, _body(system=5)),
    ("tools not a list", MESSAGES, _body(tools={"name": "f"})),
    ("tool not an object", MESSAGES, _body(tools=["f"])),
    ("tool schema not an object", MESSAGES, _body(tools=[_tool("x")])),
    ("tool schema of type string", MESSAGES, _body(tools=[_tool({"type": "string"})])),
    ("tool schema nested 100 deep", MESSAGES, _body(tools=[_tool(_nested(100))])),
    ("tool schema invalid", MESSAGES, _body(tools=[_tool({"type": "object", "required": 5})])),
    ("tool name with spaces", MESSAGES, _body(tools=[_tool({"type": "object"}, "a b")])),
    ("tool name 1000 chars", MESSAGES, _body(tools=[_tool({"type": "object"}, "a" * 1000)])),
    ("tool names twice", MESSAGES, _body(tools=[_tool({"type": "object"})] * 2)),
    (
        "too many tools",
        MESSAGES,
        _body(tools=[_tool({"type": "object"}, f"f{i}") for i in range(200)]),
    ),
    ("tool_choice a string", MESSAGES, _body(tool_choice="auto")),
    ("tool_choice any without tools", MESSAGES, _body(tool_choice={"type": "any"})),
    (
        "tool_choice tool without name",
        MESSAGES,
        _body(tools=[_tool({"type": "object"})], tool_choice={"type": "tool"}),
    ),
    (
        "forced tool with a regex pattern",
        MESSAGES,
        _body(
            tools=[
                _tool(
                    {"type": "object", "properties": {"a": {"type": "string", "pattern": "(a+)+$"}}}
                )
            ],
            tool_choice={"type": "any"},
            stream=True,
        ),
    ),
    ("stop sequence 100k chars", MESSAGES, _body(stop_sequences=["x" * 100_000])),
    ("stop_sequences a string", MESSAGES, _body(stop_sequences="x")),
    ("top_k 2**40", MESSAGES, _body(top_k=2**40)),
    ("top_p 0", MESSAGES, _body(top_p=0)),
    ("metadata a string", MESSAGES, _body(metadata="x")),
    ("priority 10**6", MESSAGES, _body(priority=10**6)),
    ("model 10k chars", MESSAGES, _body(model="m" * 10_000)),
    ("thinking adaptive", MESSAGES, _body(thinking={"type": "adaptive"})),
    ("speed fast", MESSAGES, _body(speed="fast")),
    ("output_config format text", MESSAGES, _body(output_config={"format": {"type": "text"}})),
    (
        "output_config schema a list",
        MESSAGES,
        _body(output_config={"format": {"type": "json_schema", "schema": [1]}}),
    ),
    (
        "output_config schema nested 100 deep",
        MESSAGES,
        _body(output_config={"format": {"type": "json_schema", "schema": _nested(100)}}),
    ),
    ("count with max_tokens", COUNT, _body()),
    ("count without messages", COUNT, {"model": MODEL_NAME}),
    (
        "count with a server tool",
        COUNT,
        {"model": MODEL_NAME, "messages": HI, "tools": [{"type": "bash_20250124", "name": "bash"}]},
    ),
    ("count an unknown model", COUNT, {"model": "nope", "messages": HI}),
]


@pytest.fixture(scope="module")
def http(server: RunningServer) -> Iterator[httpx.Client]:
    """A client with the server's key; afterwards nothing holds a sequence."""
    headers = {**server.auth_headers, "Content-Type": "application/json"}
    with httpx.Client(base_url=server.base_url, headers=headers, timeout=CASE_SECONDS) as c:
        yield c
    assert server.wait_idle(), "a hostile request was left holding a sequence"


@pytest.mark.parametrize(("name", "path", "body"), CASES, ids=[c[0] for c in CASES])
def test_a_hostile_body_gets_a_4xx_in_anthropics_shape(
    http: httpx.Client, name: str, path: str, body: Any
) -> None:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    started = time.monotonic()
    response = http.post(path, content=content)
    assert time.monotonic() - started < CASE_SECONDS
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        # A case a later engine may serve (a regex the grammar learns to enforce): then it is
        # a whole Anthropic stream.
        assert response.status_code == 200
        assert response.text.rstrip().split("\n")[-2] == "event: message_stop", response.text
    else:
        assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])
        error = response.json()
        assert error["type"] == "error", error
        assert isinstance(error["error"]["type"], str) and error["error"]["message"], error
    probe = time.monotonic()
    assert http.get("/healthz").status_code == 200
    assert time.monotonic() - probe < 2
