"""What a gateway model reports on ``/metrics`` (as ``inferflux_backend_<name>{model=...}``).

Pool gauges by vLLM's names where they mean the same (``num_requests_running``,
``num_requests_waiting``), the pool's health (``num_upstreams``, ``num_upstreams_healthy``,
``num_upstreams_open``), counters of what went wrong (``num_retries_total``,
``num_upstream_failures_total``, ``num_requests_unavailable_total``,
``num_requests_cut_mid_stream_total``), and per upstream ``upstream_<i>_...``.
"""

from __future__ import annotations

from collections.abc import Mapping

from inferflux_plugins.backends.openai_upstream.balancer import Balancer

#: The counters, reported from zero.
COUNTERS = (
    "num_retries_total",
    "num_upstream_failures_total",
    "num_requests_unavailable_total",
    "num_requests_cut_mid_stream_total",
)


def pool_metrics(balancer: Balancer, counts: Mapping[str, int]) -> dict[str, float]:
    """The gauges and counters of ``balancer``'s pool (``counts``: the backend's counters)."""
    upstreams = balancer.upstreams
    values: dict[str, float] = {
        "num_requests_running": float(sum(u.outstanding for u in upstreams)),
        "num_requests_waiting": float(balancer.waiting),
        "num_upstreams": float(len(upstreams)),
        "num_upstreams_healthy": float(sum(bool(u.healthy) and u.serving for u in upstreams)),
        "num_upstreams_open": float(sum(u.breaker.state != "closed" for u in upstreams)),
    }
    values.update({name: float(counts.get(name, 0)) for name in COUNTERS})
    for u in upstreams:
        prefix = f"upstream_{u.index}_"
        values[prefix + "requests_running"] = float(u.outstanding)
        values[prefix + "requests_total"] = float(u.sent)
        values[prefix + "healthy"] = float(bool(u.healthy))
        values[prefix + "breaker_open"] = float(u.breaker.state != "closed")
    return values
