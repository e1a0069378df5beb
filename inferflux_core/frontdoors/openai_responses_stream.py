"""Typed events as the Responses API's stream: ``response.created`` ... ``response.completed``.

Every event carries ``type`` (sent as the SSE ``event:`` name too) and a ``sequence_number``
increasing from 0. Text opens an assistant message item (``output_item.added``,
``content_part.added``, then ``output_text.delta``s); a tool call opens a ``function_call``
item (``function_call_arguments.delta``s). An item is closed (``...done`` events) when the
next one opens or the output ends. The last event is ``response.completed``, or
``response.incomplete`` (cut by ``max_output_tokens`` or a guardrail), or, when generation
fails, ``error`` and ``response.failed`` (:func:`failure_events`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from inferflux_core.contracts.generation import (
    Finish,
    InferenceEvent,
    TextDelta,
    TextLogprob,
    ToolCallDelta,
    UsageReport,
)
from inferflux_core.errors import InferfluxError
from inferflux_core.frontdoors.driver import Chunk
from inferflux_core.frontdoors.openai_logprobs import delta_logprobs
from inferflux_core.frontdoors.openai_responses_output import (
    ResponseTurn,
    call_item,
    message_item,
    response_object,
    text_part,
)

#: Error codes OpenAI's ``ResponseError.code`` allows, for errors of ours that fit one.
_FAILURE_CODES = {429: "rate_limit_exceeded", 400: "invalid_prompt"}


class ResponseEvents:
    """Builds the stream's events for one turn."""

    def __init__(self, turn: ResponseTurn) -> None:
        self._turn = turn
        self._output: list[dict[str, Any]] = []
        self._open: dict[str, Any] | None = None
        self._parts: list[str] = []
        #: The open message's token logprobs (only when the request asked for them).
        self._logprobs: list[TextLogprob] = []
        self._usage = UsageReport(0, 0)
        self._finish: str | None = None
        #: The last Response object sent (the one to store), once the stream ended.
        self.final: dict[str, Any] | None = None

    def start(self) -> list[Chunk]:
        """``response.created`` and ``response.in_progress``."""
        snapshot = response_object(self._turn, "in_progress", [], None)
        return [
            self._event("response.created", response=snapshot),
            self._event("response.in_progress", response=snapshot),
        ]

    def event(self, event: InferenceEvent) -> list[Chunk]:
        """The events for one typed event."""
        if isinstance(event, TextDelta):
            return self._text(event.text, event.logprobs)
        if isinstance(event, ToolCallDelta):
            return self._call(event)
        if isinstance(event, UsageReport):
            self._usage = event
            return []
        if isinstance(event, Finish):
            self._finish = event.reason
            chunks = self._close()
            if not self._output:  # no text, no call: one empty message, as a whole response
                chunks += self._text("") + self._close()
            if event.reason == "content_filter":  # the driver ends the stream here
                chunks += self._ending()
            return chunks
        return []

    def end(self, usage: UsageReport) -> list[Chunk]:
        """``response.completed`` (or ``.incomplete``) with the final usage."""
        self._usage = usage
        return self._ending()

    def failure(self, error: InferfluxError) -> list[Chunk]:
        """``error`` then ``response.failed``: what a stream that cannot go on ends with (an
        item left open is in the failed response as ``incomplete``, with no events of its own)."""
        if self._open is not None:
            self._output.append(self._final(self._open, "incomplete"))
            self._open = None
        body = error.to_body()["error"]
        code = _FAILURE_CODES.get(error.status, "server_error")
        failed = response_object(
            self._turn,
            "failed",
            self._output,
            self._usage,
            error={"code": code, "message": error.message},
        )
        return [
            self._event(
                "error",
                code=body["code"] or body["type"],
                message=error.message,
                param=body["param"],
            ),
            self._event("response.failed", response=failed),
        ]

    # -- items ------------------------------------------------------------------------------

    def _text(self, text: str, logprobs: Sequence[TextLogprob] = ()) -> list[Chunk]:
        chunks: list[Chunk] = []
        if self._open is None or self._open["type"] != "message":
            chunks += self._close()
            item = message_item(None, "in_progress")
            chunks += self._add(item)
            chunks.append(
                self._event(
                    "response.content_part.added",
                    item_id=item["id"],
                    output_index=self._index,
                    content_index=0,
                    part=text_part(""),
                )
            )
        self._parts.append(text)
        self._logprobs.extend(logprobs)
        if text:
            chunks.append(
                self._event(
                    "response.output_text.delta",
                    item_id=self._item_id,
                    output_index=self._index,
                    content_index=0,
                    delta=text,
                    logprobs=delta_logprobs(logprobs),
                )
            )
        return chunks

    def _call(self, event: ToolCallDelta) -> list[Chunk]:
        chunks: list[Chunk] = []
        if event.id is not None:
            chunks += self._close()
            chunks += self._add(call_item(event.id, event.name or "", "", "in_progress", None))
        if self._open is None or not event.arguments:
            return chunks
        self._parts.append(event.arguments)
        chunks.append(
            self._event(
                "response.function_call_arguments.delta",
                item_id=self._item_id,
                output_index=self._index,
                delta=event.arguments,
            )
        )
        return chunks

    def _add(self, item: dict[str, Any]) -> list[Chunk]:
        self._open = item
        self._parts = []
        self._logprobs = []
        return [self._event("response.output_item.added", output_index=self._index, item=item)]

    def _close(self) -> list[Chunk]:
        """The ``...done`` events of the open item, if any."""
        item = self._open
        if item is None:
            return []
        self._open = None
        done = "".join(self._parts)
        status = "incomplete" if self._finish in ("length", "content_filter") else "completed"
        final = self._final(item, status)
        where = {"item_id": item["id"], "output_index": self._index}
        if item["type"] == "message":
            chunks = [
                self._event(
                    "response.output_text.done",
                    **where,
                    content_index=0,
                    text=done,
                    logprobs=delta_logprobs(self._logprobs),
                ),
                self._event(
                    "response.content_part.done",
                    **where,
                    content_index=0,
                    part=text_part(done, self._logprobs),
                ),
            ]
        else:
            chunks = [
                self._event(
                    "response.function_call_arguments.done",
                    **where,
                    name=item["name"],
                    arguments=done,
                )
            ]
        chunks.append(
            self._event("response.output_item.done", output_index=self._index, item=final)
        )
        self._output.append(final)
        return chunks

    def _final(self, item: dict[str, Any], status: str) -> dict[str, Any]:
        """The open ``item`` as it ends, with everything streamed into it."""
        done = "".join(self._parts)
        if item["type"] == "message":
            return message_item(done, status, item["id"], self._logprobs)
        return call_item(item["call_id"], item["name"], done, status, item["id"])

    def _ending(self) -> list[Chunk]:
        chunks = self._close()
        final = response_object(
            self._turn, "completed", self._output, self._usage, finish_reason=self._finish
        )
        self.final = final
        kind = "response.completed" if final["status"] == "completed" else "response.incomplete"
        chunks.append(self._event(kind, response=final))
        return chunks

    @property
    def _index(self) -> int:
        """The open item's ``output_index`` (closed items are in ``_output``)."""
        return len(self._output)

    @property
    def _item_id(self) -> str:
        assert self._open is not None
        return str(self._open["id"])

    def _event(self, kind: str, **fields: Any) -> Chunk:
        return {"type": kind, "sequence_number": self._turn.next_sequence(), **fields}
