"""The serving metrics with vLLM's names and meanings (``vllm/v1/metrics/loggers.py``) under
our prefix, so a vLLM dashboard ports by renaming ``vllm:`` to ``inferflux_``.

Every series has the labels ``model_name`` (the served name) and ``engine`` (the engine's
index, ``"0"``: one engine per model today), as vLLM's have. Three names we exported before
keep their name and carry the old ``model`` label too, for one release
(:data:`DEPRECATED_MODEL_LABEL`).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from inferflux_core.metrics.buckets import (
    BATCH_BUCKETS,
    INTER_TOKEN_BUCKETS,
    ITERATION_TOKEN_BUCKETS,
    REQUEST_LATENCY_BUCKETS,
    TOKEN_COUNT_BUCKETS,
    TTFT_BUCKETS,
)

#: The labels of every family here.
LABELS = ("model_name", "engine")
#: The ``engine`` label's value: one engine per model.
ENGINE = "0"
#: The families whose names we exported before, with the label ``model``: they carry it too
#: (the same value as ``model_name``) until the release after next.
DEPRECATED_MODEL_LABEL = (
    "inferflux_prompt_tokens",
    "inferflux_generation_tokens",
    "inferflux_time_to_first_token_seconds",
)
_OLD_LABELS = (*LABELS, "model")


def finished_reason(reason: str) -> str:
    """vLLM's ``finished_reason`` for one of ours: a cancelled request is an ``abort``."""
    return "abort" if reason == "cancelled" else reason


