"""Prometheus metrics, one registry per engine."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64, 128)


class EngineMetrics:
    """The engine's counters; ``render()`` gives the Prometheus text format."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "inferflux_requests", "Finished requests", ["model", "finish_reason"], registry=r
        )
        self.prompt_tokens = Counter(
            "inferflux_prompt_tokens", "Prompt tokens prefilled", ["model"], registry=r
        )
        self.generation_tokens = Counter(
            "inferflux_generation_tokens", "Tokens generated", ["model"], registry=r
        )
        self.step_sequences = Histogram(
            "inferflux_step_sequences",
            "Sequences decoded together in one backend step",
            ["model"],
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.active_sequences = Gauge(
            "inferflux_active_sequences", "Sequences holding KV", ["model"], registry=r
        )
        self.waiting_requests = Gauge(
            "inferflux_waiting_requests", "Requests queued for admission", ["model"], registry=r
        )
        self.time_to_first_token = Histogram(
            "inferflux_time_to_first_token_seconds",
            "From submission to the first generated token",
            ["model"],
            registry=r,
        )

        self.prefix_lookups = Counter(
            "inferflux_prefix_lookups",
            "Admissions that looked for a cached prefix",
            ["model"],
            registry=r,
        )
        self.prefix_hits = Counter(
            "inferflux_prefix_hits",
            "Admissions that reused a cached prefix",
            ["model"],
            registry=r,
        )
        self.prefix_reused_tokens = Counter(
            "inferflux_prefix_reused_tokens",
            "Prompt tokens taken from cached KV",
            ["model"],
            registry=r,
        )
        self.preemptions = Counter(
            "inferflux_preemptions",
            "Running sequences preempted and saved",
            ["model"],
            registry=r,
        )
        self.embedding_requests = Counter(
            "inferflux_embedding_requests",
            "Embedding requests answered",
            ["model"],
            registry=r,
        )
        self.embedding_tokens = Counter(
            "inferflux_embedding_tokens", "Input tokens embedded", ["model"], registry=r
        )
        self.embedding_batch_inputs = Histogram(
            "inferflux_embedding_batch_inputs",
            "Inputs embedded together in one backend call",
            ["model"],
            buckets=BATCH_BUCKETS,
            registry=r,
        )

    def render(self) -> bytes:
        """The Prometheus exposition text."""
        return generate_latest(self.registry)
