"""The per-request usage meter the access layer charges, kept up to date from typed usage."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from inferflux_core.contracts.generation import InferenceEvent, UsageReport


@dataclass(slots=True)
class Usage:
    """Tokens one request has used so far, from the engine's :class:`UsageReport` events.

    The HTTP layer passes one in to charge rate limits and write the audit line, streaming
    or not, whether or not the client asked for usage, and also when a stream is cut short.
    A request of several engine requests (completions with a list of prompts) may report
    each one's usage as ``part`` until their usage is reported summed.
    """

    #: The rate limiter's reservation (set by the access layer): called by :meth:`reserve`,
    #: it raises a 429 when the tokens do not fit the key's limit.
    on_reserve: Callable[[int], None] | None = None
    reserved: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    _parts: dict[int | None, UsageReport] | None = None

    def reserve(self, n_tokens: int) -> None:
        """Set aside the most tokens the request can use; called before it is submitted."""
        if self.on_reserve is not None:
            self.on_reserve(n_tokens)
        self.reserved += n_tokens

    def record(self, report: UsageReport, part: int | None = None) -> None:
        """Engine request ``part`` has used ``report`` so far; without ``part``, ``report``
        is the whole request's."""
        parts = self._parts if self._parts is not None and part is not None else {}
        self._parts = parts
        parts[part] = report
        self.prompt_tokens = sum(r.prompt_tokens for r in parts.values())
        self.completion_tokens = sum(r.completion_tokens for r in parts.values())

    def observe(self, event: InferenceEvent) -> None:
        """Record ``event`` if it is a usage report (of the only part)."""
        if isinstance(event, UsageReport):
            self.record(event)

    @property
    def total_tokens(self) -> int:
        """Prompt plus completion tokens."""
        return self.prompt_tokens + self.completion_tokens

    def report(self) -> UsageReport:
        """The usage so far as one report."""
        return UsageReport(self.prompt_tokens, self.completion_tokens)


def usage_object(report: UsageReport) -> dict[str, int]:
    """OpenAI's ``usage`` object."""
    return {
        "prompt_tokens": report.prompt_tokens,
        "completion_tokens": report.completion_tokens,
        "total_tokens": report.total_tokens,
    }
