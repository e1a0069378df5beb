"""The ``openai_upstream`` backend plugin: models served by any OpenAI-compatible server.

A request-level backend (:class:`~inferflux_core.contracts.RequestBackend`): inferflux keeps
its front doors, policy, guardrails, audit and metrics, and the upstream (vLLM, llama.cpp's
server, another inferflux, a hosted API) schedules and generates.
"""

from __future__ import annotations

from inferflux_core.contracts import RequestBackend
from inferflux_core.hookspecs import hookimpl
from inferflux_plugins.backends.openai_upstream.backend import OpenAIUpstreamBackend
from inferflux_plugins.backends.openai_upstream.options import OpenAIUpstreamOptions

#: The version of inferflux's hook contract this plugin was written against.
INFERFLUX_HOOKSPEC_VERSION = 1

__all__ = ["OpenAIUpstreamBackend", "OpenAIUpstreamOptions"]


@hookimpl
def register_backends() -> dict[str, type[RequestBackend]]:
    """Register the ``openai_upstream`` backend."""
    return {"openai_upstream": OpenAIUpstreamBackend}
