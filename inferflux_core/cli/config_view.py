"""``inferflux config``: the effective configuration, with each plugin's options as its
options model fills them in (defaults included), checked as a model load would check them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from inferflux_core.config import Settings
from inferflux_core.contracts.options import options_of, parse_options
from inferflux_core.engine.backend_choice import AUTO, choose_backend
from inferflux_core.errors import PluginError
from inferflux_core.plugins import PluginHost


def effective_config(settings: Settings, host: PluginHost) -> dict[str, Any]:
    """``settings`` as plain data, every plugin's ``options`` completed from its model.

    A plugin that declares no options model, or a name no plugin registers, keeps its options
    as written; an invalid option raises ConfigError naming its full key.
    """
    data = settings.model_dump(mode="json")
    scheduler = settings.scheduler
    data["scheduler"]["options"] = plugin_options(
        host, "schedulers", scheduler.name, scheduler.options, "scheduler.options"
    )
    for entry, model in zip(data["models"], settings.models, strict=True):
        if model.backend == AUTO:
            # what `backend: auto` resolves to on this machine, as a model load resolves it
            model = choose_backend(model, host).config
            entry["backend"] = model.backend
        entry["options"] = plugin_options(
            host, "backends", model.backend, model.options, f"models.{model.name}.options"
        )
    policy = settings.policy
    data["policy"]["options"] = plugin_options(
        host, "policy_stores", policy.store, policy.options, "policy.options"
    )
    for i, (entry, guardrail) in enumerate(
        zip(data["guardrails"], settings.guardrails, strict=True)
    ):
        entry["options"] = plugin_options(
            host, "guardrails", guardrail.name, guardrail.options, f"guardrails.{i}.options"
        )
    return data


def plugin_options(
    host: PluginHost, family: str, name: str, options: Mapping[str, Any], key: str
) -> dict[str, Any]:
    """``options`` of plugin ``name`` in ``family``, completed from its options model."""
    try:
        model = options_of(host.get(family, name))
    except PluginError:
        model = None
    if model is None:
        return dict(options)
    return parse_options(model, options, key).model_dump(mode="json")
