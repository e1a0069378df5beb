"""``GET /v1/models`` and ``GET /v1/models/{model_id}``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import falcon.asgi

from inferflux_core.auth.scopes import MODELS_READ

if TYPE_CHECKING:
    from inferflux_core.engine import Engine
    from inferflux_core.engine.engine import ServedModel


def model_object(model: ServedModel) -> dict[str, Any]:
    """OpenAI's model object, with the context length as vLLM reports it."""
    return {
        "id": model.name,
        "object": "model",
        "created": model.created,
        "owned_by": "inferflux",
        "max_model_len": model.context_length,
        "sampling_defaults": dict(model.sampling_defaults),
    }


class ModelsResource:
    """The loaded models a caller may use."""

    scopes = {"GET": MODELS_READ}

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        """Every loaded model the caller's allow-list admits."""
        principal = req.context.exchange.principal
        resp.media = {
            "object": "list",
            "data": [
                model_object(m)
                for m in self._engine.models.values()
                if principal is None or principal.may_use(m.name)
            ],
        }

    async def on_get_one(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, model_id: str
    ) -> None:
        """One model; 403 if the caller may not use it, 404 if it is not loaded."""
        principal = req.context.exchange.principal
        if principal is not None:
            principal.require_model(model_id)
        resp.media = model_object(self._engine.model(model_id))
