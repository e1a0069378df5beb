"""Forced calls on llguidance in each family's syntax: the grammar compiles for the default
model's vocabulary, and what the model writes under it parses back, with that family's
parser, into a call whose arguments hold their schema (``pattern`` and ``oneOf`` included)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import llama_cpp
import numpy as np
import pytest
from llama_cpp import Llama, LogitsProcessorList

from inferflux_core.contracts import ChatMessage, InferenceRequest, ToolChoice, ToolSpec
from inferflux_core.errors import InvalidRequestError
from inferflux_core.tools import ToolPlan, plan_tools
from inferflux_core.tools.families import FAMILIES
from inferflux_core.tools.family_grammar import FAMILY_SYNTAX
from inferflux_core.tools.output import new_parser
from inferflux_core.tools.parser import Arguments, CallStart
from inferflux_core.tools.xml_guidance import XML_SYNTAX
from inferflux_plugins.backends.llama_cpp.guidance import GuidanceMatchers, end_tokens
from tests.direct_llama import direct_llama

PARAMETERS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "code": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{2}$"},
        "unit": {"oneOf": [{"enum": ["c", "f"]}, {"type": "null"}]},
        "rain": {"type": "boolean"},
    },
    "required": ["code", "unit", "rain"],
}
FORECAST = ToolSpec("forecast", "The weather tomorrow", PARAMETERS)
NOTHING = ToolSpec("ping", None, None)


class Checker:
    """A backend's two grammar checks: GBNF is never asked for, llguidance compiles."""

    def __init__(self, matchers: GuidanceMatchers) -> None:
        self.matchers = matchers

    def check_grammar(self, grammar: str) -> None:
        raise AssertionError("a forced call under llguidance asked for a GBNF check")

    def check_llguidance(self, grammar: str) -> None:
        self.matchers.check(grammar)


@pytest.fixture(scope="module")
def llama(model_path: Path) -> Iterator[Llama]:
    model = direct_llama(model_path, n_ctx=512, n_threads=1, verbose=False)
    yield model
    model.close()


@pytest.fixture(scope="module")
def checker(llama: Llama) -> Checker:
    vocab = llama_cpp.llama_model_get_vocab(llama.model)
    return Checker(GuidanceMatchers(llama_cpp, vocab, end_tokens(llama_cpp, vocab)))


def forced(checker: Checker, family: str, tools: tuple[ToolSpec, ...] = (FORECAST,)) -> ToolPlan:
    request = InferenceRequest(
        model="m",
        messages=(ChatMessage("user", "hi"),),
        tools=tools,
        tool_choice=ToolChoice("required"),
        parallel_tool_calls=False,
    )
    return plan_tools(request, checker, family, guidance=checker)


def calls_of(family: str, text: str) -> list[tuple[str, Any]]:
    parser = new_parser(ToolPlan("forced", family=family))
    calls: list[list[Any]] = []
    for event in parser.feed(text) + parser.finish():
        if isinstance(event, CallStart):
            calls.append([event.name, ""])
        elif isinstance(event, Arguments):
            calls[event.index][1] += event.text
    return [(name, json.loads(arguments)) for name, arguments in calls]


def guided_text(llama: Llama, checker: Checker, grammar: str) -> str:
    """Greedy output of the model under ``grammar``'s mask (a logits processor)."""
    matcher = checker.matchers.new_matcher(grammar)
    start = 0

    def mask(input_ids: Any, scores: Any) -> Any:
        nonlocal start
        if start == 0:
            start = len(input_ids)
        for token in input_ids[start:]:
            assert matcher.consume_token(int(token)), matcher.get_error()
        start = len(input_ids)
        bits = np.frombuffer(matcher.compute_bitmask(), dtype=np.uint8)
        allowed = np.unpackbits(bits, bitorder="little")[: len(scores)].astype(bool)
        out = np.array(scores, copy=True)
        out[~allowed] = -np.inf
        return out

    out = llama.create_completion(
        "Will it rain tomorrow? Call the forecast tool.\n",
        max_tokens=240,
        temperature=0.0,
        logits_processor=LogitsProcessorList([mask]),
    )
    return str(out["choices"][0]["text"])  # type: ignore[index]


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_forced_call_under_llguidance_compiles_in_every_family(
    checker: Checker, family: str
) -> None:
    plan = forced(checker, family, (FORECAST, NOTHING))
    assert plan.grammar is None and plan.guidance is not None
    expected = family if family in FAMILY_SYNTAX or family in XML_SYNTAX else "hermes"
    assert plan.family == expected


@pytest.mark.parametrize("family", ["hermes", *sorted(FAMILY_SYNTAX), *sorted(XML_SYNTAX)])
def test_what_the_model_writes_under_llguidance_parses_back(
    llama: Llama, checker: Checker, family: str
) -> None:
    plan = forced(checker, family)
    assert plan.guidance is not None
    text = guided_text(llama, checker, plan.guidance)
    calls = calls_of(plan.family, text)
    assert len(calls) == 1, text
    name, arguments = calls[0]
    assert name == "forecast"
    jsonschema.validate(arguments, PARAMETERS)


def test_a_schema_llguidance_refuses_names_its_tool(checker: Checker) -> None:
    refused = ToolSpec("f", None, {"type": "object", "properties": {"a": {"not": {}}}})
    with pytest.raises(InvalidRequestError) as caught:
        forced(checker, "hermes", (FORECAST, refused))
    assert caught.value.param == "tools.1.function.parameters"
    assert "not" in caught.value.message


ROUTE: dict[str, Any] = {
    "type": "object",
    "$defs": {"city": {"type": "string", "pattern": "^[A-Z][a-z]{2,12}$"}},
    "properties": {
        "origin": {"$ref": "#/$defs/city"},
        "stops": {"type": "array", "items": {"$ref": "#/$defs/city"}, "maxItems": 2},
        "note": {"type": "string", "maxLength": 20},
    },
    "required": ["origin", "stops"],
}


@pytest.mark.parametrize("family", sorted(XML_SYNTAX))
def test_xml_families_write_local_refs_and_optional_parameters(
    llama: Llama, checker: Checker, family: str
) -> None:
    plan = forced(checker, family, (ToolSpec("route", None, ROUTE),))
    assert plan.family == family and plan.guidance is not None
    text = guided_text(llama, checker, plan.guidance)
    assert "{" not in text.split("route", 1)[1][:3], text  # one element per parameter
    calls = calls_of(family, text)
    assert [name for name, _ in calls] == ["route"], text
    jsonschema.validate(calls[0][1], ROUTE)


@pytest.mark.parametrize(
    "parameters",
    [
        {"type": "object", "anyOf": [{"required": ["a"]}, {"required": ["b"]}]},
        {"type": "object", "properties": {"a b": {"type": "string"}}},
        {"type": "object", "properties": {"a": {}}, "additionalProperties": True},
    ],
)
def test_a_schema_xml_cannot_write_is_forced_in_hermes_syntax(
    checker: Checker, parameters: dict[str, Any]
) -> None:
    for family in XML_SYNTAX:
        plan = forced(checker, family, (ToolSpec("f", None, parameters),))
        assert plan.family == ("qwen3_coder" if family == "qwen3_coder" else "hermes")
        assert plan.guidance is not None and "<tool_call>" in plan.guidance
