"""``GET /v1/models`` and ``GET /v1/models/{model_id}``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import falcon.asgi

from inferflux_core.auth.projects import ProjectScope
from inferflux_core.auth.scopes import MODELS_READ
from inferflux_core.engine.adapters import qualified_name
from inferflux_core.engine.fleet import FleetConfigs
from inferflux_core.engine.fleet_entry import FleetEntry, ModelState

if TYPE_CHECKING:
    from inferflux_core.config import AdapterConfig
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


def adapter_object(entry: FleetEntry, adapter: AdapterConfig) -> dict[str, Any]:
    """A LoRA adapter's model object: ``BASE:ADAPTER``, with ``parent`` as vLLM shows it."""
    return {
        **model_object(entry),
        "id": qualified_name(entry.name, adapter.name),
        "parent": entry.name,
    }


def entry_adapters(entry: FleetEntry) -> list[AdapterConfig]:
    """The adapters of a model: its loaded config's (with those registered at runtime),
    else its registration's."""
    config = entry.model.config if entry.model is not None else entry.config
    return list(config.adapters)


def model_objects(entry: FleetEntry) -> list[dict[str, Any]]:
    """The model's object, one per alias, and one per adapter of it."""
    served = [model_object(entry, name) for name in (entry.name, *entry.config.aliases)]
    return served + [adapter_object(entry, a) for a in entry_adapters(entry)]


class ModelsResource:
    """The models (their aliases and adapters) a caller may see and use."""

    scopes = {"GET": MODELS_READ}

    def __init__(self, engine: Engine, projects: ProjectScope | None = None) -> None:
        self._engine = engine
        self._projects = projects or ProjectScope(FleetConfigs(engine.fleet))

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        """Every ready model (its aliases and adapters) the caller's project and allow-list
        admit; every registered one with ``?all=true``."""
        principal = req.context.exchange.principal
        everything = req.get_param_as_bool("all", default=False)
        data = []
        for entry in self._engine.fleet.entries():
            if not everything and entry.state is not ModelState.READY:
                continue
            for item in model_objects(entry):
                if principal is None or (
                    principal.may_use(item["id"]) and self._projects.visible(principal, item["id"])
                ):
                    data.append(item)
        resp.media = {"object": "list", "data": data}

    async def on_get_one(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, model_id: str
    ) -> None:
        """One registered model (by name, alias or ``BASE:ADAPTER``), with its state; 404 if
        none is called so or it belongs to another project, 403 if the caller's allow-list
        does not admit it."""
        principal = req.context.exchange.principal
        if principal is not None:
            self._projects.require_visible(principal, model_id)
            principal.require_model(model_id)
        base, adapter = self._engine.split_name(model_id)
        entry = self._engine.fleet.entry(base)
        if adapter is None:
            resp.media = model_object(entry, model_id)
            return
        for configured in entry_adapters(entry):
            if configured.name == adapter:
                resp.media = adapter_object(entry, configured)
                return
        self._engine.fleet.entry(model_id)  # the fleet's 404, naming the whole name