class ServingFamilies:
    """The families themselves; :class:`ModelSeries` binds them to one model."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.running = Gauge(
            "inferflux_num_requests_running",
            "Number of requests in model execution batches (for n > 1, each choice).",
            LABELS,
            registry=r,
        )
        self.waiting = Gauge(
            "inferflux_num_requests_waiting",
            "Number of requests waiting to be processed.",
            LABELS,
            registry=r,
        )
        self.kv_cache_usage = Gauge(
            "inferflux_kv_cache_usage_perc",
            "KV-cache usage. 1 means 100 percent usage.",
            LABELS,
            registry=r,
        )
        self.prefix_queries = Counter(
            "inferflux_prefix_cache_queries",
            "Prefix cache queries, in terms of number of queried tokens.",
            LABELS,
            registry=r,
        )
        self.prefix_hits = Counter(
            "inferflux_prefix_cache_hits",
            "Prefix cache hits, in terms of number of cached tokens.",
            LABELS,
            registry=r,
        )
        self.preemptions = Counter(
            "inferflux_num_preemptions",
            "Cumulative number of preemption from the engine.",
            LABELS,
            registry=r,
        )
        self.spec_drafts = Counter(
            "inferflux_spec_decode_num_drafts",
            "Number of spec decoding drafts (a sequence's drafted tokens in one step).",
            LABELS,
            registry=r,
        )
        self.spec_draft_tokens = Counter(
            "inferflux_spec_decode_num_draft_tokens",
            "Number of draft tokens.",
            LABELS,
            registry=r,
        )
        self.spec_accepted_tokens = Counter(
            "inferflux_spec_decode_num_accepted_tokens",
            "Number of accepted tokens.",
            LABELS,
            registry=r,
        )
        self.spec_accepted_per_pos = Counter(
            "inferflux_spec_decode_num_accepted_tokens_per_pos",
            "Accepted tokens per draft position.",
            (*LABELS, "position"),
            registry=r,
        )
        self.prompt_tokens = Counter(
            "inferflux_prompt_tokens",
            "Number of prefill tokens processed (each request's prompt, once for n > 1).",
            _OLD_LABELS,
            registry=r,
        )
        self.generation_tokens = Counter(
            "inferflux_generation_tokens",
            "Number of generation tokens processed.",
            _OLD_LABELS,
            registry=r,
        )
        self.request_success = Counter(
            "inferflux_request_success",
            "Count of processed requests, by finish reason (each choice for n > 1).",
            (*LABELS, "finished_reason"),
            registry=r,
        )
        self.ttft = Histogram(
            "inferflux_time_to_first_token_seconds",
            "Histogram of time to first token in seconds.",
            _OLD_LABELS,
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.inter_token = Histogram(
            "inferflux_inter_token_latency_seconds",
            "Histogram of inter-token latency in seconds.",
            LABELS,
            buckets=INTER_TOKEN_BUCKETS,
            registry=r,
        )
        self.e2e = self._latency(r, "e2e_request_latency_seconds", "e2e request latency")
        self.queue_time = self._latency(
            r, "request_queue_time_seconds", "time spent in WAITING phase for request"
        )
        self.prefill_time = self._latency(
            r, "request_prefill_time_seconds", "time spent in PREFILL phase for request"
        )
        self.decode_time = self._latency(
            r, "request_decode_time_seconds", "time spent in DECODE phase for request"
        )
        self.request_prompt_tokens = Histogram(
            "inferflux_request_prompt_tokens",
            "Number of prefill tokens processed, per request.",
            LABELS,
            buckets=TOKEN_COUNT_BUCKETS,
            registry=r,
        )
        self.request_generation_tokens = Histogram(
            "inferflux_request_generation_tokens",
            "Number of generation tokens processed, per request.",
            LABELS,
            buckets=TOKEN_COUNT_BUCKETS,
            registry=r,
        )
        self.iteration_tokens = Histogram(
            "inferflux_iteration_tokens_total",
            "Histogram of number of tokens per engine_step.",
            LABELS,
            buckets=ITERATION_TOKEN_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "inferflux_iteration_batch_size",
            "Sequences decoded together in one engine step (step-level models).",
            LABELS,
            buckets=BATCH_BUCKETS,
            registry=r,
        )

    @staticmethod
    def _latency(registry: CollectorRegistry, name: str, what: str) -> Histogram:
        return Histogram(
            f"inferflux_{name}",
            f"Histogram of {what} in seconds.",
            LABELS,
            buckets=REQUEST_LATENCY_BUCKETS,
            registry=registry,
        )

    def forget(self, model_name: str) -> None:
        """Drop every series of ``model_name`` (it was unloaded)."""
        for family in vars(self).values():
            labelled = getattr(family, "_metrics", {})
            for values in list(labelled):
                if values and values[0] == model_name:
                    family.remove(*values)


class ModelSeries:
    """The families' children for one model, looked up once (the step thread never looks a
    label up per token)."""

    def __init__(self, families: ServingFamilies, model_name: str) -> None:
        self.model_name = model_name
        labels = (model_name, ENGINE)
        old = (model_name, ENGINE, model_name)
        f = families
        self._success = f.request_success
        self._success_by_reason: dict[str, Counter] = {}
        self.running = f.running.labels(*labels)
        self.waiting = f.waiting.labels(*labels)
        self.kv_cache_usage = f.kv_cache_usage.labels(*labels)
        self.prefix_queries = f.prefix_queries.labels(*labels)
        self.prefix_hits = f.prefix_hits.labels(*labels)
        self.preemptions = f.preemptions.labels(*labels)
        self.spec_drafts = f.spec_drafts.labels(*labels)
        self.spec_draft_tokens = f.spec_draft_tokens.labels(*labels)
        self.spec_accepted_tokens = f.spec_accepted_tokens.labels(*labels)
        self._accepted_per_pos = f.spec_accepted_per_pos
        self._accepted_at: list[Counter] = []
        self.prompt_tokens = f.prompt_tokens.labels(*old)
        self.generation_tokens = f.generation_tokens.labels(*old)
        self.ttft = f.ttft.labels(*old)
        self.inter_token = f.inter_token.labels(*labels)
        self.e2e = f.e2e.labels(*labels)
        self.queue_time = f.queue_time.labels(*labels)
        self.prefill_time = f.prefill_time.labels(*labels)
        self.decode_time = f.decode_time.labels(*labels)
        self.request_prompt_tokens = f.request_prompt_tokens.labels(*labels)
        self.request_generation_tokens = f.request_generation_tokens.labels(*labels)
        self.iteration_tokens = f.iteration_tokens.labels(*labels)
        self.batch_size = f.batch_size.labels(*labels)

    def spec_accepted_at(self, position: int) -> Counter:
        """The accepted-tokens counter of draft ``position`` (0: the first drafted token)."""
        at = self._accepted_at
        while len(at) <= position:
            at.append(self._accepted_per_pos.labels(self.model_name, ENGINE, str(len(at))))
        return at[position]

    def success(self, reason: str) -> None:
        """Count one finished request (choice) under vLLM's ``finished_reason``."""
        child = self._success_by_reason.get(reason)
        if child is None:
            labels = (self.model_name, ENGINE, finished_reason(reason))
            child = self._success_by_reason[reason] = self._success.labels(*labels)
        child.inc()

    def request_finished(
        self,
        reason: str,
        *,
        submitted: float,
        scheduled: float | None,
        first_token: float | None,
        ended: float,
    ) -> None:
        """Count a finished request and observe its phases (monotonic seconds): queue until
        ``scheduled``, prefill until ``first_token``, decode until ``ended``. A phase never
        reached takes no time, so queue + prefill + decode = end to end."""
        self.success(reason)
        scheduled = ended if scheduled is None else scheduled
        first = ended if first_token is None else first_token
        self.e2e.observe(ended - submitted)
        self.queue_time.observe(scheduled - submitted)
        self.prefill_time.observe(first - scheduled)
        self.decode_time.observe(ended - first)
