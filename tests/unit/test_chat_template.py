"""Chat templates render in a sandbox with bounded time and output."""

from __future__ import annotations

import time
from typing import Any

import pytest

from inferflux_core.chat_template import CallForm, ChatTemplate
from inferflux_core.errors import ChatTemplateError

MESSAGES = [{"role": "user", "content": "hi"}]


def test_renders_messages_and_generation_prompt() -> None:
    template = ChatTemplate(
        "{{ bos_token }}{% for m in messages %}<{{ m.role }}>{{ m['content'] }}{% endfor %}"
        "{% if add_generation_prompt %}<assistant>{% endif %}",
        bos_token="<s>",
    )
    assert template.render(MESSAGES) == "<s><user>hi<assistant>"


@pytest.mark.parametrize(
    "source",
    [
        "{{ messages.__class__.__mro__[1].__subclasses__() }}",
        "{{ ''.__class__.__base__ }}",
        "{{ messages.append(1) }}",
        "{{ cycler.__init__.__globals__ }}",
    ],
)
def test_sandbox_refuses_unsafe_operations(source: str) -> None:
    with pytest.raises(ChatTemplateError):
        ChatTemplate(source).render(MESSAGES)


def test_endless_template_stops_at_the_deadline() -> None:
    template = ChatTemplate(
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
        max_render_seconds=0.2,
    )
    started = time.monotonic()
    with pytest.raises(ChatTemplateError, match="longer than"):
        template.render(MESSAGES)
    assert time.monotonic() - started < 2


def test_huge_output_is_cut_off() -> None:
    template = ChatTemplate(
        "{% for i in range(100000) %}{{ 'x' * 100 }}{% endfor %}", max_output_chars=10_000
    )
    with pytest.raises(ChatTemplateError, match="exceeds"):
        template.render(MESSAGES)


def test_raise_exception_in_template_is_a_clear_error() -> None:
    template = ChatTemplate("{{ raise_exception('roles must alternate') }}")
    with pytest.raises(ChatTemplateError, match="roles must alternate"):
        template.render(MESSAGES)


def test_syntax_error_is_reported_at_compile_time() -> None:
    with pytest.raises(ChatTemplateError, match="does not compile"):
        ChatTemplate("{% for %}")


def test_loop_controls_break_and_continue() -> None:
    template = ChatTemplate(
        "{% for i in range(10) %}{% if i == 1 %}{% continue %}{% endif %}"
        "{% if i == 4 %}{% break %}{% endif %}{{ i }}{% endfor %}"
    )
    assert template.render(MESSAGES) == "023"


def test_generation_block_renders_its_body_in_the_loop_scope() -> None:
    template = ChatTemplate(
        "{% for m in messages %}{% generation %}[{{ m.content }}]"
        "{% if loop.last %}{% break %}{% endif %}{% endgeneration %}{% endfor %}"
    )
    assert template.render([*MESSAGES, {"role": "assistant", "content": "yo"}]) == "[hi][yo]"


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("{{ value | tojson }}", '{"b": "é<>", "a": [1, 2]}'),
        ("{{ value | tojson(ensure_ascii=True) }}", '{"b": "\\u00e9<>", "a": [1, 2]}'),
        ("{{ value | tojson(sort_keys=True) }}", '{"a": [1, 2], "b": "é<>"}'),
        ("{{ value | tojson(separators=(',', ':')) }}", '{"b":"é<>","a":[1,2]}'),
        ("{{ value | tojson(indent=2) }}", '{\n  "b": "é<>",\n  "a": [\n    1,\n    2\n  ]\n}'),
        ("{{ [value] | map(attribute='a') | tojson }}", "[[1, 2]]"),
    ],
)
def test_tojson_takes_the_options_transformers_gives_it(expression: str, expected: str) -> None:
    rendered = ChatTemplate(expression).render(MESSAGES, value={"b": "é<>", "a": [1, 2]})
    assert rendered == expected


def test_a_template_may_change_what_it_made_but_not_what_it_was_given() -> None:
    own = ChatTemplate(
        "{% set ns = namespace(ids=[]) %}{% set _ = ns.ids.append('x') %}"
        "{% set d = {} %}{% set _ = d.update({'k': 1}) %}{{ ns.ids.pop(0) }}{{ d.k }}"
    )
    assert own.render(MESSAGES) == "x1"
    given = {"role": "user", "content": "hi", "parts": ["a"]}
    for source in ("{{ messages[0].update({'content': 'x'}) }}", "{{ messages[0].parts.clear() }}"):
        with pytest.raises(ChatTemplateError, match="unsafe"):
            ChatTemplate(source).render([given])
    assert given == {"role": "user", "content": "hi", "parts": ["a"]}


CALLS: list[dict[str, Any]] = [
    {"role": "user", "content": "hi"},
    {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {
                "id": "call_0123456789abcdefghijklmn",
                "type": "function",
                "function": {"name": "f", "arguments": {"x": 1}},
            }
        ],
    },
    {"role": "tool", "tool_call_id": "call_0123456789abcdefghijklmn", "content": "ok"},
]


def test_a_template_that_wants_string_arguments_gets_them() -> None:
    template = ChatTemplate(
        "{% for t in tools %}{{ t.function.name }}{% endfor %}{% for m in messages %}"
        "{% for c in m.tool_calls or [] %}{{ c.function.name + ' ' + c.function.arguments }}"
        "{% endfor %}{% endfor %}"
    )
    assert template.call_form.string_arguments and not template.call_form.short_ids
    assert template.render(CALLS, tools=[]) == 'f {"x": 1}'


def test_a_template_that_wants_nine_character_ids_gets_one_per_call() -> None:
    template = ChatTemplate(
        "{% for t in tools %}{% endfor %}{% for m in messages %}"
        "{% for c in m.tool_calls or [] %}{% if c.id | length != 9 %}"
        "{{ raise_exception('ids must have 9 characters') }}{% endif %}"
        "{{ c.id }}:{{ c.function.arguments | tojson }};{% endfor %}"
        "{% if m.role == 'tool' %}{{ m.tool_call_id }}{% endif %}{% endfor %}"
    )
    assert template.call_form.short_ids and not template.call_form.string_arguments
    call_id, rest = template.render(CALLS, tools=[]).split(":", 1)
    assert len(call_id) == 9 and call_id.isalnum()
    assert rest == '{"x": 1};' + call_id
    assert CALLS[1]["tool_calls"][0]["id"] == "call_0123456789abcdefghijklmn"


def test_a_template_without_tools_is_not_probed() -> None:
    assert ChatTemplate("{{ messages[0].content }}").call_form == CallForm()
