"""Tools and earlier tool calls rendered for the model: natively or in the fallback format."""

from __future__ import annotations

import json
from typing import Any

import pytest
from llama_cpp import LlamaGrammar

from inferflux_core.chat_template import ChatTemplate
from inferflux_core.contracts import ChatMessage, InferenceRequest, ToolSpec
from inferflux_core.errors import InvalidRequestError
from inferflux_core.frontdoors.openai_chat import inference_request, typed_messages, typed_tools
from inferflux_core.protocol.chat import ChatCompletionRequest
from inferflux_core.protocol.tools import ToolDefinition
from inferflux_core.tools import plan_tools
from inferflux_core.tools.grammar import MAX_PARALLEL_CALLS, forced_call_grammar
from inferflux_core.tools.prompt import conversation

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
TOOLS_TEMPLATE = (
    "{% if tools %}TOOLS={{ tools | tojson }}\n{% endif %}"
    "{% for m in messages %}{{ m.role }}:{{ m.content }}"
    "{% for c in m.tool_calls or [] %}[call {{ c.id }} {{ c.function.name }} "
    "{{ c.function.arguments.city }}]{% endfor %}"
    "{% if m.tool_call_id %}[for {{ m.tool_call_id }}]{% endif %}\n{% endfor %}"
)
WEATHER: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
HISTORY: list[dict[str, Any]] = [
    {"role": "user", "content": "Weather in Paris and Rome?"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
            },
            {
                "id": "call_2",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'},
            },
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": "18 C"},
    {"role": "tool", "tool_call_id": "call_2", "content": "24 C"},
]


def request(messages: list[dict[str, Any]], **fields: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate({"model": "m", "messages": messages, **fields})


def messages_of(messages: list[dict[str, Any]]) -> tuple[ChatMessage, ...]:
    return typed_messages(request(messages).messages)


def tools() -> tuple[ToolSpec, ...]:
    return typed_tools([ToolDefinition.model_validate(WEATHER)])


def test_fallback_adds_the_tools_to_a_new_system_message() -> None:
    messages, rendered_tools = conversation(
        messages_of([{"role": "user", "content": "hi"}]), tools(), native=False
    )
    assert rendered_tools is None
    assert messages[0]["role"] == "system"
    system = messages[0]["content"]
    assert "<tools>\n" + json.dumps(WEATHER) + "\n</tools>" in system
    assert "<tool_call>" in system and '"arguments": <args-json-object>' in system
    assert messages[1] == {"role": "user", "content": "hi"}


def test_fallback_appends_the_tools_to_an_existing_system_message() -> None:
    messages, _ = conversation(
        messages_of(
            [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
        ),
        tools(),
        native=False,
    )
    assert len(messages) == 2
    assert messages[0]["content"].startswith("Be brief.\n\n# Tools")


def test_fallback_writes_earlier_calls_and_results_as_markup() -> None:
    messages, _ = conversation(messages_of(HISTORY), (), native=False)
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    assert messages[1]["content"] == (
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Rome"}}\n</tool_call>'
    )
    assert messages[2]["content"] == (
        "<tool_response>\n18 C\n</tool_response>\n<tool_response>\n24 C\n</tool_response>"
    )
    prompt = ChatTemplate(CHATML).render(messages)
    assert "<|im_start|>user\n<tool_response>\n18 C" in prompt


def test_a_template_that_renders_tools_gets_them_natively() -> None:
    template = ChatTemplate(TOOLS_TEMPLATE)
    assert template.uses_tools and not ChatTemplate(CHATML).uses_tools
    messages, rendered_tools = conversation(messages_of(HISTORY), tools(), native=True)
    prompt = template.render(messages, tools=rendered_tools)
    assert prompt.startswith("TOOLS=" + json.dumps([WEATHER]))
    assert "[call call_1 get_weather Paris][call call_2 get_weather Rome]" in prompt
    assert "tool:18 C[for call_1]" in prompt


@pytest.mark.parametrize("native", [True, False])
def test_a_tool_message_needs_its_tool_call_id(native: bool) -> None:
    bad = [*HISTORY[:2], {"role": "tool", "content": "18 C"}]
    with pytest.raises(InvalidRequestError) as caught:
        conversation(messages_of(bad), (), native=native)
    assert caught.value.param == "messages.2.tool_call_id"


def test_forced_grammar_compiles_and_keeps_each_functions_definitions_apart() -> None:
    unit_enum = {"Unit": {"enum": ["c", "f"]}}
    first = {
        "type": "function",
        "function": {
            "name": "a",
            "parameters": {
                "type": "object",
                "properties": {"u": {"$ref": "#/$defs/Unit"}},
                "$defs": unit_enum,
            },
        },
    }
    second = {
        "type": "function",
        "function": {
            "name": "b",
            "parameters": {
                "type": "object",
                "properties": {"u": {"$ref": "#/definitions/Unit"}},
                "definitions": {"Unit": {"type": "integer"}},
            },
        },
    }
    definitions = typed_tools([ToolDefinition.model_validate(t) for t in (first, second)])
    grammar = forced_call_grammar(definitions, parallel=False)
    LlamaGrammar.from_string(grammar, verbose=False)
    assert grammar.startswith('root ::= "<tool_call>\\n" tool-call "\\n</tool_call>"\n')
    assert '"\\"c\\"" | "\\"f\\""' in grammar and "integer" in grammar
    call_rule = next(line for line in grammar.splitlines() if line.startswith("tool-call-0 ::="))
    assert call_rule.index("name-kv") < call_rule.index("arguments-kv")
    parallel = forced_call_grammar(definitions, parallel=True)
    LlamaGrammar.from_string(parallel, verbose=False)
    assert parallel.splitlines()[0].endswith("){0,7}")


class GrammarChecker:
    """The one backend method ``plan_tools`` calls: llama.cpp's own grammar parser."""

    def check_grammar(self, grammar: str) -> None:
        LlamaGrammar.from_string(grammar, verbose=False)


NAMED = {"type": "function", "function": {"name": "get_weather"}}


@pytest.mark.parametrize(
    ("tool_choice", "parallel", "max_calls"),
    [
        (NAMED, None, 1),
        (NAMED, True, 1),
        (NAMED, False, 1),
        ("required", None, MAX_PARALLEL_CALLS),
        ("required", True, MAX_PARALLEL_CALLS),
        ("required", False, 1),
    ],
)
def test_a_named_function_is_forced_once_and_required_may_call_in_parallel(
    tool_choice: Any, parallel: bool | None, max_calls: int
) -> None:
    fields: dict[str, Any] = {"tools": [WEATHER], "tool_choice": tool_choice}
    if parallel is not None:
        fields["parallel_tool_calls"] = parallel
    checked: InferenceRequest = inference_request(
        request([{"role": "user", "content": "hi"}], **fields)
    )
    plan = plan_tools(checked, GrammarChecker())
    assert plan.mode == "forced" and plan.grammar is not None
    repeats = plan.grammar.splitlines()[0].endswith(f"){{0,{MAX_PARALLEL_CALLS - 1}}}")
    assert repeats == (max_calls > 1)
    assert plan.max_calls == (None if max_calls > 1 else 1)
