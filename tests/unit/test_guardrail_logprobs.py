"""Token logprobs behind the output guardrails, on synthetic typed events: an entry is sent
only once its text is, and nothing of a blocked phrase gets through them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from inferflux_core.contracts import (
    ALLOW,
    Finish,
    Guardrail,
    GuardrailInput,
    GuardrailVerdict,
    InferenceEvent,
    OutputFilter,
    TextDelta,
    TextLogprob,
    TokenAlternative,
)
from inferflux_core.engine.collect import collect
from inferflux_core.errors import GuardrailError
from inferflux_core.guardrails import GuardrailChain, filter_events
from inferflux_plugins.guardrails.blocklist import BlocklistGuardrail

REQUEST = GuardrailInput(text="hello", model="m", endpoint="chat.completions", request_id="r1")


def _blocklist(*terms: str) -> GuardrailChain:
    return GuardrailChain([("blocklist", BlocklistGuardrail(terms=list(terms)))])


def _entry(token: str, *alternatives: str) -> TextLogprob:
    top = tuple(TokenAlternative(t, t.encode(), -1.0) for t in (token, *alternatives))
    return TextLogprob(token, token.encode(), -1.0, top)


def _text(content: str, *entries: TextLogprob) -> TextDelta:
    return TextDelta(0, content, entries)


async def _events(items: list[InferenceEvent]) -> AsyncIterator[InferenceEvent]:
    for item in items:
        yield item


def _run(chain: GuardrailChain, items: list[InferenceEvent]) -> list[InferenceEvent]:
    async def run() -> list[InferenceEvent]:
        return [e async for e in filter_events(_events(items), chain, REQUEST)]

    return asyncio.run(run())


def _per_delta(out: list[InferenceEvent]) -> list[list[str]]:
    return [[e.text for e in d.logprobs] for d in out if isinstance(d, TextDelta)]


def _tokens(out: list[InferenceEvent]) -> list[str]:
    return [token for tokens in _per_delta(out) for token in tokens]


def _sent(out: list[InferenceEvent]) -> str:
    """Everything the client could read: text, tokens and alternatives."""
    parts = []
    for d in out:
        if isinstance(d, TextDelta):
            parts.append(d.text)
            parts += [e.text + "".join(t.text for t in e.top) for e in d.logprobs]
    return "|".join(parts)


def test_entries_wait_for_their_text_and_all_come_out_at_the_end() -> None:
    items: list[InferenceEvent] = [
        _text("a cat ", _entry("a"), _entry(" cat"), _entry(" ")),
        _text("nam", _entry("nam")),
        _text("ed Tom", _entry("ed"), _entry(" Tom")),
        Finish(0, "stop"),
    ]
    out = _run(_blocklist("named Luna"), items)
    assert _per_delta(out) == [["a", " cat", " "], ["nam", "ed", " Tom"]]
    assert "".join(d.text for d in out if isinstance(d, TextDelta)) == "a cat named Tom"
    assert out[-1] == Finish(0, "stop")


def test_entries_ahead_of_the_text_are_dropped_when_it_is_blocked() -> None:
    # A parser may hold text back (tool-call markup) while its tokens' logprobs go out.
    items: list[InferenceEvent] = [
        _text("a cat ", _entry("a cat ")),
        _text("", _entry("named")),
        _text("", _entry(" Luna")),
        _text("named Luna"),
        Finish(0, "stop"),
    ]
    out = _run(_blocklist("named Luna"), items)
    assert out[-1] == Finish(0, "content_filter")
    assert _tokens(out) == ["a cat "]
    assert "named" not in _sent(out)


def test_an_alternative_that_alone_holds_a_blocked_phrase_is_left_out() -> None:
    out = _run(
        _blocklist("paris"), [_text("Hi", _entry("Hi", " Paris", " there")), Finish(0, "stop")]
    )
    (entry,) = [e for d in out if isinstance(d, TextDelta) for e in d.logprobs]
    assert [alt.text for alt in entry.top] == ["Hi", " there"]


def test_an_alternative_that_completes_a_phrase_after_the_text_before_it_is_left_out() -> None:
    items: list[InferenceEvent] = [
        _text("a named Tom", _entry("a"), _entry(" named"), _entry(" Tom", " Luna", " Sam")),
        Finish(0, "stop"),
    ]
    out = _run(_blocklist("named Luna"), items)
    assert _tokens(out) == ["a", " named", " Tom"]
    last = [e for d in out if isinstance(d, TextDelta) for e in d.logprobs][-1]
    assert [alt.text for alt in last.top] == [" Tom", " Sam"]
    assert "luna" not in _sent(out).casefold()


def test_entries_pass_whole_and_are_cut_with_a_blocked_phrase() -> None:
    items: list[InferenceEvent] = [
        _text("a b", _entry("a"), _entry(" b")),
        _text(" c", _entry(" c")),
        Finish(0, "length"),
    ]
    assert _tokens(_run(_blocklist("zzz"), items)) == ["a", " b", " c"]
    blocked = _run(_blocklist("b c"), items)
    assert blocked[-1] == Finish(0, "content_filter")
    assert _tokens(blocked) == ["a"]


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
    items: list[InferenceEvent] = [
        _text("my ", _entry("my ")),
        _text("secret", _entry("secret")),
        _text(" is", _entry(" is")),
        Finish(0, "stop"),
    ]
    out = _run(chain, items)
    assert "".join(d.text for d in out if isinstance(d, TextDelta)) == "my ****** is"
    assert _tokens(out) == ["my "]
    assert "secret" not in _sent(out)


def test_a_whole_response_with_a_blocked_phrase_only_in_logprobs_is_refused() -> None:
    def whole(*entries: TextLogprob) -> list[InferenceEvent]:
        return [_text("a cat", *entries), Finish(0, "stop")]

    async def collected(items: list[InferenceEvent]) -> list[str]:
        result = await collect(filter_events(_events(items), _blocklist("named Luna"), REQUEST))
        return [e.text for e in result.choices[0].logprobs]

    with pytest.raises(GuardrailError):
        asyncio.run(collected(whole(_entry("a cat"), _entry(" named Luna"))))
    assert asyncio.run(collected(whole(_entry("a"), _entry(" cat")))) == ["a", " cat"]
