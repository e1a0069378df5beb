"""Forced calls in each family's syntax: the grammar parses in llama.cpp, and what the real
default model writes under it parses back, with that family's parser, into the forced call."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from llama_cpp import Llama, LlamaGrammar

from inferflux_core.contracts import ChatMessage, InferenceRequest, ToolChoice, ToolSpec
from inferflux_core.tools import ToolPlan, plan_tools, template_family
from inferflux_core.tools.families import FAMILIES
from inferflux_core.tools.family_grammar import FAMILY_SYNTAX, family_call_grammar
from inferflux_core.tools.output import new_parser
from inferflux_core.tools.parser import Arguments, CallStart
from tests.direct_llama import direct_llama

TEMPLATES = Path(__file__).parent.parent / "data" / "templates"
FORECAST = ToolSpec(
    "forecast",
    "The weather tomorrow",
    {
        "type": "object",
        "properties": {"unit": {"enum": ["c", "f"]}, "rain": {"type": "boolean"}},
        "required": ["unit", "rain"],
    },
)
NOTHING = ToolSpec("ping", None, None)


def calls_of(family: str, text: str) -> list[tuple[str, Any]]:
    parser = new_parser(ToolPlan("forced", family=family))
    events = parser.feed(text) + parser.finish()
    calls: list[list[Any]] = []
    for event in events:
        if isinstance(event, CallStart):
            calls.append([event.name, ""])
        elif isinstance(event, Arguments):
            calls[event.index][1] += event.text
    return [(name, json.loads(arguments)) for name, arguments in calls]


@pytest.fixture(scope="module")
def llama(model_path: Path) -> Iterator[Llama]:
    model = direct_llama(model_path, n_ctx=512, n_threads=1, verbose=False)
    yield model
    model.close()


@pytest.mark.parametrize("family", sorted(FAMILY_SYNTAX))
@pytest.mark.parametrize("parallel", [False, True])
def test_family_grammar_parses_in_llama_cpp(family: str, parallel: bool) -> None:
    grammar = family_call_grammar(family, [FORECAST, NOTHING], parallel=parallel)
    assert grammar is not None
    LlamaGrammar.from_string(grammar, verbose=False)


@pytest.mark.parametrize("family", sorted(FAMILY_SYNTAX))
def test_what_the_model_writes_under_the_grammar_parses_back(llama: Llama, family: str) -> None:
    grammar = family_call_grammar(family, [FORECAST], parallel=False)
    assert grammar is not None
    out = llama.create_completion(
        "Will it rain tomorrow? Call the forecast tool.\n",
        max_tokens=120,
        temperature=0.0,
        grammar=LlamaGrammar.from_string(grammar, verbose=False),
    )
    text = out["choices"][0]["text"]  # type: ignore[index]
    calls = calls_of(family, text)
    assert len(calls) == 1, text
    name, arguments = calls[0]
    assert name == "forecast"
    assert arguments["unit"] in ("c", "f") and isinstance(arguments["rain"], bool)


class Checker:
    """The one backend method ``plan_tools`` calls: llama.cpp's own grammar parser."""

    def check_grammar(self, grammar: str) -> None:
        LlamaGrammar.from_string(grammar, verbose=False)


def forced(family: str) -> ToolPlan:
    """The plan for a call of FORECAST forced under a template of ``family``."""
    request = InferenceRequest(
        model="m",
        messages=(ChatMessage("user", "hi"),),
        tools=(FORECAST,),
        tool_choice=ToolChoice("required"),
    )
    return plan_tools(request, Checker(), family)


def test_plan_keeps_the_family_for_forced_calls_where_it_has_a_grammar() -> None:
    for family in FAMILIES:
        plan = forced(family)
        expected = family if family in FAMILY_SYNTAX or family == "qwen3_coder" else "hermes"
        assert plan.family == expected
        assert plan.grammar is not None
    assert forced("hermes").grammar == forced("seed_oss").grammar


def test_template_family_is_hermes_for_the_fallback() -> None:
    assert template_family(None) == "hermes"
    source = (TEMPLATES / "moonshotai-Kimi-K2.jinja").read_text(encoding="utf-8")
    assert template_family(source) == "kimi_k2"
