"""``POST /v1/messages``: Anthropic's Messages wire format to typed requests and back.

The request is converted by :mod:`~inferflux_core.frontdoors.anthropic_convert`; the whole
answer is a ``message`` object with ``text`` and ``tool_use`` content blocks
(:mod:`~inferflux_core.frontdoors.anthropic_wire`); the stream is Anthropic's event sequence
(:mod:`~inferflux_core.frontdoors.anthropic_stream`).
"""

from __future__ import annotations

from typing import Any

from inferflux_core.engine.collect import Collected
from inferflux_core.frontdoors.anthropic_convert import parse_wire, sampling_options, typed_request
from inferflux_core.frontdoors.anthropic_stream import MessageEvents
from inferflux_core.frontdoors.anthropic_wire import content_blocks, message_object, stop_reason
from inferflux_core.frontdoors.driver import Call, Chunk
from inferflux_core.protocol.anthropic import MessagesRequest
from inferflux_core.tools import conversation_text


class MessagesDoor:
    """The Anthropic Messages front door."""

    endpoint = "messages"

    def parse(self, body: Any) -> Call:
        """The typed request of a Messages body."""
        wire = parse_wire(MessagesRequest, body)
        return Call((typed_request(wire, sampling_options(wire)),), wire.stream, wire)

    def input_text(self, call: Call) -> str:
        """Each message's content, labels and the tool definitions, a line each."""
        return conversation_text(call.requests[0])

    def encode(self, call: Call, result: Collected) -> Chunk:
        """A ``message``."""
        choice = result.choices[0]
        reason = stop_reason(choice.finish_reason, choice.stop_sequence)
        stop = choice.stop_sequence if reason == "stop_sequence" else None
        return message_object(call, content_blocks(choice), result.usage, reason, stop)

    def stream_encoder(self, call: Call) -> MessageEvents:
        """Anthropic's stream events."""
        return MessageEvents(call)
