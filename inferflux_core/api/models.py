"""``GET /v1/models`` and ``GET /v1/models/{model_id}``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import falcon.asgi

if TYPE_CHECKING:
    from inferflux_core.engine import Engine, LoadedModel


def model_object(model: LoadedModel) -> dict[str, Any]:
    """OpenAI's model object, with the context length as vLLM reports it."""
    return {
        "id": model.name,
        "object": "model",
        "created": model.created,
        "owned_by": "inferflux",
        "max_model_len": model.backend.info.context_length,
    }


class ModelsResource:
    """The loaded models."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        """Every loaded model."""
        resp.media = {
            "object": "list",
            "data": [model_object(m) for m in self._engine.models.values()],
        }

    async def on_get_one(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, model_id: str
    ) -> None:
        """One model, or 404."""
        resp.media = model_object(self._engine.model(model_id))
