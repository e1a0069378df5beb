"""The engine: models, step loops and requests, usable without HTTP: typed requests in,
typed events out."""

from inferflux_core.engine.engine import Engine
from inferflux_core.engine.model import LoadedModel
from inferflux_core.engine.request_model import RequestModel
from inferflux_core.engine.requests import GenerationEvent, GenerationRequest
from inferflux_core.engine.stream import RequestStream

__all__ = [
    "Engine",
    "GenerationEvent",
    "GenerationRequest",
    "LoadedModel",
    "RequestModel",
    "RequestStream",
]
