"""``GET /v1/models`` and ``GET /v1/models/{model_id}``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import falcon.asgi

from inferflux_core.auth.projects import ProjectScope
from inferflux_core.auth.scopes import MODELS_READ
from inferflux_core.engine.adapters import qualified_name

if TYPE_CHECKING:
    from inferflux_core.config import AdapterConfig
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
    }


def adapter_object(model: ServedModel, adapter: AdapterConfig) -> dict[str, Any]:
    """A LoRA adapter's model object: ``BASE:ADAPTER``, with ``parent`` as vLLM shows it."""
    return {
        **model_object(model),
        "id": qualified_name(model.name, adapter.name),
        "parent": model.name,
    }


def model_objects(model: ServedModel) -> list[dict[str, Any]]:
    """The model's object and one per adapter of it."""
    return [model_object(model)] + [adapter_object(model, a) for a in model.config.adapters]


class ModelsResource:
    """The loaded models (and their adapters) a caller may see and use."""

    scopes = {"GET": MODELS_READ}

    def __init__(self, engine: Engine, projects: ProjectScope | None = None) -> None:
        self._engine = engine
        self._projects = projects or ProjectScope(engine.models)

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        """Every loaded model and adapter the caller's project and allow-list admit."""
        principal = req.context.exchange.principal
        resp.media = {
            "object": "list",
            "data": [
                entry
                for m in list(self._engine.models.values())
                for entry in model_objects(m)
                if principal is None
                or (
                    principal.may_use(entry["id"])
                    and self._projects.visible(principal, entry["id"])
                )
            ],
        }

    async def on_get_one(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, model_id: str
    ) -> None:
        """One model or adapter; 404 if it is not loaded or belongs to another project, 403
        if the caller's allow-list does not admit it."""
        principal = req.context.exchange.principal
        if principal is not None:
            self._projects.require_visible(principal, model_id)
            principal.require_model(model_id)
        model, adapter = self._engine.resolve(model_id)
        resp.media = model_object(model) if adapter is None else adapter_object(model, adapter)
