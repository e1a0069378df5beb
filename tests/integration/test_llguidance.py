"""Structured output on llguidance: nested schemas with ``pattern``, ``oneOf``, ``allOf``,
``format``, bounds and local ``$ref`` hold over several seeds; what it refuses is a 400."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import jsonschema
import pytest

from tests.conftest import MODEL_NAME, RunningServer

CHAT = "/v1/chat/completions"
SEEDS = (1, 2, 3)
SCHEMA_PARAM = "response_format.json_schema.schema"
FORMATS = jsonschema.Draft202012Validator.FORMAT_CHECKER

PROFILE: dict[str, Any] = {
    "type": "object",
    "$defs": {
        "code": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{2}$"},
    },
    "properties": {
        "id": {"type": "string", "format": "uuid"},
        "code": {"$ref": "#/$defs/code"},
        "email": {"type": "string", "format": "email", "maxLength": 40},
        "born": {"type": "string", "format": "date"},
        "host": {"type": "string", "format": "ipv4"},
        "age": {"type": "integer", "minimum": 1, "maximum": 120},
        "score": {"type": "number", "minimum": 0, "maximum": 1},
        "tier": {"enum": ["free", "pro", "team"]},
        "kind": {"const": "person"},
        "tags": {
            "type": "array",
            "minItems": 1,
            "maxItems": 3,
            "items": {"type": "string", "minLength": 2, "maxLength": 8},
        },
        "contact": {
            "oneOf": [
                {
                    "type": "object",
                    "properties": {"phone": {"type": "string", "pattern": "^[0-9]{3,10}$"}},
                    "required": ["phone"],
                },
                {"type": "null"},
            ]
        },
        "address": {
            "allOf": [
                {"type": "object", "properties": {"city": {"type": "string", "maxLength": 16}}},
                {"required": ["city"]},
            ]
        },
    },
    "required": [
        *("id", "code", "email", "born", "host", "age", "tier", "kind", "tags"),
        *("contact", "address"),
    ],
}
MESSAGES = [{"role": "user", "content": "Describe a user account as JSON."}]


def _schema_format(schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "profile", "schema": schema}}


@pytest.fixture
def http(server: RunningServer):  # type: ignore[no-untyped-def]
    with httpx.Client(base_url=server.base_url, headers=server.auth_headers, timeout=120) as client:
        yield client
    assert server.wait_idle(), "a request was left holding a sequence"


def _ask(
    http: httpx.Client, response_format: dict[str, Any], seed: int, max_tokens: int = 400
) -> dict[str, Any]:
    body = {
        "model": MODEL_NAME,
        "messages": MESSAGES,
        "response_format": response_format,
        "temperature": 0.9,
        "seed": seed,
        "max_tokens": max_tokens,
    }
    response = http.post(CHAT, json=body)
    assert response.status_code == 200, response.text
    return dict(response.json()["choices"][0])


@pytest.mark.parametrize("seed", SEEDS)
def test_a_nested_schema_with_pattern_oneof_allof_and_formats_holds(
    http: httpx.Client, seed: int
) -> None:
    choice = _ask(http, _schema_format(PROFILE), seed)
    assert choice["finish_reason"] == "stop", choice
    answer = json.loads(choice["message"]["content"])
    jsonschema.validate(answer, PROFILE, format_checker=FORMATS)
    assert list(answer) == [k for k in PROFILE["properties"] if k in answer], "schema order"
    assert set(answer["address"]) == {"city"}, "additionalProperties defaults to false"


@pytest.mark.parametrize("seed", SEEDS)
def test_json_object_mode_on_llguidance_is_one_object(http: httpx.Client, seed: int) -> None:
    choice = _ask(http, {"type": "json_object"}, seed, max_tokens=120)
    if choice["finish_reason"] == "stop":
        assert isinstance(json.loads(choice["message"]["content"]), dict)
    else:  # a long object cut by max_tokens is still an object's prefix
        assert choice["message"]["content"].startswith("{")


SMALL = {
    "type": "object",
    "properties": {"code": {"type": "string", "pattern": "^[a-z]{2,6}$"}, "n": {"type": "integer"}},
    "required": ["code", "n"],
}


def test_the_same_seed_gives_the_same_json(http: httpx.Client) -> None:
    first = _ask(http, _schema_format(SMALL), 5, max_tokens=60)
    again = _ask(http, _schema_format(SMALL), 5, max_tokens=60)
    assert first["message"]["content"] == again["message"]["content"]
    jsonschema.validate(json.loads(first["message"]["content"]), SMALL)


@pytest.mark.parametrize(
    ("schema", "named"),
    [
        ({"type": "object", "properties": {"a": {"not": {"type": "string"}}}}, "not"),
        ({"type": "array", "items": {"type": "integer"}, "uniqueItems": True}, "uniqueItems"),
        ({"type": "string", "format": "no-such-format"}, "no-such-format"),
        ({"$ref": "https://example.com/schema.json"}, "https://example.com/schema.json"),
        ({"$ref": "#/$defs/a", "$defs": {"a": {"$ref": "#/$defs/a"}}}, "llguidance"),
    ],
)
def test_a_schema_llguidance_refuses_is_a_400_naming_the_keyword(
    http: httpx.Client, schema: dict[str, Any], named: str
) -> None:
    body = {"model": MODEL_NAME, "messages": MESSAGES, "response_format": _schema_format(schema)}
    response = http.post(CHAT, json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == SCHEMA_PARAM
    assert named in error["message"]
    assert error["message"].startswith(f"{SCHEMA_PARAM}: llguidance cannot enforce")


def _nested_objects(depth: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(depth):
        schema = {"type": "object", "properties": {"a": schema}, "required": ["a"]}
    return schema


@pytest.mark.parametrize(
    ("schema", "named"),
    [
        (_nested_objects(60), "levels"),
        ({"type": "string", "maxLength": 10**9}, "maxLength"),
        ({"type": "string", "pattern": "a" * 5000}, "pattern"),
        ({"type": "array", "items": {"type": "string"}, "maxItems": 10**12}, "maxItems"),
    ],
)
def test_a_hostile_schema_is_refused_by_the_caps(
    http: httpx.Client, schema: dict[str, Any], named: str
) -> None:
    body = {"model": MODEL_NAME, "messages": MESSAGES, "response_format": _schema_format(schema)}
    started = time.monotonic()
    response = http.post(CHAT, json=body)
    assert time.monotonic() - started < 10
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"].startswith("response_format")
    assert named in error["message"]


@pytest.mark.parametrize(
    "pattern",
    ["(a+)+$", "a{1000}b{1000}c{1000}", "(x|y|z){500}[0-9]{900}"],
)
def test_a_heavy_pattern_is_bounded_and_serving_goes_on(http: httpx.Client, pattern: str) -> None:
    schema = {
        "type": "object",
        "properties": {"s": {"type": "string", "pattern": pattern}},
        "required": ["s"],
    }
    body = {
        "model": MODEL_NAME,
        "messages": MESSAGES,
        "response_format": _schema_format(schema),
        "max_tokens": 8,
    }
    started = time.monotonic()
    response = http.post(CHAT, json=body)
    assert time.monotonic() - started < 30
    assert response.status_code in (200, 400), response.text
    if response.status_code == 400:
        assert response.json()["error"]["param"] == SCHEMA_PARAM
    assert _ask(http, {"type": "json_object"}, 1, max_tokens=8)["message"]["content"][:1] == "{"
