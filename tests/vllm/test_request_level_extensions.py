"""The engine extensions the ``vllm`` backend needs, tested in isolation with clearly named
test doubles (runs in every venv): a backend whose engine died marks its model failed; a
forced tool call reaches a backend that applies grammars as a grammar constraint; backends'
own Prometheus collectors appear on the engine's metrics, each once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from prometheus_client.core import GaugeMetricFamily

from inferflux_core.config import Settings
from inferflux_core.contracts import (
    ChatMessage,
    InferenceEvent,
    InferenceRequest,
    RequestBackend,
    RequestBackendSpec,
    ToolChoice,
    ToolSpec,
)
from inferflux_core.engine import Engine
from inferflux_core.errors import FatalBackendError, ModelFailedError
from inferflux_core.hookspecs import hookimpl
from inferflux_core.metrics import EngineMetrics
from tests.request_backend_double import NAME, EchoDoublePlugin, EchoRequestBackend

RUNS_WITHOUT_VLLM = True


class DeadEngineDouble(RequestBackend):
    """Test double: a request-level backend whose engine died before the first request."""

    def __init__(self, spec: RequestBackendSpec) -> None:
        self.spec = spec
        self.calls = 0

    async def generate(self, request: InferenceRequest) -> AsyncIterator[InferenceEvent]:
        self.calls += 1
        raise FatalBackendError("the engine core died (test double)")
        yield  # an async generator

    async def abort(self, request_id: str) -> None:
        return None


class DeadEnginePlugin:
    """Registers :class:`DeadEngineDouble` as ``dead_engine_double``."""

    @hookimpl
    def register_backends(self) -> dict[str, type[RequestBackend]]:
        return {"dead_engine_double": DeadEngineDouble}


class FamilyCollectorDouble:
    """Test double of a backend's own Prometheus collector: one gauge family."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("double:queue_depth", "a test double's gauge")
        family.add_metric([], 3.0)
        yield family

    def describe(self) -> Iterator[GaugeMetricFamily]:
        return iter(())


def engine_with(backend: str, **options: Any) -> Engine:
    settings = Settings.model_validate(
        {
            "auth": {"mode": "disabled"},
            "models": [{"name": "m", "source": "x", "backend": backend, "options": options}],
        }
    )
    plugins = [("dead_engine_double", DeadEnginePlugin()), ("echo_double", EchoDoublePlugin())]
    return Engine(settings, extra_plugins=plugins)


def test_a_fatal_backend_error_marks_the_model_failed_and_refuses_at_once() -> None:
    async def scenario() -> None:
        engine = engine_with("dead_engine_double")
        await engine.start()
        try:
            model: Any = engine.models["m"]
            request = InferenceRequest("m", messages=(ChatMessage("user", "hi"),))
            with pytest.raises(FatalBackendError):
                await engine.open(request)
            assert model.failure == "the engine core died (test double)"
            readiness = await model.runner.readiness()
            assert not readiness.ready and "engine core died" in (readiness.reason or "")
            with pytest.raises(ModelFailedError):
                await engine.open(request)
            assert model.backend.calls == 1  # refused before the backend, at once
        finally:
            await engine.stop()

    asyncio.run(scenario())


def test_a_forced_tool_call_is_a_grammar_for_a_backend_that_applies_grammars() -> None:
    async def scenario() -> InferenceRequest:
        engine = engine_with(NAME, capabilities={"input": "messages", "grammar": True})
        await engine.start()
        try:
            request = InferenceRequest(
                "m",
                messages=(ChatMessage("user", "weather?"),),
                tools=(ToolSpec("get_weather", parameters={"type": "object", "properties": {}}),),
                tool_choice=ToolChoice("function", "get_weather"),
            )
            await engine.collect(request)
            backend = engine.models["m"].backend
            assert isinstance(backend, EchoRequestBackend)
            return backend.requests[-1]
        finally:
            await engine.stop()

    sent = asyncio.run(scenario())
    assert sent.constraint is not None and sent.constraint.kind == "grammar"
    assert sent.constraint.param == "tool_choice"
    assert "get_weather" in (sent.constraint.grammar or "")
    assert sent.tools == ()  # written into the prompt; the calls are parsed from the text


def test_backend_collectors_are_exported_each_once() -> None:
    metrics = EngineMetrics()
    shared = FamilyCollectorDouble()
    metrics.forward_backend_collectors(lambda: [shared, shared])
    text = metrics.render().decode()
    assert text.count("double:queue_depth 3.0") == 1
