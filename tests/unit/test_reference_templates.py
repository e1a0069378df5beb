"""Every reference chat template llama.cpp ships renders in our sandbox, as the server renders it.

The templates are in ``tests/data/templates`` (see its README). Each renders a standard
conversation (system, user, assistant, user); each that mentions ``tools`` also renders a tool
conversation: the tool list, an assistant tool call and its result. Messages go through
:func:`inferflux_core.tools.prompt.conversation`, the server's own step, so a template that
renders ``tools`` itself gets native tool calls and any other gets the fallback markup. Before
``loopcontrols``, ``{% generation %}`` and the rest of transformers' environment, 8 of them did
not compile.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from inferflux_core.chat_template import CallForm, ChatTemplate
from inferflux_core.errors import ChatTemplateError
from inferflux_core.frontdoors.openai_chat import typed_messages, typed_tools
from inferflux_core.protocol.chat import ChatMessage
from inferflux_core.protocol.tools import ToolDefinition
from inferflux_core.tools.prompt import conversation

TEMPLATES = Path(__file__).resolve().parents[1] / "data" / "templates"
SOURCES = sorted(TEMPLATES.glob("*.jinja"))

SYSTEM = "You answer in one short sentence."
FIRST_QUESTION = "What is the capital of France?"
FIRST_ANSWER = "The capital of France is Paris."
SECOND_QUESTION = "And of Italy?"
STANDARD = [
    {"role": "system", "content": SYSTEM},
    {"role": "user", "content": FIRST_QUESTION},
    {"role": "assistant", "content": FIRST_ANSWER},
    {"role": "user", "content": SECOND_QUESTION},
]

TOOL_NAME = "get_weather"
TOOL_CITY = "Reykjavik"
TOOL_RESULT = '{"temperature_c": 17}'
TOOL = {
    "type": "function",
    "function": {
        "name": TOOL_NAME,
        "description": "The current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "The city's name."}},
            "required": ["city"],
        },
    },
}
WITH_TOOLS: list[dict[str, Any]] = [
    {"role": "system", "content": SYSTEM},
    {"role": "user", "content": f"How warm is it in {TOOL_CITY}?"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_0123456789abcdefghijklmn",
                "type": "function",
                "function": {"name": TOOL_NAME, "arguments": json.dumps({"city": TOOL_CITY})},
            }
        ],
    },
    {"role": "tool", "tool_call_id": "call_0123456789abcdefghijklmn", "content": TOOL_RESULT},
]
#: Templates that show earlier calls in another form than Hugging Face's (found by probing).
CALL_FORMS = {
    "meetkai-functionary-medium-v3.2": CallForm(string_arguments=True),
    "Mistral-Small-3.2-24B-Instruct-2506": CallForm(short_ids=True),
    "mistralai-Mistral-Nemo-Instruct-2407": CallForm(short_ids=True),
}

#: Templates that refuse a system message (``raise_exception``): the system text goes into
#: the first user message instead, as their model cards advise.
NO_SYSTEM_ROLE = {"google-gemma-2-2b-it"}
#: Variant templates that Hugging Face selects only when a request has tools (the model also
#: ships a default template): they iterate over ``tools`` unguarded, so they render the
#: standard conversation with the tool list offered.
TOOL_USE_ONLY = {
    "CohereForAI-c4ai-command-r-plus-tool_use",
    "NousResearch-Hermes-2-Pro-Llama-3-8B-tool_use",
    "NousResearch-Hermes-3-Llama-3.1-8B-tool_use",
}
#: Templates that read extra variables the calling code passes, as llama.cpp passes them.
EXTRA_VARIABLES: dict[str, dict[str, Any]] = {
    # firefunction-v2 expects the tool list as a JSON string and today's date.
    "fireworks-ai-llama-3-firefunction-v2": {
        "functions": json.dumps([TOOL["function"]], indent=2),
        "datetime": "Jan 01 2026",
    },
}


def _template(path: Path) -> ChatTemplate:
    return ChatTemplate(path.read_text(encoding="utf-8"), bos_token="<s>", eos_token="</s>")


def _render(path: Path, messages: list[dict[str, Any]], *, offer_tools: bool) -> str:
    """Render ``messages`` through the server's conversation step, with the tool offered."""
    template = _template(path)
    if path.stem in NO_SYSTEM_ROLE and messages[0]["role"] == "system":
        system, first, *rest = messages
        messages = [{**first, "content": f"{system['content']}\n\n{first['content']}"}, *rest]
    parsed = typed_messages([ChatMessage.model_validate(m) for m in messages])
    offered = typed_tools([ToolDefinition.model_validate(TOOL)] if offer_tools else [])
    converted, tools = conversation(parsed, offered, native=template.uses_tools)
    extra = EXTRA_VARIABLES.get(path.stem, {})
    return template.render(converted, add_generation_prompt=True, tools=tools, **extra)


def test_the_reference_templates_are_all_there() -> None:
    assert len(SOURCES) == 70
    assert (TEMPLATES / "LICENSE").read_text(encoding="utf-8").startswith("MIT License")
    adjusted = NO_SYSTEM_ROLE | TOOL_USE_ONLY | set(EXTRA_VARIABLES) | set(CALL_FORMS)
    assert adjusted <= {path.stem for path in SOURCES}, "an adjustment names no template"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.stem)
def test_renders_a_standard_conversation(path: Path) -> None:
    prompt = _render(path, STANDARD, offer_tools=path.stem in TOOL_USE_ONLY)
    for text in (SYSTEM, FIRST_QUESTION, FIRST_ANSWER, SECOND_QUESTION):
        assert text in prompt
    assert prompt.index(FIRST_QUESTION) < prompt.index(FIRST_ANSWER)
    assert prompt.rindex(SECOND_QUESTION) > prompt.index(FIRST_ANSWER)


USES_TOOLS = [p for p in SOURCES if "tools" in p.read_text(encoding="utf-8")]


@pytest.mark.parametrize("path", USES_TOOLS, ids=lambda p: p.stem)
def test_renders_tools_a_tool_call_and_its_result(path: Path) -> None:
    prompt = _render(path, WITH_TOOLS, offer_tools=True)
    assert TOOL_NAME in prompt
    assert "The current weather in a city." in prompt
    assert TOOL_CITY in prompt.split("temperature_c")[0], "the call's arguments come first"
    assert "temperature_c" in prompt and "17" in prompt


def test_most_templates_render_tools_natively() -> None:
    native = [p.stem for p in USES_TOOLS if _template(p).uses_tools]
    assert len(native) >= len(USES_TOOLS) - 5, sorted({p.stem for p in USES_TOOLS} - set(native))


def test_only_a_few_templates_need_another_call_form() -> None:
    forms = {p.stem: _template(p).call_form for p in SOURCES}
    assert {stem: form for stem, form in forms.items() if form != CallForm()} == CALL_FORMS


def test_a_nine_character_id_template_sees_one_id_per_call() -> None:
    [path] = [p for p in SOURCES if p.stem == "mistralai-Mistral-Nemo-Instruct-2407"]
    prompt = _render(path, WITH_TOOLS, offer_tools=True)
    assert "call_0123456789abcdefghijklmn" not in prompt
    [short] = set(re.findall(r'"(?:id|call_id)": "(\w+)"', prompt))
    assert len(short) == 9 and prompt.count(short) == 2


def test_a_template_refusing_the_system_role_says_why() -> None:
    [path] = [p for p in SOURCES if p.stem in NO_SYSTEM_ROLE]
    with pytest.raises(ChatTemplateError, match="System role not supported"):
        _template(path).render(STANDARD)
