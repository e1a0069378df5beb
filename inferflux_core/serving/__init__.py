"""The OpenAI serving layer: request bodies in, OpenAI response objects out."""

from inferflux_core.serving.chat import ChatService
from inferflux_core.serving.common import Usage
from inferflux_core.serving.completions import CompletionService

__all__ = ["ChatService", "CompletionService", "Usage"]
