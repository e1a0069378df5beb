"""The stage in front of a request-level backend: the request made to fit what it takes.

A backend that takes ``tokens`` gets the conversation rendered by its chat template and
tokenized by its tokenizer; one without ``native_tools`` gets the tools written into the
system prompt (the fallback format) and its text parsed for calls, as a step-level model's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable

from inferflux_core.contracts.generation import (
    ChatMessage,
    Finish,
    InferenceEvent,
    InferenceRequest,
    OutputConstraint,
    TextDelta,
    ToolChoice,
)
from inferflux_core.engine.chat_prompt import check_continuation, render_conversation
from inferflux_core.engine.collect import Primed
from inferflux_core.engine.request_model import RequestModel
from inferflux_core.engine.request_runner import check_capabilities
from inferflux_core.engine.sampling_defaults import apply_sampling_defaults
from inferflux_core.engine.workers import WorkerPool
from inferflux_core.errors import InvalidRequestError
from inferflux_core.tools import NO_TOOLS, ChoiceOutput, ToolPlan, conversation, plan_tools


def fit_request(
    model: RequestModel, request: InferenceRequest
) -> tuple[InferenceRequest, ToolPlan]:
    """``request`` as the backend takes it, and the plan for parsing tool calls out of its
    text (NO_TOOLS when the backend parses them itself). CPU work: run it in the pool."""
    capabilities = model.backend.capabilities
    check_capabilities(model.name, capabilities, request)
    options = apply_sampling_defaults(request.options, model.sampling_defaults)
    if options is not request.options:
        request = dataclasses.replace(request, options=options)
    plan = NO_TOOLS
    fitted = request
    if request.messages is not None and request.tools and not capabilities.native_tools:
        plan = plan_tools(request, None)
        rendered, _ = conversation(request.messages, plan.offered, native=False)
        messages = tuple(ChatMessage(m["role"], m["content"], name=m.get("name")) for m in rendered)
        fitted = dataclasses.replace(
            request,
            messages=messages,
            tools=(),
            tool_choice=ToolChoice(),
            constraint=forced_call_constraint(request, plan),
        )
    check_continuation(request, forced_call=plan.mode == "forced")
    if request.continue_final_message and capabilities.input != "tokens":
        raise InvalidRequestError(
            f"model {model.name!r}: its backend takes messages, so a final assistant message "
            "cannot be continued here",
            param=f"messages.{len(request.messages or ()) - 1}",
            code="unsupported",
        )
    if capabilities.input == "tokens":
        if fitted.messages is not None:
            text = render_conversation(
                model,
                fitted.messages,
                fitted.tools,
                continue_final=fitted.continue_final_message,
            )
        elif isinstance(fitted.prompt, str):
            text = fitted.prompt
        else:
            return fitted, plan
        tokens = tuple(model.backend.tokenize(text))
        fitted = dataclasses.replace(fitted, messages=None, prompt=tokens)
    return fitted, plan


def forced_call_constraint(request: InferenceRequest, plan: ToolPlan) -> OutputConstraint | None:
    """The grammar that forces ``plan``'s call, as the request's output constraint (a
    backend with ``grammar`` applies it); the request's own constraint otherwise."""
    if plan.mode != "forced" or plan.grammar is None:
        return request.constraint
    if request.constraint is not None:
        raise InvalidRequestError(
            f"{request.constraint.param}: cannot be combined with a forced tool call",
            param=request.constraint.param,
        )
    return OutputConstraint("grammar", grammar=plan.grammar, param="tool_choice")


def worst_case(model: RequestModel, request: InferenceRequest) -> int:
    """The most tokens ``request`` can use, as far as it is known before the backend runs it."""
    options = request.options
    prompt = len(request.prompt) if isinstance(request.prompt, tuple) else 0
    most = options.max_tokens or model.config.max_tokens_limit
    return prompt + most * max(options.n, options.best_of or 1)


async def request_events(
    model: RequestModel,
    request: InferenceRequest,
    pool: WorkerPool,
    reserve: Callable[[int], None] | None,
) -> AsyncIterator[InferenceEvent]:
    """Fit, admit and start ``request`` on ``model``; its events (refusals raise here)."""
    fitted, plan = await pool.run(fit_request, model, request)
    if reserve is not None:
        reserve(worst_case(model, fitted))
    events = await model.runner.open(fitted)
    if not plan.parses_calls:
        return events
    parsed = _parsed(events, plan)
    return Primed(await anext(parsed), parsed)


async def _parsed(
    events: AsyncIterator[InferenceEvent], plan: ToolPlan
) -> AsyncIterator[InferenceEvent]:
    """The backend's events with tool calls parsed out of each choice's text."""
    outputs: dict[int, ChoiceOutput] = {}
    try:
        async for event in events:
            if isinstance(event, TextDelta | Finish):
                output = outputs.setdefault(event.choice, ChoiceOutput(plan, event.choice))
                if isinstance(event, TextDelta):
                    parsed = output.push(event.text)
                    if event.logprobs and parsed and isinstance(parsed[0], TextDelta):
                        parsed[0] = dataclasses.replace(parsed[0], logprobs=event.logprobs)
                    for item in parsed:
                        yield item
                    continue
                for item in output.finish():
                    yield item
                reason = output.finish_reason(event.reason)
                yield dataclasses.replace(event, reason=reason)  # type: ignore[arg-type]
                continue
            yield event
    finally:
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            await aclose()
