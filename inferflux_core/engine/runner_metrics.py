"""The step loop's metrics for one model: the labelled children, looked up once."""

from __future__ import annotations

from inferflux_core.metrics import EngineMetrics


class RunnerMetrics:
    """What one model's step loop counts (see :class:`~inferflux_core.metrics.EngineMetrics`).

    The children are bound to the model's label at construction, so the step thread never
    looks a label up per token.
    """

    def __init__(self, metrics: EngineMetrics, model_name: str) -> None:
        self.model_name = model_name
        self.step = metrics.step_sequences.labels(model_name)
        self.active = metrics.active_sequences.labels(model_name)
        self.waiting = metrics.waiting_requests.labels(model_name)
        self.prompt = metrics.prompt_tokens.labels(model_name)
        self.generated = metrics.generation_tokens.labels(model_name)
        self.ttft = metrics.time_to_first_token.labels(model_name)
        self.lookups = metrics.prefix_lookups.labels(model_name)
        self.hits = metrics.prefix_hits.labels(model_name)
        self.reused = metrics.prefix_reused_tokens.labels(model_name)
        self.preemptions = metrics.preemptions.labels(model_name)
        self._requests = metrics.requests

    def finished(self, reason: str) -> None:
        """Count a finished request with its finish reason."""
        self._requests.labels(self.model_name, reason).inc()

    def queue_sizes(self, running: int, waiting: int) -> None:
        """Set the running and waiting gauges."""
        self.active.set(running)
        self.waiting.set(waiting)
