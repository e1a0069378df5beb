"""Structured output: ``response_format`` enforced by a GBNF grammar while sampling.

These tests run on a server whose model has ``structured_output: gbnf`` (llama.cpp's grammar
sampler, and the converter's subset of JSON Schema); ``test_llguidance.py`` covers the default,
llguidance.
"""

from __future__ import annotations

import gc
import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema
import openai
import pytest

from inferflux_core.config import ModelConfig, ServerConfig, Settings
from inferflux_core.errors import InvalidRequestError
from inferflux_plugins.backends.llama_cpp import runtime
from tests.conftest import (
    MODEL_NAME,
    TEST_BODY_LIMIT,
    TEST_CONTEXT,
    RunningServer,
    free_port,
    start_server,
)

CHAT = "/v1/chat/completions"
NATIVE_LOGGER = "inferflux_plugins.backends.llama_cpp.native"
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


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    """The default model with ``structured_output: gbnf``, for this module."""
    settings = Settings(
        server=ServerConfig(port=free_port(), max_body_bytes=TEST_BODY_LIMIT, log_level="warning"),
        models=[
            ModelConfig(
                name=MODEL_NAME,
                context_length=TEST_CONTEXT,
                max_sequences=8,
                options={"structured_output": "gbnf"},
            )
        ],
    )
    running = start_server(settings)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def openai_client(server: RunningServer) -> openai.OpenAI:
    """The OpenAI SDK pointed at this module's server."""
    return openai.OpenAI(
        base_url=server.api_url, api_key=server.api_key, max_retries=0, timeout=120
    )


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


# -- hostile schemas: a 400 naming the field and the cap, and serving goes on ---------------

SCHEMA_PARAM = "response_format.json_schema.schema"


def _tool(name: str, parameters: dict[str, Any]) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "parameters": parameters}}


def _object(**properties: Any) -> dict[str, Any]:
    return {"type": "object", "properties": properties}


def _assert_refused(response: httpx.Response, param: str, *named: str) -> dict[str, Any]:
    assert response.status_code == 400, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    for text in named:
        assert text in error["message"], error["message"]
    return error


def _assert_serving(http: httpx.Client) -> None:
    reply = http.post(CHAT, json={"model": MODEL_NAME, "messages": ORDER_MESSAGES, "max_tokens": 2})
    assert reply.status_code == 200, reply.text
    assert http.get("/healthz").status_code == 200


def _nested_arrays(levels: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "integer"}
    for _ in range(levels):
        schema = {"type": "array", "items": schema}
    return schema


@pytest.mark.parametrize(
    ("schema", "named"),
    [
        ({"type": "string", "maxLength": 30000}, ["maxLength", "cap of 1000"]),
        ({"type": "array", "items": {}, "maxItems": 30000}, ["maxItems", "cap of 1000"]),
        ({"type": "string", "maxLength": 2000}, ["maxLength", "cap of 1000"]),
        ({"type": "string", "maxLength": 8000}, ["maxLength", "cap of 1000"]),
        ({"type": "string", "minLength": 10**12}, ["minLength", "cap of 1000"]),
        ({"type": "string", "maxLength": 10**12}, ["maxLength", "cap of 1000"]),
        ({"type": "array", "items": {}, "minItems": 10**12}, ["minItems", "cap of 1000"]),
        (
            _object(**{f"p{i}": {"type": "string", "maxLength": 999} for i in range(200)}),
            ["1048576 bytes (the cap)"],
        ),
        (_object(**{f"p{i}": {"type": "integer"} for i in range(5000)}), ["cap of 256"]),
        ({"enum": list(range(5000))}, ["enum", "cap of 1024"]),
        ({"type": "integer", "minimum": 1e308}, ["minimum", "±999999999999999"]),
        ({"type": "number", "maximum": -1e308}, ["maximum", "±999999999999999"]),
        ({"type": "integer", "minimum": 5, "maximum": 1}, ["bounds 5 and 1"]),
        ({"type": "integer", "multipleOf": 3}, ["multipleOf"]),
        ({"type": "object", "minProperties": 10**12}, ["minProperties"]),
        ({"type": "string", "pattern": "(a+)+$"}, ["pattern"]),
    ],
)
def test_a_schema_past_a_cap_is_a_400_naming_the_field_and_serving_goes_on(
    http: httpx.Client, schema: dict[str, Any], named: list[str]
) -> None:
    body = {
        "model": MODEL_NAME,
        "messages": ORDER_MESSAGES,
        "response_format": _schema_format(schema),
    }
    started = time.monotonic()
    _assert_refused(http.post(CHAT, json=body), SCHEMA_PARAM, *named)
    assert time.monotonic() - started < 5
    _assert_serving(http)


@pytest.mark.parametrize(
    ("schema", "param", "named"),
    [
        (_nested_arrays(200), "response_format", ["at most 64 levels"]),
        ({"type": "integer", "minimum": 10**400}, f"{SCHEMA_PARAM}.minimum", ["64-bit"]),
    ],
)
def test_a_schema_the_body_parser_refuses_never_reaches_the_converter(
    http: httpx.Client, schema: dict[str, Any], param: str, named: list[str]
) -> None:
    """Past the body's own bounds (nesting, 64-bit integers) the schema caps are not reached."""
    body = {
        "model": MODEL_NAME,
        "messages": ORDER_MESSAGES,
        "response_format": _schema_format(schema),
    }
    _assert_refused(http.post(CHAT, json=body), param, *named)
    _assert_serving(http)


