"""Rendering chat messages into a prompt with the model's Jinja template, in a sandbox.

Templates come from GGUF metadata (written by whoever made the file) or from config, never from
a request. They run in Jinja's ``ImmutableSandboxedEnvironment`` (an unsandboxed GGUF template
was llama-cpp-python's CVE-2024-34359) with a deadline and an output-size cap, so a hostile or
broken template fails one request with a clear error instead of hanging or exhausting memory.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from datetime import datetime
from typing import Any

import jinja2
import jinja2.meta
from jinja2.sandbox import ImmutableSandboxedEnvironment

from inferflux_core.errors import ChatTemplateError

DEFAULT_RENDER_SECONDS = 1.0
DEFAULT_MAX_OUTPUT_CHARS = 1_000_000


class _RenderBudget:
    """A deadline checked whenever the template calls, indexes or emits anything."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.deadline = time.monotonic() + seconds

    def check(self) -> None:
        if time.monotonic() > self.deadline:
            raise ChatTemplateError(f"chat template took longer than {self.seconds:g} s to render")


_current_budget: ContextVar[_RenderBudget | None] = ContextVar("render_budget", default=None)


class _BoundedEnvironment(ImmutableSandboxedEnvironment):
    """The immutable sandbox, plus a render deadline enforced in every intercepted operation."""

    def _check(self) -> None:
        budget = _current_budget.get()
        if budget is not None:
            budget.check()

    def call(self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        self._check()
        return super().call(__context, __obj, *args, **kwargs)

    def getitem(self, obj: Any, argument: Any) -> Any:
        self._check()
        return super().getitem(obj, argument)

    def getattr(self, obj: Any, attribute: str) -> Any:
        self._check()
        return super().getattr(obj, attribute)


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
        env = _BoundedEnvironment(trim_blocks=True, lstrip_blocks=True)
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

    def render(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        add_generation_prompt: bool = True,
        tools: Sequence[Mapping[str, Any]] | None = None,
        **extra: Any,
    ) -> str:
        """Render ``messages`` to the prompt text, within the time and size limits."""
        context = {
            "messages": [dict(m) for m in messages],
            "add_generation_prompt": add_generation_prompt,
            "bos_token": self.bos_token,
            "eos_token": self.eos_token,
            "tools": tools,
            **extra,
        }
        budget = _RenderBudget(self.max_render_seconds)
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


def _tojson(value: Any, indent: int | None = None, **_: Any) -> str:
    return json.dumps(value, indent=indent, ensure_ascii=False)
