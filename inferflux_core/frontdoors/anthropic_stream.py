"""Typed events as Anthropic's stream: ``message_start``, then per content block
``content_block_start`` / ``content_block_delta`` (``text_delta``, ``input_json_delta``) /
``content_block_stop``, then ``message_delta`` (``stop_reason``, usage) and ``message_stop``.

``message_start`` waits for the first event, so it carries the prompt's token count (a
step-level model reports it first); a ``ping`` follows it, as Anthropic sends one. Text
opens a text block, each tool call a ``tool_use`` block; a block is closed when the next one
opens or the choice finishes. A guardrail's block ends the message at once with
``stop_reason: "refusal"``. (A failure mid-stream is an ``error`` event, written by the HTTP
layer.)
"""

from __future__ import annotations

from typing import Any

from inferflux_core.contracts.generation import (
    Finish,
    InferenceEvent,
    TextDelta,
    ToolCallDelta,
    UsageReport,
)
from inferflux_core.frontdoors.anthropic_wire import (
    message_object,
    stop_reason,
    tool_use_id,
    usage_object,
)
from inferflux_core.frontdoors.driver import Call, Chunk


class MessageEvents:
    """One Messages request's typed events as Anthropic's stream events (one choice)."""

    def __init__(self, call: Call) -> None:
        self._call = call
        self._usage = UsageReport(0, 0)
        self._started = False
        self._blocks = 0  # blocks opened so far
        self._open: str | None = None  # the open block's type
        self._calls: dict[int, int] = {}  # tool call -> its block's index
        self._reason = "end_turn"
        self._stop_sequence: str | None = None
        self._ended = False

    def start(self) -> list[Chunk]:
        """Nothing yet: ``message_start`` waits for the prompt's usage."""
        return []

    def event(self, event: InferenceEvent) -> list[Chunk]:
        """The stream events for one typed event."""
        out: list[Chunk] = []
        if isinstance(event, UsageReport):
            self._usage = event
            return self._begin(out)
        self._begin(out)
        if isinstance(event, TextDelta):
            if event.text and not event.echo:
                if self._open != "text":
                    self._open_block(out, {"type": "text", "text": ""})
                out.append(self._delta({"type": "text_delta", "text": event.text}))
        elif isinstance(event, ToolCallDelta):
            self._tool_call(out, event)
        elif isinstance(event, Finish):
            self._finish(out, event)
        return out

    def end(self, usage: UsageReport) -> list[Chunk]:
        """``message_delta`` with the stop reason and the final usage, then ``message_stop``."""
        self._usage = usage
        out: list[Chunk] = []
        self._begin(out)
        return self._end(out)

    # -- pieces ---------------------------------------------------------------------------

    def _begin(self, out: list[Chunk]) -> list[Chunk]:
        if not self._started:
            self._started = True
            message = message_object(self._call, [], self._usage)
            out.append({"type": "message_start", "message": message})
            out.append({"type": "ping"})
        return out

    def _tool_call(self, out: list[Chunk], event: ToolCallDelta) -> None:
        if event.id is not None:
            block = {
                "type": "tool_use",
                "id": tool_use_id(event.id),
                "name": event.name or "",
                "input": {},
            }
            self._calls[event.call] = self._open_block(out, block)
        if event.arguments:
            index = self._calls.get(event.call, self._blocks - 1)
            delta = {"type": "input_json_delta", "partial_json": event.arguments}
            out.append(self._delta(delta, index))

    def _finish(self, out: list[Chunk], event: Finish) -> None:
        if self._blocks == 0:  # an empty answer still has its (empty) text block
            self._open_block(out, {"type": "text", "text": ""})
        self._close(out)
        self._reason = stop_reason(event.reason, event.stop_sequence)
        if self._reason == "stop_sequence":
            self._stop_sequence = event.stop_sequence
        if event.reason == "content_filter":  # the driver ends the stream here
            self._end(out)

    def _open_block(self, out: list[Chunk], block: dict[str, Any]) -> int:
        self._close(out)
        index = self._blocks
        self._blocks += 1
        self._open = block["type"]
        out.append({"type": "content_block_start", "index": index, "content_block": block})
        return index

    def _close(self, out: list[Chunk]) -> None:
        if self._open is not None:
            out.append({"type": "content_block_stop", "index": self._blocks - 1})
            self._open = None

    def _delta(self, delta: dict[str, Any], index: int | None = None) -> Chunk:
        at = self._blocks - 1 if index is None else index
        return {"type": "content_block_delta", "index": at, "delta": delta}

    def _end(self, out: list[Chunk]) -> list[Chunk]:
        if self._ended:
            return out
        self._ended = True
        self._close(out)
        out.append(
            {
                "type": "message_delta",
                "delta": {"stop_reason": self._reason, "stop_sequence": self._stop_sequence},
                "usage": usage_object(self._usage),
            }
        )
        out.append({"type": "message_stop"})
        return out