@pytest.mark.parametrize("schema", [True, [], "object"])
def test_a_schema_that_is_not_an_object_is_a_400(http: httpx.Client, schema: Any) -> None:
    body = {
        "model": MODEL_NAME,
        "messages": ORDER_MESSAGES,
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}},
    }
    _assert_refused(http.post(CHAT, json=body), SCHEMA_PARAM, "must be an object")
    _assert_serving(http)


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "string", "maxLength": 1000},
        {"type": "array", "items": {"type": "integer"}, "maxItems": 1000},
        {"type": "integer", "minimum": -999999999999999, "maximum": 999999999999999},
        {"const": "y" * 100_000},
    ],
)
def test_a_schema_at_the_caps_still_constrains_the_output(
    http: httpx.Client, schema: dict[str, Any]
) -> None:
    body = {
        "model": MODEL_NAME,
        "messages": ORDER_MESSAGES,
        "response_format": _schema_format(schema),
        "max_tokens": 4,
    }
    response = http.post(CHAT, json=body)
    assert response.status_code == 200, response.text
    _assert_serving(http)


def test_a_grammar_llama_cpp_refuses_names_response_format(http: httpx.Client) -> None:
    schema = {"$defs": {"a": {"anyOf": [{"$ref": "#/$defs/a"}, {"type": "integer"}]}}}
    body = {
        "model": MODEL_NAME,
        "messages": ORDER_MESSAGES,
        "response_format": _schema_format({**schema, "$ref": "#/$defs/a"}),
    }
    _assert_refused(http.post(CHAT, json=body), "response_format", "llama.cpp could not parse")
    _assert_serving(http)


@pytest.mark.parametrize(
    ("tools", "choice", "param", "named"),
    [
        (
            [_tool("f", _object(s={"type": "string", "maxLength": 30000}))],
            "required",
            "tools.0.function.parameters",
            ["maxLength", "cap of 1000"],
        ),
        (
            [
                _tool("f", _object()),
                _tool("g", _object(s={"type": "array", "items": {}, "maxItems": 30000})),
            ],
            {"type": "function", "function": {"name": "g"}},
            "tools.1.function.parameters",
            ["maxItems", "cap of 1000"],
        ),
        (
            [_tool("f", _object()), _tool("g", _object(s={"type": "string", "minLength": 10**12}))],
            "required",
            "tools.1.function.parameters",
            ["minLength", "cap of 1000"],
        ),
        (
            [
                _tool(
                    f"f{i}",
                    _object(**{f"p{j}": {"type": "string", "maxLength": 999} for j in range(20)}),
                )
                for i in range(16)
            ],
            "required",
            "tool_choice",
            ["1048576 bytes (the cap)"],
        ),
        (
            [
                _tool(
                    "f",
                    {
                        **_object(a={"$ref": "#/$defs/x"}),
                        "$defs": {"x": {"anyOf": [{"$ref": "#/$defs/x"}, {"type": "integer"}]}},
                    },
                )
            ],
            "required",
            "tools.0.function.parameters",
            ["llama.cpp could not parse"],
        ),
        (
            [
                _tool("f", _object()),
                _tool(
                    "g",
                    {
                        "type": "object",
                        "properties": {"a": {"$ref": "#/$defs/x"}},
                        "$defs": {"x": {"anyOf": [{"$ref": "#/$defs/x"}, {"type": "integer"}]}},
                    },
                ),
            ],
            "required",
            "tool_choice",
            ["llama.cpp could not parse"],
        ),
    ],
)
def test_a_forced_call_past_a_cap_names_the_field_the_client_sent(
    http: httpx.Client, tools: list[dict[str, Any]], choice: Any, param: str, named: list[str]
) -> None:
    body = {"model": MODEL_NAME, "messages": ORDER_MESSAGES, "tools": tools, "tool_choice": choice}
    error = _assert_refused(http.post(CHAT, json=body), param, *named)
    assert error["param"] != "response_format"
    _assert_serving(http)


def test_a_rejected_grammar_is_logged_bounded_never_dumped_on_stderr(
    server: RunningServer, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    backend = server.engine.model(MODEL_NAME).backend
    grammar = "root ::= undefined-rule\n" + "".join(f"junk{i} ::= [a-z]\n" for i in range(40_000))
    capfd.readouterr()
    refused = pytest.raises(InvalidRequestError, match="Undefined rule")
    with caplog.at_level(logging.WARNING, logger=NATIVE_LOGGER), refused as caught:
        backend.check_grammar(grammar)
    assert caught.value.status == 400
    assert len(caught.value.message) < 400
    err = capfd.readouterr().err
    assert "junk39999" not in err
    assert len(err) < 2000
    records = [r for r in caplog.records if r.name == NATIVE_LOGGER]
    assert any("Undefined rule" in r.getMessage() for r in records)
    assert sum(len(r.getMessage()) for r in records) < 4000
    assert server.wait_idle()


def test_the_log_callback_survives_garbage_collection(
    server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    assert runtime._log_callback is not None
    gc.collect()
    backend = server.engine.model(MODEL_NAME).backend
    # Left recursion is reported through the log callback, not stderr.
    refused = pytest.raises(InvalidRequestError)
    with caplog.at_level(logging.WARNING, logger=NATIVE_LOGGER), refused:
        backend.check_grammar("root ::= root [a]")
    assert any("left recursion" in r.getMessage() for r in caplog.records)
