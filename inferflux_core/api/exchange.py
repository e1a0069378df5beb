"""One request's record as it passes the HTTP layer: who, which model, what it used.

The access middleware creates it before routing and closes it once the response is complete
(after the last SSE event for a stream): then the tokens are charged to the key's rate limit
and the audit line is written.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from inferflux_core.auth.principal import Principal
from inferflux_core.contracts import GuardrailInput
from inferflux_core.contracts.generation import Finish, InferenceEvent, TextDelta, ToolCallDelta
from inferflux_core.engine.collect import Collected
from inferflux_core.frontdoors.usage import Usage


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
    #: Which guardrail stage blocked it: ``input`` (the prompt); None: not the prompt.
    blocked: str | None = None

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

    def record_result(self, result: Collected) -> None:
        """Keep a complete response's choice texts (a choice's tool calls count as their name
        and arguments, so the audit hash sees them too)."""
        self.response_parts = [
            choice.echo
            + choice.text
            + "".join(call.name + call.arguments for call in choice.tool_calls)
            for choice in result.choices
        ]

    def observe(self, event: InferenceEvent) -> None:
        """Keep the text of a streamed event the client is sent, for the audit line."""
        if self.response_parts is None:
            self.response_parts = []
        if isinstance(event, TextDelta):
            self.response_parts.append(event.text)
        elif isinstance(event, ToolCallDelta):
            self.response_parts.append((event.name or "") + event.arguments)
        else:
            self.observe_finish(event)

    def observe_finish(self, event: InferenceEvent) -> None:
        """Note a streamed output a guardrail blocked (for the audit line and the metrics)."""
        if isinstance(event, Finish) and event.reason == "content_filter":
            self.code = "content_blocked"

    def observer(self, audit: bool) -> Callable[[InferenceEvent], None]:
        """What sees a stream's events: everything with ``audit`` on, the finish otherwise."""
        return self.observe if audit else self.observe_finish

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
