"""The contract a guardrail plugin implements: judge a prompt, and optionally filter output."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import BaseModel


@dataclass(frozen=True, slots=True)
class GuardrailInput:
    """What a guardrail is told about one request."""

    text: str
    model: str
    endpoint: str
    request_id: str
    key_id: str | None = None
    scopes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class GuardrailVerdict:
    """A guardrail's answer; a refusal's ``reason`` is shown to the client."""

    allowed: bool
    reason: str = ""


ALLOW = GuardrailVerdict(True)


class OutputFilter(ABC):
    """Watches one choice's streamed text and holds back what might still become blocked.

    The engine pushes every piece of text as it is generated; the filter returns the part
    that is safe to send now. Text that could be the start of something blocked is held until
    it is known not to be, so a blocked phrase split across chunks is still caught.
    """

    @abstractmethod
    def push(self, text: str) -> tuple[str, bool]:
        """Add generated text; returns (text safe to send now, whether output is blocked)."""

    @abstractmethod
    def flush(self) -> str:
        """The output ended: whatever is still held back (it was not blocked)."""


class Guardrail(ABC):
    """A check every generation request passes through, configured under ``guardrails``.

    Constructed with the entry's ``options`` as keyword arguments (raise ``ValueError`` or
    ``TypeError`` for a bad one: startup stops naming the entry). A guardrail that raises
    while serving fails closed: the request is refused with 503 ``guardrail_unavailable`` and
    the error is logged with the guardrail's and the plugin's names. Guardrails must be safe
    to call concurrently.
    """

    #: The pydantic model of this plugin's ``options`` (see
    #: :mod:`inferflux_core.contracts.options`), or None to take them unchecked.
    options_model: ClassVar[type[BaseModel] | None] = None

    def __init__(self, **options: Any) -> None:
        self.options = options

    @abstractmethod
    async def check_input(self, request: GuardrailInput) -> GuardrailVerdict:
        """Judge the prompt before anything is generated."""

    def output_filter(self, request: GuardrailInput) -> OutputFilter | None:
        """A fresh filter for one choice's output, or None to leave output unchecked."""
        return None

    async def close(self) -> None:  # noqa: B027 - optional, not abstract
        """Release connections when the server stops (default: nothing to release)."""
