"""Front doors: one adapter per API, wire request -> typed request, typed events -> wire.

Each generating front door (:class:`~inferflux_core.frontdoors.driver.GenerationDoor`) only
parses and encodes; the one :class:`~inferflux_core.frontdoors.driver.Driver` runs every
one of them through the engine and the guardrails, whole or streamed.
"""

from inferflux_core.frontdoors.client import OpenAIDicts
from inferflux_core.frontdoors.driver import Call, Driver, GenerationDoor, StreamEncoder
from inferflux_core.frontdoors.openai_chat import ChatDoor
from inferflux_core.frontdoors.openai_completions import CompletionsDoor
from inferflux_core.frontdoors.openai_embeddings import EmbeddingService
from inferflux_core.frontdoors.openai_responses import ResponsesDoor
from inferflux_core.frontdoors.openai_responses_store import ResponseStore
from inferflux_core.frontdoors.tokens import TokenService
from inferflux_core.frontdoors.usage import Usage

__all__ = [
    "Call",
    "ChatDoor",
    "CompletionsDoor",
    "Driver",
    "EmbeddingService",
    "GenerationDoor",
    "OpenAIDicts",
    "ResponseStore",
    "ResponsesDoor",
    "StreamEncoder",
    "TokenService",
    "Usage",
]
