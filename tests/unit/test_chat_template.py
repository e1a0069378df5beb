"""Chat templates render in a sandbox with bounded time and output."""

from __future__ import annotations

import time

import pytest

from inferflux_core.chat_template import ChatTemplate
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
