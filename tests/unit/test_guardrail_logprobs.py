"""Token logprobs behind the output guardrails, on synthetic chunks: an entry is sent only
once its text is, and nothing of a blocked phrase gets through them."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from inferflux_core.contracts import (
    ALLOW,
    Guardrail,
    GuardrailInput,
    GuardrailVerdict,
    OutputFilter,
)
from inferflux_core.errors import GuardrailError
from inferflux_core.guardrails import GuardrailChain, filter_stream
from inferflux_plugins.guardrails.blocklist import BlocklistGuardrail

REQUEST = GuardrailInput(text="hello", model="m", endpoint="chat.completions", request_id="r1")


def _blocklist(*terms: str) -> GuardrailChain:
    return GuardrailChain([("blocklist", BlocklistGuardrail(terms=list(terms)))])


def _entry(token: str, *alternatives: str) -> dict[str, Any]:
    def item(text: str) -> dict[str, Any]:
        return {"token": text, "logprob": -1.0, "bytes": list(text.encode())}

    return {**item(token), "top_logprobs": [item(t) for t in (token, *alternatives)]}


def _chat(content: str, *entries: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    logprobs = {"content": list(entries), "refusal": None} if entries else None
    choice = {"index": 0, "delta": {"content": content}, "logprobs": logprobs}
    return {"choices": [choice | {"finish_reason": finish}]}


def _completion(text: str, *tokens: str, finish: str | None = None) -> dict[str, Any]:
    logprobs = {
        "tokens": list(tokens),
        "token_logprobs": [-1.0] * len(tokens),
        "top_logprobs": [{t: -1.0} for t in tokens],
        "text_offset": list(range(len(tokens))),
    }
    return {"choices": [{"index": 0, "text": text, "logprobs": logprobs, "finish_reason": finish}]}


def _run(chain: GuardrailChain, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    async def chunks() -> AsyncIterator[dict[str, Any]]:
        for item in items:
            yield item

    async def collect() -> list[dict[str, Any]]:
        return [c async for c in filter_stream(chunks(), chain, REQUEST)]

    return asyncio.run(collect())


def _tokens(out: list[dict[str, Any]]) -> list[str]:
    choices = [c["choices"][0] for c in out]
    return [e["token"] for c in choices for e in (c["logprobs"] or {}).get("content") or ()]


def test_entries_wait_for_their_text_and_all_come_out_at_the_end() -> None:
    items = [
        _chat("a cat ", _entry("a"), _entry(" cat"), _entry(" ")),
        _chat("nam", _entry("nam")),
        _chat("ed Tom", _entry("ed"), _entry(" Tom")),
        _chat("", finish="stop"),
    ]
    out = _run(_blocklist("named Luna"), items)
    per_chunk = [
        [e["token"] for e in (c["choices"][0]["logprobs"] or {}).get("content") or ()] for c in out
    ]
    assert per_chunk == [["a", " cat", " "], [], ["nam", "ed", " Tom"], []]
    assert "".join(c["choices"][0]["delta"]["content"] for c in out) == "a cat named Tom"


def test_entries_ahead_of_the_text_are_dropped_when_it_is_blocked() -> None:
    # A parser may hold text back (tool-call markup) while its tokens' logprobs go out.
    items = [
        _chat("a cat ", _entry("a cat ")),
        _chat("", _entry("named")),
        _chat("", _entry(" Luna")),
        _chat("named Luna", finish="stop"),
    ]
    out = _run(_blocklist("named Luna"), items)
    assert out[-1]["choices"][0]["finish_reason"] == "content_filter"
    assert out[-1]["choices"][0]["logprobs"] is None
    assert _tokens(out) == ["a cat "]
    assert "named" not in json.dumps(out)


def test_an_alternative_that_alone_holds_a_blocked_phrase_is_left_out() -> None:
    items = [_chat("Hi", _entry("Hi", " Paris", " there"), finish="stop")]
    out = _run(_blocklist("paris"), items)
    (entry,) = out[0]["choices"][0]["logprobs"]["content"]
    assert [alt["token"] for alt in entry["top_logprobs"]] == ["Hi", " there"]


def test_an_alternative_that_completes_a_phrase_after_the_text_before_it_is_left_out() -> None:
    items = [_chat("a named Tom", _entry("a"), _entry(" named"), _entry(" Tom", " Luna", " Sam"))]
    items.append(_chat("", finish="stop"))
    out = _run(_blocklist("named Luna"), items)
    assert _tokens(out) == ["a", " named", " Tom"]
    last = out[0]["choices"][0]["logprobs"]["content"][-1]
    assert [alt["token"] for alt in last["top_logprobs"]] == [" Tom", " Sam"]
    assert "luna" not in json.dumps(out).casefold()


def test_completion_columns_pass_whole_and_are_cut_with_a_blocked_phrase() -> None:
    items = [_completion("a b", "a", " b"), _completion(" c", " c", finish="length")]
    out = _run(_blocklist("zzz"), items)
    assert [c["choices"][0]["logprobs"] for c in out] == [
        i["choices"][0]["logprobs"] for i in items
    ]
    blocked = _run(_blocklist("b c"), items)
    assert blocked[-1]["choices"][0]["finish_reason"] == "content_filter"
    assert [t for c in blocked for t in (c["choices"][0]["logprobs"] or {}).get("tokens", ())] == [
        "a"
    ]


class _Rewrite(OutputFilter):
    def push(self, text: str) -> tuple[str, bool]:
        return text.replace("secret", "******"), False

    def flush(self) -> str:
        return ""


class _Redactor(Guardrail):
    async def check_input(self, request: GuardrailInput) -> GuardrailVerdict:
        return ALLOW

    def output_filter(self, request: GuardrailInput) -> OutputFilter | None:
        return _Rewrite()


def test_entries_after_a_rewrite_are_left_out() -> None:
    chain = GuardrailChain([("redact", _Redactor())])
    items = [
        _chat("my ", _entry("my ")),
        _chat("secret", _entry("secret")),
        _chat(" is", _entry(" is"), finish="stop"),
    ]
    out = _run(chain, items)
    assert "".join(c["choices"][0]["delta"]["content"] for c in out) == "my ****** is"
    assert _tokens(out) == ["my "]
    assert "secret" not in json.dumps(out)


def test_a_whole_response_with_a_blocked_phrase_only_in_logprobs_is_refused() -> None:
    choice = {"index": 0, "message": {"content": "a cat"}, "finish_reason": "stop"}
    choice["logprobs"] = {"content": [_entry("a cat"), _entry(" named Luna")], "refusal": None}
    with pytest.raises(GuardrailError):
        _blocklist("named Luna").filter_result({"choices": [choice]}, REQUEST)
    fine = {**choice, "logprobs": {"content": [_entry("a"), _entry(" cat")], "refusal": None}}
    result = {"choices": [fine]}
    _blocklist("named Luna").filter_result(result, REQUEST)
    assert [e["token"] for e in result["choices"][0]["logprobs"]["content"]] == ["a", " cat"]
