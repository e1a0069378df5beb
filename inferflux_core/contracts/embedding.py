"""What a backend that can embed text tells the engine about its embeddings."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class EmbeddingInfo:
    """The shape and batching limits of a backend's embeddings.

    ``size`` is the length of every vector :meth:`StepBackend.embed` returns;
    ``max_input_tokens`` the most tokens one input may have; one call to ``embed`` should
    carry at most ``batch_tokens`` tokens in at most ``batch_inputs`` inputs (the engine groups
    queued inputs within these, so one call is one forward pass).
    """

    size: int
    max_input_tokens: int
    batch_tokens: int
    batch_inputs: int
