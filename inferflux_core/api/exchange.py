"""One request's record as it passes the HTTP layer: who, which model, what it used.

The access middleware creates it before routing and closes it once the response is complete
(after the last SSE event for a stream): then the tokens are charged to the key's rate limit
and the audit line is written.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from inferflux_core.auth.principal import Principal
from inferflux_core.contracts import GuardrailInput
from inferflux_core.serving import Usage


@dataclass(eq=False, slots=True)
class Exchange:
    """What the audit log and the token bucket need to know about one request."""

    request_id: str
    method: str
    path: str
    started: float = field(default_factory=time.monotonic)
    principal: Principal | None = None
    model: str | None = None
    endpoint: str | None = None
    usage: Usage = field(default_factory=Usage)
    prompt: str | None = None
    response_parts: list[str] | None = None
    stream: bool = False
    code: str | None = None
    closed: bool = False

    def guardrail_input(self) -> GuardrailInput:
        """What guardrails are told about this request."""
        principal = self.principal
        return GuardrailInput(
            text=self.prompt or "",
            model=self.model or "",
            endpoint=self.endpoint or "",
            request_id=self.request_id,
            key_id=principal.key_id if principal else None,
            scopes=tuple(sorted(principal.scopes)) if principal else (),
        )

    def record_response(self, result: dict[str, Any]) -> list[str]:
        """Keep a complete response's choice texts; returns them."""
        texts = [choice_text(c) for c in result.get("choices", ())]
        self.response_parts = texts
        return texts

    async def tap(self, chunks: AsyncIterator[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
        """Pass chunks through, keeping their text for the audit line."""
        parts: list[str] = []
        self.response_parts = parts
        try:
            async for chunk in chunks:
                for choice in chunk.get("choices", ()):
                    parts.append(choice_text(choice))
                    if choice.get("finish_reason") == "content_filter":
                        self.code = "content_blocked"
                yield chunk
        finally:
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                await aclose()

    @property
    def response(self) -> str | None:
        """The response text (choices concatenated in order), if one was recorded."""
        return None if self.response_parts is None else "".join(self.response_parts)

    def audit_entry(self, status: int) -> dict[str, Any]:
        """The audit line's fields (without prompt and response)."""
        principal = self.principal
        return {
            "request_id": self.request_id,
            "key_id": principal.key_id if principal else None,
            "auth": principal.kind if principal else None,
            "method": self.method,
            "path": self.path[:256],
            "model": self.model,
            "status": status,
            "code": self.code,
            "stream": self.stream,
            "prompt_tokens": self.usage.prompt_tokens,
            "completion_tokens": self.usage.completion_tokens,
            "latency_ms": round((time.monotonic() - self.started) * 1000, 1),
        }


def choice_text(choice: dict[str, Any]) -> str:
    """The text of a chat or completion choice, whole or streamed; a chat choice's tool calls
    count as their name and arguments, so guardrails and the audit hash see them too."""
    for holder in ("message", "delta"):
        inner = choice.get(holder)
        if isinstance(inner, dict):
            calls = [
                f"{call['function'].get('name') or ''}{call['function'].get('arguments') or ''}"
                for call in inner.get("tool_calls") or ()
            ]
            return (inner.get("content") or "") + "".join(calls)
    return choice.get("text") or ""
