"""Every client value is bounded by the request models and the body parser: a value out of
range is a 400 naming the field."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from inferflux_core.api.body import MAX_JSON_DEPTH, encode_json, parse_json
from inferflux_core.engine.workers import WorkerPool
from inferflux_core.errors import InvalidRequestError, ServerBusyError
from inferflux_core.protocol.chat import ChatCompletionRequest
from inferflux_core.protocol.common import parse_body
from inferflux_core.protocol.completions import CompletionRequest
from inferflux_core.protocol.embeddings import EmbeddingRequest
from inferflux_core.protocol.tokens import DetokenizeRequest, TokenizeRequest

USER = [{"role": "user", "content": "hi"}]


def chat(**fields: Any) -> dict[str, Any]:
    return {"model": "m", "messages": USER, **fields}


def refused(model: type[Any], body: dict[str, Any]) -> InvalidRequestError:
    with pytest.raises(InvalidRequestError) as caught:
        parse_body(model, body)
    assert caught.value.status == 400
    assert caught.value.error_type == "invalid_request_error"
    assert caught.value.message.startswith(f"{caught.value.param}: ")
    return caught.value


CHAT_OUT_OF_RANGE = [
    ({"priority": 2**1024}, "priority"),
    ({"priority": 1001}, "priority"),
    ({"priority": -1001}, "priority"),
    ({"priority": True}, "priority"),
    ({"priority": 1e18}, "priority"),
    ({"n": 0}, "n"),
    ({"n": 129}, "n"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"max_tokens": 2**40}, "max_tokens"),
    ({"max_completion_tokens": 2**40}, "max_completion_tokens"),
    ({"min_tokens": 2**40}, "min_tokens"),
    ({"seed": 2**64}, "seed"),
    ({"seed": -(2**63) - 1}, "seed"),
    ({"temperature": 2.5}, "temperature"),
    ({"temperature": float("nan")}, "temperature"),
    ({"top_p": 0}, "top_p"),
    ({"top_p": float("inf")}, "top_p"),
    ({"top_k": 2**31}, "top_k"),
    ({"min_p": 1.5}, "min_p"),
    ({"presence_penalty": 3}, "presence_penalty"),
    ({"frequency_penalty": -3}, "frequency_penalty"),
    ({"repeat_penalty": 0}, "repeat_penalty"),
    ({"repeat_penalty": 1e300}, "repeat_penalty"),
    ({"logit_bias": {"5": 101}}, "logit_bias.5"),
    ({"logit_bias": {"5": -101}}, "logit_bias.5"),
    ({"logit_bias": {"x": 1}}, "logit_bias"),
    ({"logit_bias": {"99999999999": 1}}, "logit_bias"),
    ({"logit_bias": {" 5": 1}}, "logit_bias"),
    ({"logit_bias": {str(i): 1 for i in range(1025)}}, "logit_bias"),
    ({"top_logprobs": 21, "logprobs": True}, "top_logprobs"),
    ({"top_logprobs": -1, "logprobs": True}, "top_logprobs"),
    ({"stop": ["s"] * 17}, "stop"),
    ({"stop": "s" * 1025}, "stop"),
    ({"stop": ["ok", "s" * 1025]}, "stop.1"),
    ({"user": "u" * 257}, "user"),
    ({"model": "m" * 257}, "model"),
    ({"messages": USER * 2049}, "messages"),
    ({"messages": [{"role": "user", "content": "x", "name": "n" * 257}]}, "messages.0.name"),
    (
        {"messages": [{"role": "user", "content": [{"type": "text", "text": "x"}] * 257}]},
        "messages.0.content",
    ),
    (
        {"messages": [*USER, {"role": "tool", "content": "x", "tool_call_id": "i" * 257}]},
        "messages.1.tool_call_id",
    ),
    (
        {"tools": [{"type": "function", "function": {"name": "f", "description": "d" * 16385}}]},
        "tools.0.function.description",
    ),
    ({"tools": [{"type": "function", "function": {"name": "f" * 65}}]}, "tools.0.function.name"),
    (
        {"tools": [{"type": "function", "function": {"name": f"f{i}"}} for i in range(129)]},
        "tools",
    ),
]


@pytest.mark.parametrize(("fields", "param"), CHAT_OUT_OF_RANGE)
def test_a_chat_value_out_of_range_is_a_400_naming_it(fields: dict[str, Any], param: str) -> None:
    assert refused(ChatCompletionRequest, chat(**fields)).param == param


def test_a_long_message_is_a_400_naming_the_message() -> None:
    messages = [*USER, {"role": "user", "content": "x" * (10 * 1024 * 1024 + 1)}]
    error = refused(ChatCompletionRequest, chat(messages=messages))
    assert error.param == "messages.1.content"
    assert "10485760" in error.message


def test_max_tokens_over_the_ceiling_says_the_context_length_is_the_real_bound() -> None:
    error = refused(ChatCompletionRequest, chat(max_tokens=2**30))
    assert "context length" in error.message


def test_tool_parameters_nested_deeper_than_32_levels_are_refused() -> None:
    deep: dict[str, Any] = {"type": "object"}
    node = deep
    for _ in range(40):
        node["not"] = {}
        node = node["not"]
    tools = [{"type": "function", "function": {"name": "f", "parameters": deep}}]
    error = refused(ChatCompletionRequest, chat(tools=tools))
    assert error.param == "tools.0.function.parameters"
    assert "32" in error.message


@pytest.mark.parametrize(
    "fields",
    [
        {"priority": 1000},
        {"priority": -1000},
        {"seed": 2**64 - 1},
        {"seed": -(2**63)},
        {"max_tokens": 2**20},
        {"logit_bias": {"0": 100, "2147483647": -100}},
        {"stop": ["a"] * 16},
        {"top_logprobs": 20, "logprobs": True},
    ],
)
def test_values_at_the_bounds_are_accepted(fields: dict[str, Any]) -> None:
    parse_body(ChatCompletionRequest, chat(**fields))


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"prompt": ["p"] * 65}, "prompt"),
        ({"prompt": [[1]] * 65}, "prompt"),
        ({"prompt": [1] * (2**20 + 1)}, "prompt"),
        ({"prompt": "x", "best_of": 21}, "best_of"),
        ({"prompt": "x", "logprobs": 6}, "logprobs"),
        ({"prompt": "x", "suffix": "s" * (10 * 1024 * 1024 + 1)}, "suffix"),
    ],
)
def test_a_completion_value_out_of_range_is_a_400_naming_it(
    body: dict[str, Any], param: str
) -> None:
    assert refused(CompletionRequest, {"model": "m", **body}).param == param


def test_more_sequences_than_128_in_one_completion_request_is_a_400() -> None:
    request = parse_body(CompletionRequest, {"model": "m", "prompt": ["a"] * 64, "n": 3})
    with pytest.raises(InvalidRequestError) as caught:
        request.check_sequences(64)
    assert caught.value.param == "n"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": ["x"] * 2049}, "input"),
        ({"input": [[1]] * 2049}, "input"),
        ({"input": "x", "dimensions": 2**17}, "dimensions"),
        ({"input": "x", "dimensions": 0}, "dimensions"),
    ],
)
def test_an_embedding_value_out_of_range_is_a_400_naming_it(
    body: dict[str, Any], param: str
) -> None:
    assert refused(EmbeddingRequest, {"model": "m", **body}).param == param


def test_token_lists_and_tokenize_inputs_are_bounded() -> None:
    assert refused(DetokenizeRequest, {"model": "m", "tokens": [0] * (2**20 + 1)}).param == (
        "tokens"
    )
    assert refused(TokenizeRequest, {"model": "m", "messages": USER * 2049}).param == "messages"


# -- the body parser ------------------------------------------------------------------------


def parse_refused(text: str | bytes) -> InvalidRequestError:
    with pytest.raises(InvalidRequestError) as caught:
        parse_json(text.encode() if isinstance(text, str) else text)
    assert caught.value.status == 400
    return caught.value


def test_an_integer_over_4300_digits_is_a_400_naming_where() -> None:
    error = parse_refused('{"model": "m", "seed": ' + "9" * 5000 + "}")
    assert error.param == "seed"
    assert "64-bit" in error.message


@pytest.mark.parametrize("number", [str(2**64), str(-(2**63) - 1), "1" + "0" * 25])
def test_an_integer_outside_64_bits_is_a_400(number: str) -> None:
    assert parse_refused('{"a": [1, {"b": ' + number + "}]}").param == "a.1.b"


@pytest.mark.parametrize("number", [str(2**64 - 1), str(-(2**63)), "0", "-1"])
def test_64_bit_integers_parse(number: str) -> None:
    assert parse_json(('{"a": ' + number + "}").encode()) == {"a": int(number)}


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999", "-1e400"])
def test_non_finite_numbers_are_a_400(literal: str) -> None:
    error = parse_refused('{"temperature": ' + literal + "}")
    assert error.param == "temperature"


@pytest.mark.parametrize(
    ("text", "param"),
    [
        ('{"prompt": "a\\ud800b"}', "prompt"),
        ('{"messages": [{"role": "user", "content": "\\udfff"}]}', "messages.0.content"),
        ('{"input": ["ok", "\\ud83d"]}', "input.1"),
        ('{"logit_bias": {"\\ud800": 1}}', "logit_bias.\ud800"),
    ],
)
def test_a_lone_surrogate_is_a_400_naming_where(text: str, param: str) -> None:
    error = parse_refused(text)
    assert error.param == param
    assert "surrogate" in error.message


@pytest.mark.parametrize(
    "data",
    [
        '{"p": "\\ud800"}'.encode("utf-16"),
        '{"p": "\\ud800"}'.encode("utf-32"),
        b'{"p": "\xed\xa0\x80"}',
    ],
    ids=["utf-16", "utf-32", "utf-8-encoded-surrogate"],
)
def test_a_body_that_is_not_utf8_is_a_400(data: bytes) -> None:
    assert "not valid JSON" in parse_refused(data).message


def test_a_surrogate_pair_and_an_escaped_backslash_are_fine() -> None:
    assert parse_json(b'{"p": "\\ud83d\\ude00 \\\\ud800"}') == {"p": "\U0001f600 \\ud800"}


def test_nesting_is_capped_at_64_levels() -> None:
    at_limit = "[" * (MAX_JSON_DEPTH - 1) + "]" * (MAX_JSON_DEPTH - 1)
    assert parse_json(('{"a": ' + at_limit + "}").encode())
    over = "[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH
    error = parse_refused('{"response_format": ' + over + "}")
    assert error.param == "response_format"
    assert "nested too deeply" in error.message
    assert "nested too deeply" in parse_refused("[" * 100_000 + "]" * 100_000).message


def test_encoding_a_long_list_a_slice_at_a_time_gives_the_same_json() -> None:
    import json

    value = {"tokens": list(range(10_000)), "data": [{"e": [0.5] * 5000, "s": "é"}], "n": None}
    assert json.loads(encode_json(value)) == value


# -- the worker pool ------------------------------------------------------------------------


def test_the_pool_refuses_a_job_past_its_bound_with_a_503_and_frees_it_after() -> None:
    pool = WorkerPool(max_workers=1, max_pending=2)
    release = threading.Event()

    async def scenario() -> None:
        first = asyncio.ensure_future(pool.run(release.wait, 10))
        second = asyncio.ensure_future(pool.run(release.wait, 10))
        await asyncio.sleep(0.05)
        with pytest.raises(ServerBusyError) as caught:
            await pool.run(sum, [1])
        assert caught.value.status == 503
        assert caught.value.code == "server_busy"
        assert caught.value.headers["Retry-After"] == "1"
        release.set()
        assert await first and await second
        assert await pool.run(sum, [1, 2]) == 3
        assert pool.pending == 0

    asyncio.run(scenario())


def test_a_job_error_is_raised_to_the_caller() -> None:
    pool = WorkerPool(max_workers=1, max_pending=1)

    async def scenario() -> None:
        with pytest.raises(ZeroDivisionError):
            await pool.run(divmod, 1, 0)
        assert pool.pending == 0

    asyncio.run(scenario())
