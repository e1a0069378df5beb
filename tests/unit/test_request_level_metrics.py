"""A request-level model reports through the same metric families as a step-level one: the
engine's request runner times each choice, and what the backend knows better (KV usage, its
own queue, prefix cache and preemptions) is brought in at each scrape, counted once.

The backend is the clearly named test double ``EchoRequestBackend``, reporting set numbers.
"""

from __future__ import annotations

import asyncio
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from inferflux_core.config import Settings
from inferflux_core.contracts import ChatMessage, InferenceRequest, UsageReport
from inferflux_core.engine import Engine
from inferflux_core.hookspecs import hookimpl
from tests.request_backend_double import EchoRequestBackend

MODEL = {"model_name": "echo", "engine": "0"}


class ReportingEcho(EchoRequestBackend):
    """The echo double, reporting what a vLLM backend reports of itself."""

    report: dict[str, float] = {}
    broken: str | None = None

    def metrics(self) -> dict[str, float]:
        return dict(ReportingEcho.report)

    def failure(self) -> str | None:
        return ReportingEcho.broken


class ReportingEchoPlugin:
    """Registers ``ReportingEcho`` as the backend ``reporting_echo``."""

    @hookimpl
    def register_backends(self) -> dict[str, Any]:
        return {"reporting_echo": ReportingEcho}


def scrape(engine: Engine) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = engine.metrics.render().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return samples.get((name, frozenset({**MODEL, **labels}.items())), 0.0)


def test_a_request_level_model_reports_through_the_same_families() -> None:
    ReportingEcho.broken = None
    ReportingEcho.report = {
        "num_requests_running": 0.0,
        "num_requests_waiting": 2.0,
        "kv_cache_usage_perc": 0.25,
        "prefix_cache_queries": 100.0,
        "prefix_cache_hits": 40.0,
        "num_preemptions": 3.0,
    }
    settings = Settings.model_validate(
        {"models": [{"name": "echo", "source": "x", "backend": "reporting_echo"}]}
    )
    engine = Engine(settings, extra_plugins=[("reporting_echo", ReportingEchoPlugin())])

    async def scenario() -> tuple[UsageReport, list[Any]]:
        await engine.start()
        try:
            request = InferenceRequest("echo", messages=(ChatMessage("user", "one two three"),))
            events = [event async for event in engine.generate(request)]
            first = scrape(engine)
            ReportingEcho.report |= {"prefix_cache_queries": 150.0, "prefix_cache_hits": 60.0}
            second = scrape(engine)
            ReportingEcho.broken = "the double broke"
            third = scrape(engine)
        finally:
            await engine.stop()
        usage = [e for e in events if isinstance(e, UsageReport)][-1]
        return usage, [first, second, third]

    usage, (first, second, third) = asyncio.run(scenario())
    assert value(first, "inferflux_request_success_total", finished_reason="stop") == 1
    for histogram in ("time_to_first_token_seconds", "e2e_request_latency_seconds"):
        labels = {"model": "echo"} if histogram.startswith("time_to") else {}
        assert value(first, f"inferflux_{histogram}_count", **labels) == 1
    assert value(first, "inferflux_inter_token_latency_seconds_count") == 2  # three words
    assert value(first, "inferflux_prompt_tokens_total", model="echo") == usage.prompt_tokens
    generated = value(first, "inferflux_generation_tokens_total", model="echo")
    assert generated == usage.completion_tokens == 3
    # what the backend knows better, counted once however often it is scraped
    assert value(first, "inferflux_kv_cache_usage_perc") == 0.25
    assert value(first, "inferflux_num_requests_running") == 0
    assert value(first, "inferflux_num_requests_waiting") == 2  # none in ours, two in its
    assert value(first, "inferflux_num_preemptions_total") == 3
    assert value(first, "inferflux_prefix_cache_queries_total") == 100
    assert value(second, "inferflux_prefix_cache_queries_total") == 150
    assert value(second, "inferflux_prefix_cache_hits_total") == 60
    assert value(second, "inferflux_num_preemptions_total") == 3
    # the report itself is still exported as it is
    assert first[("inferflux_backend_kv_cache_usage_perc", frozenset({("model", "echo")}))] == 0.25
    state = {"model_name": "echo"}
    assert first[("inferflux_model_state", frozenset({**state, "state": "ready"}.items()))] == 1
    assert third[("inferflux_model_state", frozenset({**state, "state": "failed"}.items()))] == 1
    assert third[("inferflux_model_state", frozenset({**state, "state": "ready"}.items()))] == 0
