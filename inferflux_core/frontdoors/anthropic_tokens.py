"""``POST /v1/messages/count_tokens``: the prompt tokens a Messages request would use.

The conversation (with its tools, as the tool plan shows them) is rendered by the model's
chat template and tokenized exactly as generation does, so the count equals the
``input_tokens`` (plus ``cache_read_input_tokens``) the same request is charged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from inferflux_core.contracts.generation import GenerationOptions, InferenceRequest
from inferflux_core.engine.model import LoadedModel
from inferflux_core.engine.prepare import render
from inferflux_core.engine.request_stage import fit_request
from inferflux_core.errors import InvalidRequestError
from inferflux_core.frontdoors.anthropic_convert import parse_wire, typed_request
from inferflux_core.protocol.anthropic import CountTokensRequest
from inferflux_core.tools import plan_tools

if TYPE_CHECKING:
    from inferflux_core.engine import Engine


class CountTokensService:
    """``{"input_tokens": N}`` for a count_tokens body, tokenized in the worker pool."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def count(self, body: Any) -> dict[str, int]:
        """The prompt tokens of the conversation in ``body``."""
        return await self.engine.pool.run(self._count, body)

    def _count(self, body: Any) -> dict[str, int]:
        wire = parse_wire(CountTokensRequest, body)
        return {"input_tokens": prompt_tokens(self.engine, typed_request(wire, OPTIONS))}


#: count_tokens has no sampling fields; the prompt does not depend on them.
OPTIONS = GenerationOptions()


def prompt_tokens(engine: Engine, request: InferenceRequest) -> int:
    """How many tokens ``request``'s prompt is on its model (400 if the model's backend takes
    text and so has no tokenizer here)."""
    model = engine.model(request.model)
    if isinstance(model, LoadedModel):
        backend = model.backend
        plan = plan_tools(
            request, backend, guidance=backend if backend.supports_llguidance else None
        )
        return len(model.tokenize_prompt(render(model, request, plan)))
    fitted, _ = fit_request(model, request)
    if not isinstance(fitted.prompt, tuple):
        raise InvalidRequestError(
            f"model {request.model!r} is served by a backend that takes text, so its tokens "
            "cannot be counted here",
            param="model",
            code="unsupported",
        )
    return len(fitted.prompt)
