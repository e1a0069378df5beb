"""The sampling settings a model gives requests that leave them out, as llama-server does.

For each of :data:`~inferflux_core.contracts.generation.DEFAULTABLE_SAMPLING`, the first that
sets it wins: the request; ``models[].sampling_defaults`` in the config; the model file's own
recommendation (GGUF ``general.sampling.*``, which the llama_cpp backend reports in
``ModelInfo.metadata``); OpenAI's defaults (the front door's values). So a client that sends
no temperature gets what the model's authors (or the operator) recommend, not temperature 1.0.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping

from pydantic import ValidationError

from inferflux_core.config import ModelConfig, SamplingDefaults
from inferflux_core.contracts.generation import GenerationOptions
from inferflux_core.gguf_check import SAMPLING_METADATA_KEYS

log = logging.getLogger(__name__)

Defaults = dict[str, float | int]


def model_sampling_defaults(config: ModelConfig, metadata: Mapping[str, str]) -> Defaults:
    """The defaults for model ``config`` whose backend reports ``metadata``; a field no
    layer sets is absent (the front door's OpenAI default stays)."""
    found = metadata_sampling(config.name, metadata)
    found.update(config.sampling_defaults.model_dump(exclude_none=True))
    return found


def metadata_sampling(model: str, metadata: Mapping[str, str]) -> Defaults:
    """The ``general.sampling.*`` values in ``metadata`` that are numbers within the request
    bounds; one that is not is logged and left out (a model file is not trusted)."""
    found: Defaults = {}
    for name, key in SAMPLING_METADATA_KEYS.items():
        text = metadata.get(key)
        if text is None:
            continue
        try:
            number = float(text)
            value: float | int = int(number) if name == "top_k" else float(f"{number:.6g}")
            if name == "top_k" and value != number:
                raise ValueError("not an integer")
            checked = SamplingDefaults.model_validate({name: value})
        except (ValueError, OverflowError, ValidationError) as exc:
            log.warning("model %s: ignoring %s = %s from its file: %s", model, key, text, exc)
            continue
        found[name] = getattr(checked, name)
    return found


def apply_sampling_defaults(
    options: GenerationOptions, defaults: Mapping[str, float]
) -> GenerationOptions:
    """``options`` with the fields the client left out (``options.unset``) taken from
    ``defaults``."""
    changes = {name: value for name, value in defaults.items() if name in options.unset}
    return dataclasses.replace(options, **changes) if changes else options  # type: ignore[arg-type]
