"""A PII guardrail: refuse prompts that contain personal data, redact it from outputs.

Configure it under ``guardrails``::

    guardrails:
      - name: pii
        options:
          detect: [email, card]          # built-in patterns (default: all of them)
          patterns: {ticket: 'TCK-\\d+'}  # your own, by name
          refuse_input: true             # refuse prompts holding a match (default)

A prompt with a match is refused (400 ``content_blocked``, naming the kind, never the text).
Output is not refused but redacted: each match becomes ``[REDACTED:<kind>]``. A streamed
output is redacted across chunks: the filter holds back the text after the last whitespace
until it knows the word is complete, since none of the patterns spans whitespace.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from inferflux_core.contracts import (
    ALLOW,
    Guardrail,
    GuardrailInput,
    GuardrailVerdict,
    OutputFilter,
)
from inferflux_core.hookspecs import hookimpl

INFERFLUX_HOOKSPEC_VERSION = 1

BUILTIN_PATTERNS = {
    "email": r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+",
    "card": r"\b(?:\d[ -]?){12,18}\d\b",
    "phone": r"\+\d{7,15}\b",
}
_LAST_SPACE = re.compile(r"\s(?=\S*$)")


class RedactingFilter(OutputFilter):
    """Redacts one choice's output, holding back an unfinished word."""

    def __init__(self, redact: PiiGuardrail) -> None:
        self._redact = redact
        self._held = ""

    def push(self, text: str) -> tuple[str, bool]:
        """The redacted text up to the last whitespace; the rest waits for more."""
        buffer = self._held + text
        cut = _LAST_SPACE.search(buffer)
        if cut is None:
            self._held = buffer
            return "", False
        self._held = buffer[cut.end() :]
        return self._redact.redact(buffer[: cut.end()]), False

    def flush(self) -> str:
        """The last word, redacted."""
        held, self._held = self._held, ""
        return self._redact.redact(held)


class PiiGuardrail(Guardrail):
    """Refuses prompts with personal data and redacts it from output; see the module."""

    def __init__(
        self,
        *,
        detect: Sequence[str] | None = None,
        patterns: Mapping[str, str] | None = None,
        refuse_input: bool = True,
    ) -> None:
        super().__init__(detect=detect, patterns=patterns, refuse_input=refuse_input)
        chosen = list(BUILTIN_PATTERNS) if detect is None else list(detect)
        unknown = sorted(set(chosen) - set(BUILTIN_PATTERNS))
        if unknown:
            raise ValueError(f"unknown detect kinds {unknown}; known: {sorted(BUILTIN_PATTERNS)}")
        sources = {kind: BUILTIN_PATTERNS[kind] for kind in chosen} | dict(patterns or {})
        if not sources:
            raise ValueError("no patterns: set detect or patterns")
        try:
            self._patterns = {kind: re.compile(source) for kind, source in sources.items()}
        except re.error as exc:
            raise ValueError(f"invalid pattern: {exc}") from None
        self._refuse_input = refuse_input

    def find(self, text: str) -> list[str]:
        """The kinds of personal data in ``text``."""
        return [kind for kind, pattern in self._patterns.items() if pattern.search(text)]

    def redact(self, text: str) -> str:
        """``text`` with every match replaced by ``[REDACTED:<kind>]``."""
        for kind, pattern in self._patterns.items():
            text = pattern.sub(f"[REDACTED:{kind}]", text)
        return text

    async def check_input(self, request: GuardrailInput) -> GuardrailVerdict:
        """Refuse a prompt holding personal data (unless ``refuse_input`` is off)."""
        found = self.find(request.text) if self._refuse_input else []
        if found:
            kinds = ", ".join(found)
            return GuardrailVerdict(False, f"the prompt contains personal data ({kinds})")
        return ALLOW

    def output_filter(self, request: GuardrailInput) -> OutputFilter:
        """A redacting filter for one choice."""
        return RedactingFilter(self)


@hookimpl
def register_guardrails() -> dict[str, type[Guardrail]]:
    """The PII guardrail, as ``pii``."""
    return {"pii": PiiGuardrail}
