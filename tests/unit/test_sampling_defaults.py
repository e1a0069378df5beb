"""Which sampling defaults a model gets, and which request fields they fill."""

from __future__ import annotations

from inferflux_core.config import ModelConfig, SamplingDefaults
from inferflux_core.contracts.generation import GenerationOptions
from inferflux_core.engine.sampling_defaults import (
    apply_sampling_defaults,
    metadata_sampling,
    model_sampling_defaults,
)


def test_file_values_are_read_rounded_and_bounded() -> None:
    metadata = {
        "general.sampling.temp": "0.699999988079071",  # an f32 0.7
        "general.sampling.top_k": "20",
        "general.sampling.top_p": "nan",
        "general.sampling.min_p": "7.5",  # beyond 1
        "general.sampling.penalty_repeat": "not a number",
    }
    assert metadata_sampling("m", metadata) == {"temperature": 0.7, "top_k": 20}
    assert metadata_sampling("m", {"general.sampling.top_k": "2.5"}) == {}


def test_the_config_wins_over_the_file() -> None:
    config = ModelConfig(sampling_defaults=SamplingDefaults(temperature=0.1))
    metadata = {"general.sampling.temp": "0.9", "general.sampling.top_p": "0.8"}
    assert model_sampling_defaults(config, metadata) == {"temperature": 0.1, "top_p": 0.8}


def test_only_fields_the_client_left_out_are_filled() -> None:
    options = GenerationOptions(temperature=1.0, top_p=0.5, unset=frozenset({"temperature"}))
    filled = apply_sampling_defaults(options, {"temperature": 0.2, "top_p": 0.9})
    assert (filled.temperature, filled.top_p) == (0.2, 0.5)
    assert apply_sampling_defaults(options, {}) is options
