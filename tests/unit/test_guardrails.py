"""Guardrails: the blocklist across chunk boundaries, streamed chunks, OPA, failing closed."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inferflux_core.contracts import Guardrail, GuardrailInput, GuardrailVerdict
from inferflux_core.errors import ConfigError, GuardrailError, GuardrailUnavailableError
from inferflux_core.guardrails import GuardrailChain, filter_stream
from inferflux_core.plugins import PluginHost
from inferflux_plugins.guardrails.blocklist import BlocklistGuardrail
from inferflux_plugins.guardrails.opa import OpaGuardrail
from tests.fakes import FakeOpa

REQUEST = GuardrailInput(text="hello", model="m", endpoint="chat.completions", request_id="r1")


def _blocklist(*terms: str, **options: Any) -> GuardrailChain:
    return GuardrailChain([("blocklist", BlocklistGuardrail(terms=list(terms), **options))])


def _splits(text: str, cuts: list[int]) -> list[str]:
    points = sorted({min(c, len(text)) for c in cuts})
    edges = [0, *points, len(text)]
    return [text[a:b] for a, b in itertools.pairwise(edges)]


@settings(max_examples=100, deadline=None)
@given(
    text=st.text(alphabet="abcXYZ ßσΣİ", max_size=40),
    phrase=st.text(alphabet="abcxyz ", min_size=1, max_size=5),
    cuts=st.lists(st.integers(0, 40), max_size=8),
)
def test_a_phrase_is_found_however_the_output_is_split(
    text: str, phrase: str, cuts: list[int]
) -> None:
    if not phrase.strip():
        return
    chain = _blocklist(phrase).filters(REQUEST)
    assert chain is not None
    sent, blocked = [], False
    for piece in _splits(text, cuts):
        safe, blocked = chain.push(piece)
        sent.append(safe)
        if blocked:
            break
    if not blocked:
        rest, blocked = chain.finish()
        sent.append(rest)
    expected = phrase.strip().casefold() in text.casefold()
    assert blocked == expected
    if not blocked:
        assert "".join(sent) == text
    assert phrase.strip().casefold() not in "".join(sent).casefold()


def test_prompts_are_checked_ignoring_case_and_the_term_is_not_revealed() -> None:
    chain = _blocklist("Purple Elephant")
    asyncio.run(chain.check_input(REQUEST))
    with pytest.raises(GuardrailError) as caught:
        asyncio.run(chain.check_input(GuardrailInput("a PURPLE elephant", "m", "e", "r")))
    assert caught.value.status == 400 and caught.value.code == "content_blocked"
    assert "elephant" not in caught.value.message.lower()


def test_case_sensitive_and_terms_file(tmp_path: Any) -> None:
    terms = tmp_path / "terms.txt"
    terms.write_text("# comment\nSecret\n\n")
    chain = _blocklist(terms_file=str(terms), case_sensitive=True)
    asyncio.run(chain.check_input(GuardrailInput("a secret", "m", "e", "r")))
    with pytest.raises(GuardrailError):
        asyncio.run(chain.check_input(GuardrailInput("a Secret", "m", "e", "r")))
    with pytest.raises(ValueError, match="no terms"):
        BlocklistGuardrail(terms=[" "])


async def _chunks(items: list[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
    for item in items:
        yield item


def _run(chain: GuardrailChain, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    async def collect() -> list[dict[str, Any]]:
        return [c async for c in filter_stream(_chunks(items), chain, REQUEST)]

    return asyncio.run(collect())


def _chat(content: str | None, finish: str | None = None) -> dict[str, Any]:
    delta = {} if content is None else {"content": content}
    return {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


def test_a_chat_stream_with_a_split_phrase_ends_with_content_filter() -> None:
    items = [_chat(""), _chat("One day, a cat"), _chat(" named"), _chat(" Luna"), _chat(" sat")]
    out = _run(_blocklist("named Luna"), items)
    texts = [c["choices"][0]["delta"].get("content") for c in out]
    assert "".join(t or "" for t in texts) == "One day, a cat "
    assert out[-1]["choices"][0]["finish_reason"] == "content_filter"
    assert len(out) == 4


def test_held_text_is_released_with_the_finish_chunk() -> None:
    items = [_chat("a cat named"), _chat(None, "stop")]
    out = _run(_blocklist("named Luna"), items)
    assert out[0]["choices"][0]["delta"]["content"] == "a cat "
    assert out[1]["choices"][0] == {
        "index": 0,
        "delta": {"content": "named"},
        "finish_reason": "stop",
    }


def _call(index: int, arguments: str, name: str | None = None) -> dict[str, Any]:
    call: dict[str, Any] = {"index": index, "function": {"arguments": arguments}}
    if name is not None:
        call.update(id=f"call_{index}", type="function")
        call["function"]["name"] = name
    return {"choices": [{"index": 0, "delta": {"tool_calls": [call]}, "finish_reason": None}]}


def test_tool_call_arguments_with_a_split_phrase_end_with_content_filter() -> None:
    items = [_chat(""), _call(0, "", "say"), _call(0, '{"text": "a cat'), _call(0, ' named'),
             _call(0, ' Luna"}'), _chat(None, "tool_calls")]  # fmt: skip
    out = _run(_blocklist("named Luna"), items)
    last = out[-1]["choices"][0]
    assert last["finish_reason"] == "content_filter"
    assert "tool_calls" not in last["delta"]
    sent = "".join(
        c["function"].get("arguments", "")
        for chunk in out
        for c in chunk["choices"][0]["delta"].get("tool_calls", ())
    )
    assert "Luna" not in sent and sent.startswith('{"text": "a cat')


def test_held_arguments_are_released_with_the_finish_chunk() -> None:
    items = [_call(0, "", "say"), _call(0, '{"text": "named'), _call(1, "{}", "other"),
             _chat(None, "tool_calls")]  # fmt: skip
    out = _run(_blocklist("named Luna"), items)
    assert out[1]["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"] == '{"text": "'
    last = out[-1]["choices"][0]
    assert last["finish_reason"] == "tool_calls"
    assert last["delta"]["tool_calls"] == [{"index": 0, "function": {"arguments": "named"}}]


def test_completion_choices_are_filtered_separately() -> None:
    def part(index: int, text: str, finish: str | None = None) -> dict[str, Any]:
        return {"choices": [{"index": index, "text": text, "finish_reason": finish}]}

    items = [part(0, "bad"), part(1, "fine wor"), part(0, "ly", "stop"), part(1, "ds", "stop")]
    out = _run(_blocklist("badly"), items)
    assert out[-1]["choices"][0]["finish_reason"] == "content_filter"
    assert "".join(c["choices"][0]["text"] for c in out) == "fine wor"


class _Broken(Guardrail):
    async def check_input(self, request: GuardrailInput) -> GuardrailVerdict:
        raise RuntimeError("policy engine crashed")

    def output_filter(self, request: GuardrailInput) -> Any:
        raise RuntimeError("no filter today")


def test_a_guardrail_that_fails_refuses_the_request() -> None:
    chain = GuardrailChain([("broken", _Broken())])
    with pytest.raises(GuardrailUnavailableError) as caught:
        asyncio.run(chain.check_input(REQUEST))
    assert caught.value.status == 503 and caught.value.code == "guardrail_unavailable"
    with pytest.raises(GuardrailUnavailableError):
        chain.filters(REQUEST)


@pytest.fixture
def opa() -> Iterator[FakeOpa]:
    local = FakeOpa()
    yield local
    local.close()


def _opa_chain(opa: FakeOpa, **options: Any) -> GuardrailChain:
    return GuardrailChain([("opa", OpaGuardrail(url=opa.url, policy=FakeOpa.POLICY, **options))])


def _ask(chain: GuardrailChain, text: str) -> None:
    async def ask() -> None:
        try:
            await chain.check_input(GuardrailInput(text, "m", "chat.completions", "r", "k1"))
        finally:
            await chain.close()

    asyncio.run(ask())


def test_opa_allows_and_refuses_with_its_reason(opa: FakeOpa) -> None:
    _ask(_opa_chain(opa), "a fine prompt")
    assert opa.inputs[-1] == {
        "model": "m",
        "endpoint": "chat.completions",
        "request_id": "r",
        "key_id": "k1",
        "scopes": [],
        "text": "a fine prompt",
    }
    with pytest.raises(GuardrailError, match="topic not allowed"):
        _ask(_opa_chain(opa), "forbidden-by-opa please")
    _ask(_opa_chain(opa, send_prompt=False), "forbidden-by-opa please")
    assert "text" not in opa.inputs[-1]


@pytest.mark.parametrize("mode", ["undefined", "error"])
def test_opa_without_a_decision_fails_closed(opa: FakeOpa, mode: str) -> None:
    opa.mode = mode
    with pytest.raises(GuardrailUnavailableError):
        _ask(_opa_chain(opa), "anything")


def test_opa_unreachable_fails_closed() -> None:
    chain = GuardrailChain([("opa", OpaGuardrail(url="http://127.0.0.1:9", policy="x/allow"))])
    with pytest.raises(GuardrailUnavailableError):
        _ask(chain, "anything")


def test_guardrails_are_registered_plugins_and_bad_options_name_the_entry() -> None:
    from inferflux_core.config import GuardrailConfig

    host = PluginHost()
    assert {"blocklist", "opa"} <= set(host.names("guardrails"))
    with pytest.raises(ConfigError, match=r"guardrails\.0 \(blocklist\)"):
        GuardrailChain.from_config([GuardrailConfig(name="blocklist", options={"nope": 1})], host)
