"""The engine's metrics registry on its own: vLLM's families, ours, the deprecated aliases."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from inferflux_core.metrics import EngineMetrics
from inferflux_core.metrics.buckets import TTFT_BUCKETS, build_1_2_5_buckets

MODEL = {"model_name": "m", "engine": "0"}


def samples(metrics: EngineMetrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = metrics.render().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_a_request_s_phases_add_up_to_its_latency_even_without_a_first_token() -> None:
    metrics = EngineMetrics()
    series = metrics.series("m")
    series.request_finished("stop", submitted=1.0, scheduled=1.5, first_token=2.0, ended=5.0)
    series.request_finished("cancelled", submitted=1.0, scheduled=3.0, first_token=None, ended=4.0)
    series.request_finished("cancelled", submitted=1.0, scheduled=None, first_token=None, ended=2.0)
    got = samples(metrics)

    def total(name: str) -> float:
        return got[(f"inferflux_{name}_sum", frozenset(MODEL.items()))]

    assert total("e2e_request_latency_seconds") == 4.0 + 3.0 + 1.0
    assert total("request_queue_time_seconds") == 0.5 + 2.0 + 1.0
    assert total("request_prefill_time_seconds") == 0.5 + 1.0 + 0.0
    assert total("request_decode_time_seconds") == 3.0 + 0.0 + 0.0
    success = {**MODEL, "finished_reason": "abort"}
    assert got[("inferflux_request_success_total", frozenset(success.items()))] == 2
    # the deprecated alias keeps our name for it
    old = {"model": "m", "finish_reason": "cancelled"}
    assert got[("inferflux_requests_total", frozenset(old.items()))] == 2


def test_a_histogram_alias_has_its_replacement_s_buckets() -> None:
    metrics = EngineMetrics()
    batch = metrics.series("m").batch_size
    for size in (1, 3, 8):
        batch.observe(size)
    got = samples(metrics)
    new = {k: v for k, v in got.items() if k[0].startswith("inferflux_iteration_batch_size")}
    old = {k: v for k, v in got.items() if k[0].startswith("inferflux_step_sequences")}
    assert len(new) == len(old) > 3
    for (name, labels), value in new.items():
        renamed = name.replace("inferflux_iteration_batch_size", "inferflux_step_sequences")
        kept = {(k, v) for k, v in labels if k == "le"} | {("model", "m")}
        assert old[(renamed, frozenset(kept))] == value


def test_a_model_is_in_exactly_one_state() -> None:
    metrics = EngineMetrics()
    metrics.model_state("m", "loading")
    metrics.model_loaded("m", 2.5)
    got = samples(metrics)
    states = {
        dict(labels)["state"]: value
        for (name, labels), value in got.items()
        if name == "inferflux_model_state"
    }
    assert states == {"registered": 0, "loading": 0, "ready": 1, "failed": 0, "unloading": 0}
    assert got[("inferflux_model_load_seconds", frozenset({("model_name", "m")}))] == 2.5
    with pytest.raises(ValueError, match="unknown model state"):
        metrics.model_state("m", "asleep")


def test_a_forgotten_model_leaves_no_series_and_no_scrape_hook() -> None:
    metrics = EngineMetrics()
    calls: list[str] = []
    metrics.on_scrape("m", lambda: calls.append("m"))
    metrics.series("m").prompt_tokens.inc(3)
    metrics.prefix_lookups.labels("m").inc()
    metrics.model_loaded("m", 1.0)
    assert any(dict(labels).get("model_name") == "m" for _, labels in samples(metrics))
    assert calls == ["m"]
    metrics.forget_model("m")
    left = samples(metrics)
    assert not any(
        "m" in (dict(labels).get("model_name"), dict(labels).get("model")) for _, labels in left
    )
    assert calls == ["m"]


def test_http_labels_are_bounded() -> None:
    metrics = EngineMetrics()
    metrics.service.http_request(None, "BREW", 404)
    metrics.service.http_request("/v1/models/{model_id}", "GET", 200)
    metrics.service.auth_failure("something-an-upstream-said")
    got = samples(metrics)
    unmatched = {"route": "unmatched", "method": "other", "status": "404"}
    assert got[("inferflux_http_requests_total", frozenset(unmatched.items()))] == 1
    assert got[("inferflux_auth_failures_total", frozenset({("reason", "other")}))] == 1


def test_buckets_reach_cpu_latencies() -> None:
    assert max(TTFT_BUCKETS) >= 60
    assert build_1_2_5_buckets(100) == (1, 2, 5, 10, 20, 50, 100)
