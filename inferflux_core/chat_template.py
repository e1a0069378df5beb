"""Rendering chat messages into a prompt with the model's Jinja template, in a sandbox.

Templates come from GGUF metadata (written by whoever made the file) or from config, never from
a request. They run in Jinja's sandbox (an unsandboxed GGUF template was llama-cpp-python's
CVE-2024-34359) with a deadline and an output-size cap, so a hostile or broken template fails
one request with a clear error instead of hanging or exhausting memory.

The environment is the one Hugging Face transformers renders templates in, so templates models
ship render as their authors tested them: ``trim_blocks`` and ``lstrip_blocks``, the
``loopcontrols`` extension (``{% break %}``, ``{% continue %}``), a ``{% generation %}`` block
(rendered as its body), ``raise_exception``, ``strftime_now`` and a ``tojson`` with
``ensure_ascii``, ``indent``, ``separators`` and ``sort_keys``. Like transformers' immutable
sandbox, a template cannot change the messages, tools or other values it is given; unlike it, a
template may change lists and dicts it made itself (Kimi K2's keeps a queue of tool call ids).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import jinja2
import jinja2.ext
import jinja2.meta
from jinja2 import nodes
from jinja2.parser import Parser
from jinja2.sandbox import SandboxedEnvironment, modifies_known_mutable

from inferflux_core.errors import ChatTemplateError

DEFAULT_RENDER_SECONDS = 1.0
DEFAULT_MAX_OUTPUT_CHARS = 1_000_000


class _RenderBudget:
    """A deadline checked whenever the template calls, indexes or emits anything, and the
    containers the render was given (which the template may read but not change)."""

    def __init__(self, seconds: float, inputs: object) -> None:
        self.seconds = seconds
        self.deadline = time.monotonic() + seconds
        self.given = frozenset(_container_ids(inputs))

    def check(self) -> None:
        if time.monotonic() > self.deadline:
            raise ChatTemplateError(f"chat template took longer than {self.seconds:g} s to render")


_current_budget: ContextVar[_RenderBudget | None] = ContextVar("render_budget", default=None)


def _container_ids(value: object) -> Iterator[int]:
    """The ids of every list, dict and set in ``value``, nested ones included."""
    stack, seen = [value], set()
    while stack:
        item = stack.pop()
        if isinstance(item, list | dict | set) and id(item) not in seen:
            seen.add(id(item))
            yield id(item)
            stack.extend(item.values() if isinstance(item, dict) else item)


class _BoundedEnvironment(SandboxedEnvironment):
    """The sandbox, with a render deadline enforced in every intercepted operation; a method
    that changes a container is refused on the containers the render was given."""

    def _check(self) -> None:
        budget = _current_budget.get()
        if budget is not None:
            budget.check()

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        if not super().is_safe_attribute(obj, attr, value):
            return False
        budget = _current_budget.get()
        given = budget.given if budget is not None else frozenset()
        return not (id(obj) in given and modifies_known_mutable(obj, attr))

    def call(self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        self._check()
        return super().call(__context, __obj, *args, **kwargs)

    def getitem(self, obj: Any, argument: Any) -> Any:
        self._check()
        return super().getitem(obj, argument)

    def getattr(self, obj: Any, attribute: str) -> Any:
        self._check()
        return super().getattr(obj, attribute)


class _GenerationBlock(jinja2.ext.Extension):
    """``{% generation %}...{% endgeneration %}``, rendered as its body.

    Templates mark the assistant's part with it for transformers' ``return_assistant_tokens_mask``
    (training); serving has no use for the mark, so the block renders its content unchanged.
    """

    tags = {"generation"}

    def parse(self, parser: Parser) -> nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return nodes.Scope(body).set_lineno(lineno)


def _raise_exception(message: str) -> None:
    raise ChatTemplateError(f"chat template refused the messages: {message}")


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


class ChatTemplate:
    """A compiled chat template with its special tokens; thread-safe to render."""

    def __init__(
        self,
        source: str,
        *,
        bos_token: str = "",
        eos_token: str = "",
        max_render_seconds: float = DEFAULT_RENDER_SECONDS,
        max_output_chars: int = DEFAULT_MAX_OUTPUT_CHARS,
    ) -> None:
        self.source = source
        self.bos_token = bos_token
        self.eos_token = eos_token
        self.max_render_seconds = max_render_seconds
        self.max_output_chars = max_output_chars
        env = _BoundedEnvironment(
            trim_blocks=True,
            lstrip_blocks=True,
            extensions=[jinja2.ext.loopcontrols, _GenerationBlock],
        )
        env.globals.update(raise_exception=_raise_exception, strftime_now=_strftime_now)
        env.filters["tojson"] = _tojson
        try:
            self._template = env.from_string(source)
            variables = jinja2.meta.find_undeclared_variables(env.parse(source))
        except jinja2.TemplateSyntaxError as exc:
            raise ChatTemplateError(f"chat template does not compile: {exc}") from None
        #: Whether the template renders a ``tools`` list itself; if not, tool definitions go
        #: into the system prompt in the documented fallback format.
        self.uses_tools = "tools" in variables
        #: How earlier tool calls reach the template, found by rendering a probe call: as
        #: Hugging Face passes them (``arguments`` an object) and with our ids, unless the
        #: template fails on those and renders a string (Functionary v3.2) or nine-character
        #: ids (Mistral's; each id is then replaced by one made from it, the same every time).
        self.call_form = CallForm()
        if self.uses_tools:
            self.call_form = _probe_call_form(self)

    def render(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        add_generation_prompt: bool = True,
        tools: Sequence[Mapping[str, Any]] | None = None,
        **extra: Any,
    ) -> str:
        """Render ``messages`` to the prompt text, within the time and size limits."""
        messages = [self.call_form.adapt(m) for m in messages]
        context = {
            "messages": [dict(m) for m in messages],
            "add_generation_prompt": add_generation_prompt,
            "bos_token": self.bos_token,
            "eos_token": self.eos_token,
            "tools": tools,
            **extra,
        }
        budget = _RenderBudget(self.max_render_seconds, context)
        token = _current_budget.set(budget)
        try:
            return self._render_bounded(context, budget)
        finally:
            _current_budget.reset(token)

    def _render_bounded(self, context: dict[str, Any], budget: _RenderBudget) -> str:
        pieces: list[str] = []
        size = 0
        try:
            for piece in self._template.generate(context):
                size += len(piece)
                if size > self.max_output_chars:
                    raise ChatTemplateError(
                        f"chat template output exceeds {self.max_output_chars} characters"
                    )
                budget.check()
                pieces.append(piece)
        except ChatTemplateError:
            raise
        except jinja2.exceptions.SecurityError as exc:
            raise ChatTemplateError(f"chat template tried an unsafe operation: {exc}") from None
        except Exception as exc:
            raise ChatTemplateError(
                f"chat template failed to render: {type(exc).__name__}: {exc}"
            ) from None
        return "".join(pieces)


_PROBE_VALUE = "inferflux-probe-argument"
_PROBE_TOOL = {
    "type": "function",
    "function": {
        "name": "probe",
        "description": "A probe.",
        "parameters": {
            "type": "object",
            "properties": {"value": {"type": "string", "description": "A value."}},
            "required": ["value"],
        },
    },
}
#: A call id as this server makes them (``call_`` and 24 letters and digits).
_LONG_ID = "call_0123456789abcdefghijklmn"
#: A call id every template takes (Mistral's refuse any but nine letters and digits).
_SHORT_ID = "call00001"
_SHORT_ID_LENGTH = len(_SHORT_ID)


@dataclass(frozen=True, slots=True)
class CallForm:
    """How earlier tool calls reach a template: ``arguments`` as the JSON string (OpenAI's
    form) or decoded to an object (Hugging Face's), and ids as they are or nine characters."""

    string_arguments: bool = False
    short_ids: bool = False

    def adapt(self, message: Mapping[str, Any]) -> Mapping[str, Any]:
        """``message`` with its tool calls and tool call id in this form."""
        if not (self.string_arguments or self.short_ids):
            return message
        adapted = dict(message)
        if self.short_ids and isinstance(message.get("tool_call_id"), str):
            adapted["tool_call_id"] = _short_id(message["tool_call_id"])
        if message.get("tool_calls"):
            adapted["tool_calls"] = [self._adapt_call(call) for call in message["tool_calls"]]
        return adapted

    def _adapt_call(self, call: Mapping[str, Any]) -> dict[str, Any]:
        adapted = dict(call)
        function = dict(call.get("function") or {})
        arguments = function.get("arguments", "")
        if self.string_arguments and not isinstance(arguments, str):
            function["arguments"] = json.dumps(arguments, ensure_ascii=False)
        adapted["function"] = function
        if self.short_ids and isinstance(call.get("id"), str):
            adapted["id"] = _short_id(call["id"])
        return adapted


def _short_id(call_id: str) -> str:
    """A nine-character id standing for ``call_id``; the same one every time."""
    if len(call_id) == _SHORT_ID_LENGTH and call_id.isalnum():
        return call_id
    return hashlib.sha256(call_id.encode()).hexdigest()[:_SHORT_ID_LENGTH]


def _probe_call_form(template: ChatTemplate) -> CallForm:
    """The call form ``template`` shows earlier calls in: objects and our ids if it can."""
    arguments = {"value": _PROBE_VALUE}
    string_arguments = not _shows_call(template, arguments, _SHORT_ID) and _shows_call(
        template, json.dumps(arguments), _SHORT_ID
    )
    probed = json.dumps(arguments) if string_arguments else arguments
    short_ids = not _shows_call(template, probed, _LONG_ID) and _shows_call(
        template, probed, _SHORT_ID
    )
    return CallForm(string_arguments, short_ids)


def _shows_call(template: ChatTemplate, arguments: object, call_id: str) -> bool:
    """Whether ``template`` renders a call with these arguments and id, and its result."""
    call: dict[str, Any] = {
        "id": call_id,
        "type": "function",
        "function": {"name": "probe", "arguments": arguments},
    }
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": "Probe."},
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call_id, "content": "Done."},
    ]
    try:
        return _PROBE_VALUE in template.render(messages, tools=[_PROBE_TOOL])
    except ChatTemplateError:
        return False


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | str | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    """``tojson`` as transformers defines it: plain ``json.dumps`` (Jinja's own escapes HTML
    characters, which would change the prompt), with its options exposed. An iterator, such
    as ``tools | map(attribute='function')``, is written as the list it yields."""
    return json.dumps(
        value,
        ensure_ascii=ensure_ascii,
        indent=indent,
        separators=separators,
        sort_keys=sort_keys,
        default=_iterator_as_list,
    )


def _iterator_as_list(value: object) -> list[Any]:
    if isinstance(value, Iterator):
        return list(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")
