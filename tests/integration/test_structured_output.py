"""Structured output: ``response_format`` enforced by a grammar while sampling."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import jsonschema
import openai
import pytest

from tests.conftest import MODEL_NAME, RunningServer

CHAT = "/v1/chat/completions"
ORDER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "customer": {"type": "string", "maxLength": 24},
        "priority": {"enum": ["low", "normal", "high"]},
        "items": {
            "type": "array",
            "minItems": 1,
            "maxItems": 3,
            "items": {
                "type": "object",
                "properties": {
                    "sku": {"type": "string", "maxLength": 12},
                    "quantity": {"type": "integer", "minimum": 1, "maximum": 20},
                    "discount": {"type": "number", "minimum": 0, "maximum": 1},
                    "gift": {"type": "boolean"},
                },
                "required": ["sku", "quantity", "discount"],
                "additionalProperties": False,
            },
        },
        "note": {"anyOf": [{"type": "string", "maxLength": 20}, {"type": "null"}]},
    },
    "required": ["customer", "priority", "items"],
    "additionalProperties": False,
}
ORDER_MESSAGES = [{"role": "user", "content": "Write an order for two lamps as JSON."}]


def _schema_format(schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "order", "schema": schema}}


@pytest.fixture
def http(server: RunningServer):  # type: ignore[no-untyped-def]
    with httpx.Client(base_url=server.base_url, headers=server.auth_headers, timeout=60) as client:
        yield client
    assert server.wait_idle(), "a request was left holding a sequence"


@pytest.mark.parametrize("seed", range(8))
def test_json_schema_output_validates_against_the_schema(
    openai_client: openai.OpenAI, seed: int
) -> None:
    reply = openai_client.chat.completions.create(
        model=MODEL_NAME,
        messages=ORDER_MESSAGES,  # type: ignore[arg-type]
        response_format=_schema_format(ORDER_SCHEMA),  # type: ignore[arg-type]
        temperature=1.0,
        seed=seed,
        max_tokens=400,
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "stop", choice.message.content
    jsonschema.validate(json.loads(choice.message.content or ""), ORDER_SCHEMA)


def test_json_object_mode_yields_a_json_object(openai_client: openai.OpenAI) -> None:
    reply = openai_client.chat.completions.create(
        model=MODEL_NAME,
        messages=[{"role": "user", "content": "Describe a cat in JSON."}],
        response_format={"type": "json_object"},
        temperature=0.7,
        seed=3,
        max_tokens=120,
    )
    choice = reply.choices[0]
    if choice.finish_reason == "stop":
        assert isinstance(json.loads(choice.message.content or ""), dict)
    else:  # cut off mid-object: still a prefix of JSON
        assert choice.finish_reason == "length"
        assert (choice.message.content or "").startswith("{")


def test_streamed_structured_output_is_valid_json(openai_client: openai.OpenAI) -> None:
    stream = openai_client.chat.completions.create(
        model=MODEL_NAME,
        messages=ORDER_MESSAGES,  # type: ignore[arg-type]
        response_format=_schema_format(ORDER_SCHEMA),  # type: ignore[arg-type]
        temperature=0,
        max_tokens=400,
        stream=True,
    )
    text = ""
    finish = None
    for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            finish = chunk.choices[0].finish_reason or finish
    assert finish == "stop"
    jsonschema.validate(json.loads(text), ORDER_SCHEMA)


def test_max_tokens_inside_the_json_is_finish_reason_length(openai_client: openai.OpenAI) -> None:
    reply = openai_client.chat.completions.create(
        model=MODEL_NAME,
        messages=ORDER_MESSAGES,  # type: ignore[arg-type]
        response_format=_schema_format(ORDER_SCHEMA),  # type: ignore[arg-type]
        temperature=0,
        max_tokens=5,
    )
    assert reply.choices[0].finish_reason == "length"
    assert (reply.choices[0].message.content or "").startswith("{")


@pytest.mark.parametrize(
    ("schema", "named"),
    [
        ({"type": "object", "patternProperties": {"^a": {}}}, "patternProperties"),
        ({"type": "string", "pattern": "^[a-z]+$"}, "pattern"),
        ({"$ref": "https://example.com/schema.json"}, "$ref"),
        ({"type": "object", "properties": {"a": {"oneOf": [{}]}}}, "oneOf"),
        ({"type": "integer", "minimum": "zero"}, "minimum"),
        ({"type": "object", "properties": {}, "required": ["missing"]}, "missing"),
        ({"type": "number", "exclusiveMaximum": 1}, "exclusiveMaximum"),
        ({"type": "string", "format": "email"}, "email"),
        ({"type": "integer", "minimum": 5, "maximum": 1}, "bounds"),
        ({"type": "strin"}, "strin"),
    ],
)
def test_unsupported_or_invalid_schema_is_400_naming_it(
    http: httpx.Client, schema: dict[str, Any], named: str
) -> None:
    body = {
        "model": MODEL_NAME,
        "messages": ORDER_MESSAGES,
        "response_format": _schema_format(schema),
    }
    response = http.post(CHAT, json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert named in error["message"]
    assert error["param"].startswith("response_format")


@pytest.mark.parametrize(
    "response_format",
    [
        {"type": "xml"},
        {"type": "json_schema"},
        {"type": "json_schema", "json_schema": {"schema": {"type": "object"}}},
        {"type": "json_schema", "json_schema": {"name": "x"}},
    ],
)
def test_malformed_response_format_is_400(
    http: httpx.Client, response_format: dict[str, Any]
) -> None:
    body = {"model": MODEL_NAME, "messages": ORDER_MESSAGES, "response_format": response_format}
    response = http.post(CHAT, json=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"].startswith("response_format")


def test_catastrophic_regex_is_refused_fast_and_serving_goes_on(
    http: httpx.Client, openai_client: openai.OpenAI
) -> None:
    schema = {"type": "object", "properties": {"s": {"type": "string", "pattern": "(a+)+$"}}}
    body = {
        "model": MODEL_NAME,
        "messages": ORDER_MESSAGES,
        "response_format": _schema_format(schema),
    }
    started = time.monotonic()
    response = http.post(CHAT, json=body)
    assert time.monotonic() - started < 1.0
    assert response.status_code == 400
    assert "pattern" in response.json()["error"]["message"]
    reply = openai_client.chat.completions.create(
        model=MODEL_NAME,
        messages=ORDER_MESSAGES,
        max_tokens=3,  # type: ignore[arg-type]
    )
    assert reply.choices[0].message.content


def test_ignore_eos_with_a_schema_is_400(http: httpx.Client) -> None:
    body = {
        "model": MODEL_NAME,
        "messages": ORDER_MESSAGES,
        "response_format": {"type": "json_object"},
        "ignore_eos": True,
    }
    response = http.post(CHAT, json=body)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "ignore_eos"
