"""Hostile requests a client with only the ``inference`` scope can send, one per case.

Each case is sent to a real ``inferflux serve`` process
(tests/integration/test_hostile_requests.py).
What every case must get: a status below 500 (or a 503 with a JSON error body where the
server is saturated), a JSON error body in OpenAI's shape for every error, an answer within
the case's time limit, and a server that still answers ``/healthz`` at once afterwards.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

MODEL = "smollm2-135m-instruct"
CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
EMBEDDINGS = "/v1/embeddings"
TOKENIZE = "/tokenize"
DETOKENIZE = "/detokenize"
KEYS = "/v1/admin/keys"


@dataclass(frozen=True)
class Case:
    """One request: ``body`` is raw bytes, or JSON-encoded when it is not bytes."""

    name: str
    path: str
    body: Any = None
    method: str = "POST"
    headers: dict[str, str] = field(default_factory=dict)
    #: Which key sends it: ``inference`` (the default), ``admin`` or ``none``.
    key: str = "inference"
    #: Statuses this case may get; ``None``: any status below 500.
    expect: frozenset[int] | None = None

    def content(self) -> bytes | None:
        """The request body as sent."""
        if self.body is None:
            return None
        if isinstance(self.body, bytes):
            return self.body
        return json.dumps(self.body).encode()


def _chat(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Hi"}],
        "max_tokens": 4,
    }
    body.update(fields)
    return body


def _completion(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": MODEL, "prompt": "Hi", "max_tokens": 4}
    body.update(fields)
    return body


def _schema(schema: Any) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}


def _nested(depth: int) -> bytes:
    return b'{"model": "' + MODEL.encode() + b'", "messages": ' + b"[" * depth + b"]" * depth + b"}"


def _nested_schema(depth: int) -> bytes:
    inner = b'{"type": "array", "items": ' * depth + b'{"type": "string"}' + b"}" * depth
    return (
        b'{"model": "' + MODEL.encode() + b'", "messages": [{"role": "user", "content": "Hi"}],'
        b' "max_tokens": 4, "response_format": {"type": "json_schema", "json_schema": '
        b'{"name": "x", "schema": ' + inner + b"}}}"
    )


def _big_minimum_body() -> bytes:
    body = _chat(response_format=_schema({"type": "integer", "minimum": 0}))
    return json.dumps(body).replace('"minimum": 0', '"minimum": 1' + "0" * 400).encode()


def _raw(text: str) -> bytes:
    return text.encode()


BAD = frozenset({400})
BAD_OR_TOO_LARGE = frozenset({400, 413})
FORBIDDEN = frozenset({403})
UNAUTHENTICATED = frozenset({401})
BIG_INT = "9" * 5000
SURROGATE = '"\\ud800"'
TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def _tool(parameters: Any, name: str = "f") -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "parameters": parameters}}


def _forced(parameters: Any) -> dict[str, Any]:
    return _chat(tools=[_tool(parameters)], tool_choice="required")


CASES: list[Case] = [
    # -- the body itself ----------------------------------------------------------------------
    Case("empty body", CHAT, b"", expect=BAD),
    Case("not json", CHAT, b"{nope", expect=BAD),
    Case("not utf-8", CHAT, b'{"model": "\xff\xfe"}', expect=BAD),
    Case("json array body", CHAT, [1, 2], expect=BAD),
    Case("json string body", CHAT, "hello", expect=BAD),
    Case("null body", CHAT, b"null", expect=BAD),
    Case("nested 100000 deep", CHAT, _nested(100_000), expect=BAD),
    Case("nested 990 deep", CHAT, _nested(990), expect=BAD),
    Case("nested 200 deep", CHAT, _nested(200), expect=BAD),
    Case("schema nested 990 deep", CHAT, _nested_schema(990), expect=BAD),
    Case("schema nested 400 deep", CHAT, _nested_schema(400), expect=BAD),
    Case("schema nested 60 deep", CHAT, _nested_schema(60)),
    Case("5000-digit integer", CHAT, _raw(f'{{"model": "{MODEL}", "max_tokens": {BIG_INT}}}')),
    Case(
        "5000-digit integer in admin body",
        KEYS,
        _raw(f'{{"name": "k", "expires_at": {BIG_INT}}}'),
        key="admin",
        expect=BAD,
    ),
    Case("NaN literal", CHAT, _raw(f'{{"model": "{MODEL}", "messages": [], "temperature": NaN}}')),
    Case("Infinity literal", CHAT, _raw(f'{{"model": "{MODEL}", "top_p": Infinity}}')),
    Case("1e400 overflows to inf", CHAT, _raw(f'{{"model": "{MODEL}", "temperature": 1e400}}')),
    Case(
        "lone surrogate in a message",
        CHAT,
        _raw(
            f'{{"model": "{MODEL}", "max_tokens": 4, '
            f'"messages": [{{"role": "user", "content": {SURROGATE}}}]}}'
        ),
        expect=BAD,
    ),
    Case(
        "lone surrogate in a prompt",
        COMPLETIONS,
        _raw(f'{{"model": "{MODEL}", "max_tokens": 4, "prompt": {SURROGATE}}}'),
        expect=BAD,
    ),
    Case(
        "lone surrogate to tokenize",
        TOKENIZE,
        _raw(f'{{"model": "{MODEL}", "prompt": {SURROGATE}}}'),
        expect=BAD,
    ),
    Case(
        "lone surrogate to embeddings",
        EMBEDDINGS,
        _raw(f'{{"model": "{MODEL}", "input": {SURROGATE}}}'),
        expect=BAD,
    ),
    Case(
        "lone surrogate in stop",
        CHAT,
        _raw(
            f'{{"model": "{MODEL}", "max_tokens": 4, "stop": [{SURROGATE}], '
            '"messages": [{"role": "user", "content": "Hi"}]}'
        ),
        expect=BAD,
    ),
    Case(
        "lone surrogate in the model name",
        CHAT,
        _raw(f'{{"model": {SURROGATE}, "messages": [{{"role": "user", "content": "Hi"}}]}}'),
    ),
    Case(
        "lone surrogate in a tool name",
        CHAT,
        _raw(
            f'{{"model": "{MODEL}", "messages": [{{"role": "user", "content": "Hi"}}], '
            f'"tools": [{{"type": "function", "function": {{"name": {SURROGATE}}}}}]}}'
        ),
        expect=BAD,
    ),
    Case("NUL bytes in content", CHAT, _chat(messages=[{"role": "user", "content": "a\x00b"}])),
    # -- priority -----------------------------------------------------------------------------
    Case("priority 2**1024", CHAT, _raw(f'{{"model": "{MODEL}", "priority": {2**1024}}}')),
    Case("priority 1e18", CHAT, _chat(priority=1e18)),
    Case("priority 10**18", CHAT, _chat(priority=10**18)),
    Case("priority -10**18", CHAT, _chat(priority=-(10**18))),
    Case("priority a string", CHAT, _chat(priority="high"), expect=BAD),
    Case("priority on completions", COMPLETIONS, _completion(priority=2**70)),
    # -- sampling values ----------------------------------------------------------------------
    Case("n zero", CHAT, _chat(n=0), expect=BAD),
    Case("n a billion", CHAT, _chat(n=10**9), expect=BAD),
    Case("n 2**64", CHAT, _chat(n=2**64), expect=BAD),
    Case("max_tokens 10**12", CHAT, _chat(max_tokens=10**12)),
    Case("max_tokens negative", CHAT, _chat(max_tokens=-1), expect=BAD),
    Case("max_tokens 2**64", CHAT, _chat(max_tokens=2**64)),
    Case("max_completion_tokens 2**70", CHAT, _chat(max_completion_tokens=2**70)),
    Case("temperature 1e308", CHAT, _chat(temperature=1e308)),
    Case("temperature negative", CHAT, _chat(temperature=-1), expect=BAD),
    Case("top_p 2", CHAT, _chat(top_p=2), expect=BAD),
    Case("top_k 10**12", CHAT, _chat(top_k=10**12)),
    Case("top_k -5", CHAT, _chat(top_k=-5)),
    Case("min_p 5", CHAT, _chat(min_p=5)),
    Case("frequency_penalty 1e300", CHAT, _chat(frequency_penalty=1e300), expect=BAD),
    Case("presence_penalty -1e300", CHAT, _chat(presence_penalty=-1e300), expect=BAD),
    Case("repetition_penalty 0", CHAT, _chat(repetition_penalty=0)),
    Case("seed 2**70", CHAT, _chat(seed=2**70)),
    Case("seed -2**70", CHAT, _chat(seed=-(2**70))),
    Case("seed a float", CHAT, _chat(seed=1.5)),
    Case("logit_bias huge token id", CHAT, _chat(logit_bias={str(2**40): 5})),
    Case("logit_bias negative token id", CHAT, _chat(logit_bias={"-1": 5})),
    Case("logit_bias non-numeric key", CHAT, _chat(logit_bias={"abc": 5}), expect=BAD),
    Case("logit_bias value 1e308", CHAT, _chat(logit_bias={"1": 1e308})),
    Case("logit_bias 20000 entries", CHAT, _chat(logit_bias={str(i): 1 for i in range(20000)})),
    Case("top_logprobs 10**6", CHAT, _chat(logprobs=True, top_logprobs=10**6), expect=BAD),
    Case("top_logprobs -1", CHAT, _chat(logprobs=True, top_logprobs=-1), expect=BAD),
    Case("completion logprobs 10**6", COMPLETIONS, _completion(logprobs=10**6), expect=BAD),
    Case("best_of 10**6", COMPLETIONS, _completion(best_of=10**6), expect=BAD),
    Case("best_of below n", COMPLETIONS, _completion(best_of=1, n=3), expect=BAD),
    Case("min_tokens over max_tokens", CHAT, _chat(min_tokens=10**9)),
    Case("stop 10000 strings", CHAT, _chat(stop=["x"] * 10000)),
    Case("stop one 100k string", CHAT, _chat(stop=["x" * 100_000])),
    Case("stop empty string", CHAT, _chat(stop=[""])),
    Case("stop a number", CHAT, _chat(stop=5), expect=BAD),
    Case("stream a string", CHAT, _chat(stream="yes"), expect=BAD),
    Case("stream_options not an object", CHAT, _chat(stream=True, stream_options=5), expect=BAD),
    # -- streamed ------------------------------------------------------------------------------
    Case("stream with a bad temperature", CHAT, _chat(stream=True, temperature=-1), expect=BAD),
    Case("stream with priority 2**1024", CHAT, _chat(stream=True, priority=2**1024), expect=BAD),
    Case(
        "stream a forced call maxLength 30000",
        CHAT,
        {
            **_forced(
                {"type": "object", "properties": {"a": {"type": "string", "maxLength": 30000}}}
            ),
            "stream": True,
        },
    ),
    Case(
        "stream maxLength 30000",
        CHAT,
        _chat(stream=True, response_format=_schema({"type": "string", "maxLength": 30000})),
    ),
    Case("stream n 32", CHAT, _chat(stream=True, n=32, max_tokens=2)),
    Case("stream logprobs 20", CHAT, _chat(stream=True, logprobs=True, top_logprobs=20)),
    Case(
        "stream completions best_of", COMPLETIONS, _completion(stream=True, best_of=3), expect=BAD
    ),
    Case(
        "stream a lone surrogate",
        COMPLETIONS,
        _raw(f'{{"model": "{MODEL}", "stream": true, "prompt": {SURROGATE}}}'),
        expect=BAD,
    ),
    Case(
        "stream a blocked phrase in the prompt",
        CHAT,
        _chat(stream=True, messages=[{"role": "user", "content": "a purple elephant"}]),
        expect=BAD,
    ),
    Case(
        "blocked phrase in the prompt",
        CHAT,
        _chat(messages=[{"role": "user", "content": "a purple elephant"}]),
        expect=BAD,
    ),
    Case(
        "blocked phrase in the suffix",
        COMPLETIONS,
        _completion(suffix="purple elephant"),
        expect=BAD,
    ),
    Case(
        "blocked phrase in a tool description",
        CHAT,
        _chat(
            tools=[
                {"type": "function", "function": {"name": "f", "description": "purple elephant"}}
            ]
        ),
        expect=BAD,
    ),
    Case("blocked phrase to embeddings", EMBEDDINGS, {"model": MODEL, "input": "purple elephant"}),
    # -- messages -----------------------------------------------------------------------------
    Case("no messages", CHAT, _chat(messages=[]), expect=BAD),
    Case("messages not a list", CHAT, _chat(messages="Hi"), expect=BAD),
    Case("50000 messages", CHAT, _chat(messages=[{"role": "user", "content": "a"}] * 50000)),
    Case("unknown role", CHAT, _chat(messages=[{"role": "wizard", "content": "Hi"}]), expect=BAD),
    Case("content a number", CHAT, _chat(messages=[{"role": "user", "content": 5}]), expect=BAD),
    Case(
        "20000 content parts",
        CHAT,
        _chat(messages=[{"role": "user", "content": [{"type": "text", "text": "a"}] * 20000}]),
    ),
    Case(
        "unknown content part",
        CHAT,
        _chat(messages=[{"role": "user", "content": [{"type": "hologram"}]}]),
        expect=BAD,
    ),
    Case(
        "image part",
        CHAT,
        _chat(
            messages=[
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}
            ]
        ),
    ),
    Case(
        "prompt longer than context",
        CHAT,
        _chat(messages=[{"role": "user", "content": "a " * 30000}]),
    ),
    Case("template in the request", CHAT, _chat(chat_template="{{ 7*7 }}"), expect=BAD),
    Case(
        "jinja in a message is only text",
        CHAT,
        _chat(messages=[{"role": "user", "content": "{{ cycler.__init__.__globals__ }}"}]),
        expect=frozenset({200}),
    ),
    Case(
        "name 100k long",
        CHAT,
        _chat(messages=[{"role": "user", "content": "a", "name": "n" * 100_000}]),
    ),
    # -- tools --------------------------------------------------------------------------------
    Case("tool name 100k long", CHAT, _chat(tools=[_tool({"type": "object"}, name="f" * 100_000)])),
    Case("tool name with spaces", CHAT, _chat(tools=[_tool({"type": "object"}, name="a b")])),
    Case(
        "3000 tools",
        CHAT,
        _chat(tools=[_tool({"type": "object"}, name=f"f{i}") for i in range(3000)]),
    ),
    Case(
        "named tool_choice unknown",
        CHAT,
        _chat(tools=[TOOL], tool_choice={"type": "function", "function": {"name": "nope"}}),
        expect=BAD,
    ),
    Case("tool_choice without tools", CHAT, _chat(tool_choice="required"), expect=BAD),
    Case("tool_choice garbage", CHAT, _chat(tools=[TOOL], tool_choice=7), expect=BAD),
    Case(
        "forced call maxLength 30000",
        CHAT,
        _forced({"type": "object", "properties": {"a": {"type": "string", "maxLength": 30000}}}),
    ),
    Case(
        "forced call maxItems 30000",
        CHAT,
        _forced({"type": "object", "properties": {"a": {"type": "array", "maxItems": 30000}}}),
    ),
    Case("forced call parameters not an object", CHAT, _forced(5), expect=BAD),
    Case(
        "tool call arguments not json",
        CHAT,
        _chat(
            tools=[TOOL],
            messages=[
                {"role": "user", "content": "Hi"},
                {
                    "role": "assistant",
                    "tool_calls": [
                        {
                            "id": "c",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": "{nope"},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "c", "content": "sunny"},
            ],
        ),
    ),
    # -- structured output --------------------------------------------------------------------
    Case(
        "maxLength 30000",
        CHAT,
        _chat(response_format=_schema({"type": "string", "maxLength": 30000})),
    ),
    Case(
        "maxItems 30000", CHAT, _chat(response_format=_schema({"type": "array", "maxItems": 30000}))
    ),
    Case(
        "minLength 10**12",
        CHAT,
        _chat(response_format=_schema({"type": "string", "minLength": 10**12})),
    ),
    Case(
        "maxLength 10**12",
        CHAT,
        _chat(response_format=_schema({"type": "string", "maxLength": 10**12})),
    ),
    Case(
        "minItems 10**12",
        CHAT,
        _chat(response_format=_schema({"type": "array", "minItems": 10**12})),
    ),
    Case(
        "minLength 2**70",
        CHAT,
        _chat(response_format=_schema({"type": "string", "minLength": 2**70})),
    ),
    Case(
        "maxLength negative",
        CHAT,
        _chat(response_format=_schema({"type": "string", "maxLength": -1})),
    ),
    Case(
        "maxLength a float",
        CHAT,
        _chat(response_format=_schema({"type": "string", "maxLength": 2.5})),
    ),
    Case(
        "minimum 1e308", CHAT, _chat(response_format=_schema({"type": "integer", "minimum": 1e308}))
    ),
    Case(
        "minimum 10**400",
        CHAT,
        _big_minimum_body(),
    ),
    Case(
        "minimum above maximum",
        CHAT,
        _chat(response_format=_schema({"type": "integer", "minimum": 10, "maximum": 1})),
    ),
    Case(
        "5000 properties",
        CHAT,
        _chat(
            response_format=_schema(
                {"type": "object", "properties": {f"p{i}": {"type": "string"} for i in range(5000)}}
            )
        ),
    ),
    Case(
        "200 properties each long",
        CHAT,
        _chat(
            response_format=_schema(
                {
                    "type": "object",
                    "properties": {
                        f"p{i}": {"type": "string", "maxLength": 1000} for i in range(200)
                    },
                    "required": [f"p{i}" for i in range(200)],
                }
            )
        ),
    ),
    Case(
        "enum 50000 values",
        CHAT,
        _chat(response_format=_schema({"enum": [f"v{i}" for i in range(50000)]})),
    ),
    Case("const 200k string", CHAT, _chat(response_format=_schema({"const": "x" * 200_000}))),
    Case(
        "pattern catastrophic",
        CHAT,
        _chat(response_format=_schema({"type": "string", "pattern": "(a+)+$"})),
    ),
    Case(
        "ref cycle",
        CHAT,
        _chat(
            response_format=_schema({"$ref": "#/$defs/a", "$defs": {"a": {"$ref": "#/$defs/a"}}})
        ),
    ),
    Case("ref to nowhere", CHAT, _chat(response_format=_schema({"$ref": "#/$defs/missing"}))),
    Case("ref remote", CHAT, _chat(response_format=_schema({"$ref": "http://127.0.0.1:1/x.json"}))),
    Case("schema true", CHAT, _chat(response_format=_schema(True))),
    Case("schema a number", CHAT, _chat(response_format=_schema(5)), expect=BAD),
    Case("schema missing", CHAT, _chat(response_format={"type": "json_schema"}), expect=BAD),
    Case("response_format unknown type", CHAT, _chat(response_format={"type": "yaml"}), expect=BAD),
    Case(
        "anyOf 3000 branches",
        CHAT,
        _chat(response_format=_schema({"anyOf": [{"const": i} for i in range(3000)]})),
    ),
    Case(
        "multipleOf 1e-300",
        CHAT,
        _chat(response_format=_schema({"type": "number", "multipleOf": 1e-300})),
    ),
    Case(
        "nested arrays of maxItems 50",
        CHAT,
        _chat(
            response_format=_schema(
                {
                    "type": "array",
                    "maxItems": 50,
                    "items": {
                        "type": "array",
                        "maxItems": 50,
                        "items": {
                            "type": "array",
                            "maxItems": 50,
                            "items": {"type": "string", "maxLength": 50},
                        },
                    },
                }
            )
        ),
    ),
    # -- completions --------------------------------------------------------------------------
    Case("prompt token id 2**40", COMPLETIONS, _completion(prompt=[2**40]), expect=BAD),
    Case("prompt token id negative", COMPLETIONS, _completion(prompt=[-1]), expect=BAD),
    Case("prompt token id 2**70", COMPLETIONS, _completion(prompt=[2**70]), expect=BAD),
    Case("prompt 100000 token ids", COMPLETIONS, _completion(prompt=[1] * 100_000)),
    Case("prompt 5000 strings", COMPLETIONS, _completion(prompt=["a"] * 5000)),
    Case("prompt empty list", COMPLETIONS, _completion(prompt=[]), expect=BAD),
    Case("prompt empty string", COMPLETIONS, _completion(prompt="")),
    Case(
        "prompt nested token lists", COMPLETIONS, _completion(prompt=[[1, 2], [3, [4]]]), expect=BAD
    ),
    Case("suffix 100k", COMPLETIONS, _completion(suffix="x" * 100_000)),
    Case("echo with logprobs", COMPLETIONS, _completion(echo=True, logprobs=5)),
    Case("prompt a dict", COMPLETIONS, _completion(prompt={"a": 1}), expect=BAD),
    # -- embeddings ---------------------------------------------------------------------------
    Case("embeddings 50000 inputs", EMBEDDINGS, {"model": MODEL, "input": ["a"] * 50000}),
    Case("embeddings token id 2**40", EMBEDDINGS, {"model": MODEL, "input": [2**40]}, expect=BAD),
    Case("embeddings empty input", EMBEDDINGS, {"model": MODEL, "input": []}, expect=BAD),
    Case("embeddings empty string", EMBEDDINGS, {"model": MODEL, "input": ""}),
    Case(
        "embeddings dimensions 10**9",
        EMBEDDINGS,
        {"model": MODEL, "input": "a", "dimensions": 10**9},
        expect=BAD,
    ),
    Case(
        "embeddings dimensions 0",
        EMBEDDINGS,
        {"model": MODEL, "input": "a", "dimensions": 0},
        expect=BAD,
    ),
    Case(
        "embeddings bad encoding",
        EMBEDDINGS,
        {"model": MODEL, "input": "a", "encoding_format": "hex"},
        expect=BAD,
    ),
    Case("embeddings input a dict", EMBEDDINGS, {"model": MODEL, "input": {"a": 1}}, expect=BAD),
    # -- tokenize / detokenize ----------------------------------------------------------------
    Case("tokenize 3 MB prompt", TOKENIZE, {"model": MODEL, "prompt": "word " * 600_000}),
    Case("tokenize no prompt", TOKENIZE, {"model": MODEL}, expect=BAD),
    Case(
        "tokenize messages",
        TOKENIZE,
        {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}]},
    ),
    Case("detokenize 2**40", DETOKENIZE, {"model": MODEL, "tokens": [2**40]}, expect=BAD),
    Case("detokenize negative", DETOKENIZE, {"model": MODEL, "tokens": [-5]}, expect=BAD),
    Case("detokenize strings", DETOKENIZE, {"model": MODEL, "tokens": ["a"]}, expect=BAD),
    Case("detokenize 200000 tokens", DETOKENIZE, {"model": MODEL, "tokens": [1] * 200_000}),
    # -- routes, methods, auth ----------------------------------------------------------------
    Case("unknown model", CHAT, _chat(model="nope"), expect=frozenset({404})),
    Case("model name 100k", CHAT, _chat(model="m" * 100_000)),
    Case("model a number", CHAT, _chat(model=5), expect=BAD),
    Case("GET on chat", CHAT, method="GET", expect=frozenset({405})),
    Case("DELETE on chat", CHAT, method="DELETE", expect=frozenset({405})),
    Case("unknown route", "/v1/nope", {}, expect=frozenset({404})),
    Case("dot segments", "/v1/../v1/admin/keys", method="GET"),
    Case("encoded slash", "/v1%2Fadmin%2Fkeys", method="GET"),
    Case("NUL in the path", "/v1/models/%00", method="GET"),
    Case("very long path", "/v1/models/" + "a" * 6000, method="GET"),
    Case("admin with an inference key", KEYS, {"name": "k"}, expect=FORBIDDEN),
    Case("list keys with an inference key", KEYS, method="GET", expect=FORBIDDEN),
    Case("no key", CHAT, _chat(), key="none", expect=UNAUTHENTICATED),
    Case(
        "malformed bearer",
        CHAT,
        _chat(),
        key="none",
        headers={"Authorization": "Bearer"},
        expect=UNAUTHENTICATED,
    ),
    Case(
        "basic auth",
        CHAT,
        _chat(),
        key="none",
        headers={"Authorization": "Basic YTpi"},
        expect=UNAUTHENTICATED,
    ),
    Case(
        "a 6 kB bearer",
        CHAT,
        _chat(),
        key="none",
        headers={"Authorization": "Bearer " + "a" * 6000},
        expect=UNAUTHENTICATED,
    ),
    Case(
        "jwt-shaped garbage",
        CHAT,
        _chat(),
        key="none",
        headers={"Authorization": "Bearer eyJhbGciOi.eyJ.sig"},
        expect=UNAUTHENTICATED,
    ),
    Case(
        "wrong key with a right prefix",
        CHAT,
        _chat(),
        key="none",
        headers={"Authorization": "Bearer ifx-0000000000000000.nope"},
        expect=UNAUTHENTICATED,
    ),
    Case("weird request id", CHAT, _chat(), headers={"X-Request-ID": "a\tb" * 100}),
    Case("content-type text", CHAT, _chat(), headers={"Content-Type": "text/plain"}),
    # -- admin values (an admin key) ----------------------------------------------------------
    Case(
        "admin expires_at NaN",
        KEYS,
        _raw('{"name": "k", "expires_at": NaN}'),
        key="admin",
        expect=BAD,
    ),
    Case(
        "admin expires_at Infinity",
        KEYS,
        _raw('{"name": "k", "expires_at": Infinity}'),
        key="admin",
        expect=BAD,
    ),
    Case(
        "admin expires_at 1e300", KEYS, {"name": "k", "expires_at": 1e300}, key="admin", expect=BAD
    ),
    Case("admin expires_at in the past", KEYS, {"name": "k", "expires_at": 1}, key="admin"),
    Case("admin unknown role", KEYS, {"name": "k", "roles": ["emperor"]}, key="admin", expect=BAD),
    Case("admin name 100k", KEYS, {"name": "k" * 100_000}, key="admin"),
    Case(
        "admin limits negative",
        KEYS,
        {"name": "k", "limits": {"tokens_per_minute": -5}},
        key="admin",
        expect=BAD,
    ),
    Case(
        "admin limits 2**70",
        KEYS,
        {"name": "k", "limits": {"tokens_per_minute": 2**70}},
        key="admin",
    ),
    Case(
        "admin get a missing key",
        KEYS + "/nope",
        method="GET",
        key="admin",
        expect=frozenset({404}),
    ),
]

# -- the Responses API (issue 14, responses helper) ------------------------------------------
RESPONSES = "/v1/responses"


def _response(**fields: Any) -> dict[str, Any]:
    return {"model": MODEL, "input": "Hi", "max_output_tokens": 4, **fields}


CASES += [
    Case(
        "responses 100k input items",
        RESPONSES,
        _response(input=[{"role": "user", "content": "x"}] * 100_000),
        expect=BAD_OR_TOO_LARGE,
    ),
    Case("responses input an object", RESPONSES, _response(input={"a": 1}), expect=BAD),
    Case(
        "responses item type 100k",
        RESPONSES,
        _response(input=[{"type": "x" * 100_000}]),
        expect=BAD_OR_TOO_LARGE,
    ),
    Case(
        "responses max_output_tokens 2**70",
        RESPONSES,
        _response(max_output_tokens=2**70),
        expect=BAD,
    ),
    Case(
        "responses temperature NaN",
        RESPONSES,
        _raw(f'{{"model": "{MODEL}", "input": "Hi", "temperature": NaN}}'),
        expect=BAD,
    ),
    Case(
        "responses previous id 100k",
        RESPONSES,
        _response(previous_response_id="r" * 100_000),
        expect=BAD_OR_TOO_LARGE,
    ),
    Case(
        "responses unknown previous id",
        RESPONSES,
        _response(previous_response_id="resp_x"),
        expect=frozenset({404}),
    ),
    Case(
        "responses metadata 10k pairs",
        RESPONSES,
        _response(metadata={str(i): "v" for i in range(10_000)}),
        expect=BAD_OR_TOO_LARGE,
    ),
    Case(
        "responses include 10k",
        RESPONSES,
        _response(include=["x"] * 10_000),
        expect=BAD_OR_TOO_LARGE,
    ),
    Case(
        "responses builtin tool", RESPONSES, _response(tools=[{"type": "web_search"}]), expect=BAD
    ),
    Case(
        "responses tool_choice a number",
        RESPONSES,
        _response(tools=[{"type": "function", "name": "f"}], tool_choice=5),
        expect=BAD,
    ),
    Case("responses stream yes", RESPONSES, _response(stream="yes"), expect=BAD),
    Case(
        "responses get a long id",
        RESPONSES + "/" + "r" * 4000,
        method="GET",
        expect=frozenset({404}),
    ),
    Case(
        "responses input_items limit 10**100",
        RESPONSES + "/resp_x/input_items?limit=" + "9" * 100,
        method="GET",
        expect=frozenset({404}),
    ),
    Case("responses no credential", RESPONSES, _response(), key="none", expect=UNAUTHENTICATED),
]
