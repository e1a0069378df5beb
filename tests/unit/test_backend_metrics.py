"""What request-level backends report is exported on /metrics under inferflux's prefix."""

from __future__ import annotations

from collections.abc import Mapping

from inferflux_core.metrics import MAX_BACKEND_METRICS, EngineMetrics


def test_reported_values_become_gauges_labelled_by_model() -> None:
    reports: list[tuple[str, Mapping[str, float]]] = [
        ("a", {"num_requests_running": 2, "kv_cache_usage_perc": 0.5}),
        ("b", {"num_requests_running": 0.0, "odd name/with:chars": 1.0}),
    ]
    metrics = EngineMetrics()
    metrics.report_backends(lambda: reports)
    text = metrics.render().decode()
    assert 'inferflux_backend_num_requests_running{model="a"} 2.0' in text
    assert 'inferflux_backend_num_requests_running{model="b"} 0.0' in text
    assert 'inferflux_backend_kv_cache_usage_perc{model="a"} 0.5' in text
    assert 'inferflux_backend_odd_name_with_chars{model="b"} 1.0' in text
    reports[0] = ("a", {"num_requests_running": 7})
    assert 'inferflux_backend_num_requests_running{model="a"} 7.0' in metrics.render().decode()


def test_values_that_are_not_numbers_and_floods_are_dropped() -> None:
    flood = {f"m{i}": float(i) for i in range(MAX_BACKEND_METRICS + 10)}
    reports = [("a", {"yes": True, "text": "x", "huge": 10**400, "ok": 1}), ("b", flood)]
    metrics = EngineMetrics()
    metrics.report_backends(lambda: reports)  # type: ignore[arg-type, return-value]
    text = metrics.render().decode()
    assert 'inferflux_backend_ok{model="a"} 1.0' in text
    for dropped in ("yes", "text", "huge"):
        assert f"inferflux_backend_{dropped}{{" not in text
    assert text.count('{model="b"}') == MAX_BACKEND_METRICS
