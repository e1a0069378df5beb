"""Plugins own their options: the old top-level scheduler keys still work, a model load and
``inferflux config`` check options against the plugin's model and name the full key."""

from __future__ import annotations

import inspect
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from inferflux_core.cli.config_view import effective_config
from inferflux_core.config import DEPRECATED_SCHEDULER_KEYS, ModelConfig, Settings, load_config
from inferflux_core.engine.scheduling import make_scheduler
from inferflux_core.errors import ConfigError
from inferflux_core.plugins import PluginHost
from inferflux_plugins.schedulers.continuous import ContinuousBatchingScheduler, ContinuousOptions


def test_the_old_scheduler_keys_move_into_options_with_a_warning(tmp_path: Path) -> None:
    config = tmp_path / "server.yaml"
    config.write_text("scheduler:\n  preemption: true\n  timeslice_tokens: 8\n")
    with pytest.warns(FutureWarning, match=r"scheduler\.\w+ is deprecated") as warned:
        settings = load_config(config)
    assert {str(w.message).split()[0] for w in warned} == {
        "scheduler.preemption",
        "scheduler.timeslice_tokens",
    }
    assert settings.scheduler.options == {"preemption": True, "timeslice_tokens": 8}
    assert set(DEPRECATED_SCHEDULER_KEYS) == set(ContinuousOptions.model_fields)


def test_an_explicit_option_wins_over_its_deprecated_key() -> None:
    with pytest.warns(FutureWarning):
        settings = Settings(scheduler={"preemption": True, "options": {"preemption": False}})
    assert settings.scheduler.options == {"preemption": False}


def _backend(*, preemption: bool) -> Any:
    return SimpleNamespace(supports_preemption=preemption)


def _info() -> Any:
    return SimpleNamespace(context_length=512, kv_capacity=4096)


def test_a_model_load_gives_the_scheduler_its_checked_options() -> None:
    settings = Settings(scheduler={"options": {"timeslice_tokens": 4, "preemption": True}})
    scheduler = make_scheduler(
        ContinuousBatchingScheduler,
        ModelConfig(),
        settings.scheduler,
        _info(),
        _backend(preemption=True),
    )
    assert isinstance(scheduler, ContinuousBatchingScheduler)
    assert scheduler.options == ContinuousOptions(timeslice_tokens=4, preemption=True)
    assert scheduler.limits.preemption


def test_a_bad_option_stops_the_load_naming_its_full_key() -> None:
    settings = Settings(scheduler={"options": {"timeslice_tokens": "many"}})
    with pytest.raises(ConfigError) as refused:
        make_scheduler(
            ContinuousBatchingScheduler,
            ModelConfig(),
            settings.scheduler,
            _info(),
            _backend(preemption=False),
        )
    assert refused.value.param == "scheduler.options.timeslice_tokens"
    assert refused.value.message.startswith("scheduler.options.timeslice_tokens: ")


def test_inferflux_config_shows_plugin_options_with_their_defaults() -> None:
    settings = Settings(scheduler={"options": {"preemption": True}})
    shown = effective_config(settings, PluginHost())
    assert shown["scheduler"]["options"] == {**ContinuousOptions().model_dump(), "preemption": True}
    llama_options = shown["models"][0]["options"]
    assert llama_options["batch_size"] == 512 and llama_options["repack"] == "auto"


def test_inferflux_config_refuses_an_invalid_plugin_option_naming_it() -> None:
    settings = Settings(models=[{"name": "m", "options": {"batch_size": 0}}])
    with pytest.raises(ConfigError, match=r"models\.m\.options\.batch_size: "):
        effective_config(settings, PluginHost())


@pytest.mark.parametrize(
    ("family", "name"),
    [
        ("guardrails", "blocklist"),
        ("guardrails", "opa"),
        ("policy_stores", "encrypted_file"),
        ("kv_transports", "inprocess"),
    ],
)
def test_an_options_model_agrees_with_its_plugins_keyword_constructor(
    family: str, name: str
) -> None:
    plugin = PluginHost().get(family, name)
    model = plugin.options_model
    params = {
        p.name: p.default
        for p in inspect.signature(plugin.__init__).parameters.values()
        if p.kind is p.KEYWORD_ONLY
    }
    assert set(params) == set(model.model_fields)
    for key, info in model.model_fields.items():
        if params[key] is inspect.Parameter.empty:
            assert info.is_required(), f"{name}.{key}"
            continue
        default = list(params[key]) if isinstance(params[key], tuple) else params[key]
        assert info.get_default(call_default_factory=True) == default, f"{name}.{key}"
