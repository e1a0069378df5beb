"""A plugin's options: the pydantic model it declares, and how the core checks them.

Every contract class (:class:`~inferflux_core.contracts.StepBackend`,
:class:`~inferflux_core.contracts.Scheduler`, :class:`~inferflux_core.contracts.PolicyStore`,
:class:`~inferflux_core.contracts.Guardrail`, :class:`~inferflux_core.contracts.KVTransport`,
:class:`~inferflux_core.contracts.RequestBackend`) has a class attribute ``options_model``.
A plugin that sets it to a pydantic model (subclass :class:`PluginOptions`) owns its
options: the core validates the ``options`` mapping of its config entry against that model
before constructing it, names the full key of a bad value
(``scheduler.options.timeslice_tokens: ...``), and ``inferflux config`` and
``docs/bundled-plugins.md`` show the model's fields with their defaults. ``None`` (the
default) leaves the options unchecked: they reach the constructor as they are.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from inferflux_core.errors import ConfigError

OptionsT = TypeVar("OptionsT", bound=BaseModel)


class PluginOptions(BaseModel):
    """Base for a plugin's options model: unknown keys are an error, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def parse_options(model: type[OptionsT], options: Mapping[str, Any], key: str) -> OptionsT:
    """``options`` validated against ``model``; ConfigError naming ``key.<field>`` otherwise.

    ``key`` is where the options sit in the configuration (``scheduler.options``).
    """
    try:
        return model.model_validate(dict(options))
    except ValidationError as exc:
        problems = [
            f"{'.'.join(str(part) for part in (key, *error['loc']))}: {error['msg']}"
            for error in exc.errors()
        ]
        first = ".".join(str(part) for part in (key, *exc.errors()[0]["loc"]))
        raise ConfigError("; ".join(problems), param=first) from None


def checked_options(
    model: type[BaseModel] | None, options: Mapping[str, Any], key: str
) -> dict[str, Any]:
    """The keyword arguments to construct a plugin with: ``options`` checked against its
    ``options_model`` (defaults filled in) when it declares one, unchanged otherwise."""
    if model is None:
        return dict(options)
    return parse_options(model, options, key).model_dump()


def options_of(plugin: type) -> type[BaseModel] | None:
    """The options model a plugin class declares (``options_model``), if any."""
    model = getattr(plugin, "options_model", None)
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None
