"""Guardrails: the blocklist across chunk boundaries, streamed chunks, OPA, failing closed."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inferflux_core.contracts import (
    Finish,
    Guardrail,
    GuardrailInput,
    GuardrailVerdict,
    InferenceEvent,
    TextDelta,
    ToolCallDelta,
    UsageReport,
)
from inferflux_core.errors import ConfigError, GuardrailError, GuardrailUnavailableError
from inferflux_core.guardrails import GuardrailChain, filter_events
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


async def _events(items: list[InferenceEvent]) -> AsyncIterator[InferenceEvent]:
    for item in items:
        yield item


def _run(chain: GuardrailChain, items: list[InferenceEvent]) -> list[InferenceEvent]:
    async def collect() -> list[InferenceEvent]:
        return [e async for e in filter_events(_events(items), chain, REQUEST)]

    return asyncio.run(collect())


def _text(events: list[InferenceEvent], choice: int = 0) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta) and e.choice == choice)


def _arguments(events: list[InferenceEvent], call: int = 0) -> str:
    return "".join(e.arguments for e in events if isinstance(e, ToolCallDelta) and e.call == call)


def test_a_stream_with_a_split_phrase_ends_with_content_filter() -> None:
    items: list[InferenceEvent] = [
        TextDelta(0, t) for t in ("", "One day, a cat", " named", " Luna", " sat")
    ]
    out = _run(_blocklist("named Luna"), [UsageReport(3, 0), *items])
    assert _text(out) == "One day, a cat "
    assert out[-1] == Finish(0, "content_filter")
    assert out[0] == UsageReport(3, 0), "usage passes unchanged"


def test_held_text_is_released_before_the_finish() -> None:
    out = _run(_blocklist("named Luna"), [TextDelta(0, "a cat named"), Finish(0, "stop")])
    assert out == [TextDelta(0, "a cat "), TextDelta(0, "named"), Finish(0, "stop")]


def test_tool_call_arguments_with_a_split_phrase_end_with_content_filter() -> None:
    items: list[InferenceEvent] = [
        ToolCallDelta(0, 0, "call_0", "say"),
        *(ToolCallDelta(0, 0, arguments=a) for a in ('{"text": "a cat', " named", ' Luna"}')),
        Finish(0, "tool_calls"),
    ]
    out = _run(_blocklist("named Luna"), items)
    assert out[-1] == Finish(0, "content_filter")
    sent = _arguments(out)
    assert "Luna" not in sent and sent.startswith('{"text": "a cat')


def test_held_arguments_are_released_before_the_next_call_starts() -> None:
    items: list[InferenceEvent] = [
        ToolCallDelta(0, 0, "call_0", "say"),
        ToolCallDelta(0, 0, arguments='{"text": "named'),
        ToolCallDelta(0, 1, "call_1", "other", "{}"),
        Finish(0, "tool_calls"),
    ]
    out = _run(_blocklist("named Luna"), items)
    assert out[1] == ToolCallDelta(0, 0, arguments='{"text": "')
    assert out[2:] == [
        ToolCallDelta(0, 0, arguments="named"),
        ToolCallDelta(0, 1, "call_1", "other", "{}"),
        Finish(0, "tool_calls"),
    ]


def test_held_arguments_of_the_last_call_are_released_before_the_finish() -> None:
    items: list[InferenceEvent] = [
        ToolCallDelta(0, 0, "call_0", "say"),
        ToolCallDelta(0, 0, arguments='{"text": "named'),
        Finish(0, "tool_calls"),
    ]
    out = _run(_blocklist("named Luna"), items)
    assert out[-2:] == [ToolCallDelta(0, 0, arguments="named"), Finish(0, "tool_calls")]


def test_choices_are_filtered_separately() -> None:
    items: list[InferenceEvent] = [
        TextDelta(0, "bad"),
        TextDelta(1, "fine wor"),
        TextDelta(0, "ly"),
        Finish(0, "stop"),
        TextDelta(1, "ds"),
        Finish(1, "stop"),
    ]
    out = _run(_blocklist("badly"), items)
    assert out[-1] == Finish(0, "content_filter")
    assert _text(out, 0) == "" and _text(out, 1) == "fine wor"


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
