"""``GET /v1/models`` and ``GET /v1/models/{model_id}``.

The list holds the ready models, each with its lifecycle ``state`` as an extra field, and one
entry per alias (``root``: the model it names), as vLLM lists its served names.
``?all=true`` lists every registered model, loaded or not (docs/fleet.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import falcon.asgi

from inferflux_core.auth.scopes import MODELS_READ
from inferflux_core.engine.fleet_entry import FleetEntry, ModelState

if TYPE_CHECKING:
    from inferflux_core.engine import Engine


def model_object(entry: FleetEntry, served_as: str | None = None) -> dict[str, Any]:
    """OpenAI's model object, with the context length as vLLM reports it, the lifecycle
    state, and (for an alias) ``root``, the model's own name."""
    model = entry.model
    created = model.created if model is not None else 0
    context_length = model.context_length if model is not None else entry.config.context_length
    return {
        "id": served_as or entry.name,
        "object": "model",
        "created": created,
        "owned_by": "inferflux",
        "root": entry.name,
        "max_model_len": context_length,
        "state": entry.state.value,
        # A loaded model's defaults include its file's; a registered one shows its config's.
        "sampling_defaults": dict(model.sampling_defaults)
        if model is not None
        else entry.config.sampling_defaults.model_dump(exclude_none=True),
    }


class ModelsResource:
    """The models a caller may use."""

    scopes = {"GET": MODELS_READ}

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        """Every ready model (and its aliases) the caller's allow-list admits; every
        registered one with ``?all=true``."""
        principal = req.context.exchange.principal
        everything = req.get_param_as_bool("all", default=False)
        data = []
        for entry in self._engine.fleet.entries():
            if not everything and entry.state is not ModelState.READY:
                continue
            for served_as in (entry.name, *entry.config.aliases):
                if principal is None or principal.may_use(served_as):
                    data.append(model_object(entry, served_as))
        resp.media = {"object": "list", "data": data}

    async def on_get_one(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, model_id: str
    ) -> None:
        """One registered model (by name or alias), with its state; 403 if the caller may
        not use it, 404 if none is called so."""
        principal = req.context.exchange.principal
        if principal is not None:
            principal.require_model(model_id)
        resp.media = model_object(self._engine.fleet.entry(model_id), model_id)
