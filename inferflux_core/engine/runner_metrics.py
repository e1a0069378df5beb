"""The step loop's metrics for one model: the labelled children, looked up once, and what
the step thread records of each request (see :mod:`inferflux_core.metrics.families`)."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

from inferflux_core.contracts import SequenceChunk
from inferflux_core.engine.stream import EngineSequence
from inferflux_core.metrics import EngineMetrics


class RunnerMetrics:
    """What one model's step loop counts.

    The children are bound to the model's labels at construction, so the step thread never
    looks a label up per token.
    """

    def __init__(self, metrics: EngineMetrics, model_name: str) -> None:
        self.model_name = model_name
        self._metrics = metrics
        series = metrics.series(model_name)
        self.series = series
        self.step = series.batch_size
        self.iteration_tokens = series.iteration_tokens
        self.running = series.running
        self.waiting = series.waiting
        self.prompt = series.prompt_tokens
        self.ttft = series.ttft
        self.inter_token = series.inter_token
        self.prefix_queries = series.prefix_queries
        self.cached_tokens = series.prefix_hits
        self.preemptions = series.preemptions
        self.drafts = series.spec_drafts
        self.draft_tokens = series.spec_draft_tokens
        self.accepted_tokens = series.spec_accepted_tokens
        self.accepted_per_position = series.spec_accepted_at
        # Deprecated: admissions, where vLLM's prefix cache metrics count tokens.
        self.lookups = metrics.prefix_lookups.labels(model_name)
        self.hits = metrics.prefix_hits.labels(model_name)

    def drafts_verified(self, chunks: Sequence[SequenceChunk], accepted: Mapping[int, int]) -> None:
        """The backend verified the drafts of ``chunks`` and accepted ``accepted`` of each."""
        per_position = self.accepted_per_position
        for chunk in chunks:
            if not chunk.draft:
                continue
            n_accepted = accepted.get(chunk.seq_id, 0)
            self.drafts.inc()
            self.draft_tokens.inc(chunk.draft)
            if n_accepted:
                self.accepted_tokens.inc(n_accepted)
                for position in range(n_accepted):
                    per_position(position).inc()

    def prefix_lookup(self, n_prompt: int, n_cached: int) -> None:
        """A sequence looked ``n_prompt`` tokens up in the prefix cache; ``n_cached`` hit."""
        self.prefix_queries.inc(n_prompt)
        if n_cached:
            self.cached_tokens.inc(n_cached)
            self.hits.inc()

    def token(self, sequence: EngineSequence, n_generated: int) -> None:
        """The sequence's ``n_generated``-th token was sampled: time to first token, or the
        time since the one before."""
        state = sequence.state
        now = time.monotonic()
        if n_generated == 1:
            state.first_token_at = now
            self.ttft.observe(now - state.submitted_at)
        else:
            self.inter_token.observe(now - state.last_token_at)
        state.last_token_at = now

    def finished(self, sequence: EngineSequence, reason: str) -> None:
        """Count a finished request (choice) and observe its phases and token counts."""
        state = sequence.state
        n_generated = len(sequence.generated)
        series = self.series
        series.generation_tokens.inc(n_generated)
        series.request_prompt_tokens.observe(len(sequence.prompt_tokens))
        series.request_generation_tokens.observe(n_generated)
        series.request_finished(
            reason,
            submitted=state.submitted_at,
            scheduled=state.scheduled_at,
            first_token=state.first_token_at,
            ended=time.monotonic(),
        )

    def scrape(self, kv_tokens: int, kv_capacity: int, *, failed: bool) -> None:
        """At a scrape: ``kv_tokens`` of ``kv_capacity`` KV cells are in use; the model's
        state is ``failed`` once its step loop gave up."""
        self.series.kv_cache_usage.set(kv_tokens / kv_capacity if kv_capacity > 0 else 0.0)
        if failed:
            self._metrics.model_state(self.model_name, "failed")

    def queue_sizes(self, running: int, waiting: int) -> None:
        """Set the running and waiting gauges."""
        self.running.set(running)
        self.waiting.set(waiting)
