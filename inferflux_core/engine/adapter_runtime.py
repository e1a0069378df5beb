"""Registering a LoRA adapter with a model that is serving (docs/adapters.md).

The adapter file is checked off the event loop, then loaded by the model's step thread
between two steps (the only thread that calls its backend); once loaded, it is added to the
model's config, so requests can name it from then on. Nothing already running changes.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from inferflux_core.config import AdapterConfig
from inferflux_core.engine.adapters import adapter_file, check_can_serve
from inferflux_core.engine.model import LoadedModel
from inferflux_core.errors import ConfigError, InvalidRequestError, ServiceUnavailableError

if TYPE_CHECKING:
    from inferflux_core.plugins import PluginHost

#: Seconds the step thread may take to load an adapter before the caller gets a 503.
LOAD_TIMEOUT_SECONDS = 120.0
#: Adapters one model may hold (as in ``models[].adapters``).
MAX_ADAPTERS = 64


async def register_adapter(
    model: LoadedModel, adapter: AdapterConfig, host: PluginHost | None = None
) -> None:
    """Load ``adapter`` into the serving ``model``; a 400 for a name it has or a file that
    is no adapter of it, a 503 if the model stops first."""
    config = model.config
    if any(a.name == adapter.name for a in config.adapters):
        raise InvalidRequestError(
            f"model {config.name!r} has an adapter {adapter.name!r} already",
            param="name",
            code="adapter_exists",
        )
    if len(config.adapters) >= MAX_ADAPTERS:
        raise InvalidRequestError(
            f"model {config.name!r} holds {MAX_ADAPTERS} adapters, the most it may", param="name"
        )
    if model.runner.stopping or model.failure is not None:
        raise ServiceUnavailableError(f"model {config.name!r} is not serving")
    try:
        check_can_serve(config, model.backend, type(model.runner.scheduler))
        path = await asyncio.to_thread(adapter_file, config, adapter, host)
        loading = model.runner.tasks.submit(
            lambda: model.backend.load_adapter(adapter.name, path, adapter.scale)
        )
        await asyncio.wait_for(asyncio.wrap_future(loading), LOAD_TIMEOUT_SECONDS)
    except ConfigError as exc:
        raise InvalidRequestError(exc.message, param="source") from None
    except TimeoutError:
        raise ServiceUnavailableError(
            f"model {config.name!r} did not load the adapter within {LOAD_TIMEOUT_SECONDS:.0f} s"
        ) from None
    # Read again: another registration may have finished while this one loaded.
    current = model.config
    model.config = current.model_copy(update={"adapters": [*current.adapters, adapter]})
