"""Tokenizing and detokenizing with a loaded model's vocabulary (vLLM's endpoints)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from inferflux_core.engine.prepare import check_token_ids
from inferflux_core.engine.workers import WorkerPool
from inferflux_core.protocol.common import parse_body
from inferflux_core.protocol.tokens import DetokenizeRequest, TokenizeRequest

if TYPE_CHECKING:
    from inferflux_core.engine import Engine
    from inferflux_core.engine.model import LoadedModel


class TokenService:
    """``{"tokens", "count", "max_model_len"}`` and ``{"prompt"}`` from request bodies."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.pool: WorkerPool = engine.pool

    async def tokenize(self, body: Any) -> dict[str, Any]:
        """The token ids of a prompt, or of a conversation rendered by the chat template
        (tokenized in the worker pool)."""
        return await self.pool.run(self._tokenize, body)

    async def detokenize(self, body: Any) -> dict[str, Any]:
        """The text of token ids (400 for an id outside the vocabulary), in the worker pool."""
        return await self.pool.run(self._detokenize, body)

    def _tokenize(self, body: Any) -> dict[str, Any]:
        request = parse_body(TokenizeRequest, body)
        model = self.engine.step_model(request.model, "tokenizing")
        tokens = _tokens(model, request)
        return {
            "tokens": tokens,
            "count": len(tokens),
            "max_model_len": model.backend.info.context_length,
        }

    def _detokenize(self, body: Any) -> dict[str, Any]:
        request = parse_body(DetokenizeRequest, body)
        model = self.engine.step_model(request.model, "tokenizing")
        check_token_ids(model, request.tokens, "tokens")
        return {"prompt": model.backend.detokenize(request.tokens)}

    def model_name(self, body: Any) -> str | None:
        """The body's ``model``, if it names one (for the caller's model allow-list)."""
        model = body.get("model") if isinstance(body, dict) else None
        return model if isinstance(model, str) else None


def _tokens(model: LoadedModel, request: TokenizeRequest) -> list[int]:
    if request.messages is not None:
        messages: list[dict[str, object]] = [
            {"role": m.role, "content": m.text(i)} for i, m in enumerate(request.messages)
        ]
        text = model.render_chat(messages, add_generation_prompt=request.add_generation_prompt)
        add_special = bool(request.add_special_tokens)
    else:
        text = request.prompt or ""
        add_special = request.add_special_tokens is not False
    if add_special:
        return model.tokenize_prompt(text)
    return model.backend.tokenize(text, add_special=False)
