"""The engine's embedding queue, with a test double for the backend (no model needed)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

import pytest

from inferflux_core.contracts import EmbeddingInfo
from inferflux_core.engine.embedding import EmbeddingQueue
from inferflux_core.errors import (
    BackendError,
    QueueFullError,
    ServiceUnavailableError,
)
from inferflux_core.metrics import EngineMetrics


class EmbeddingBackendDouble:
    """Stands in for a backend: the vector of an input is ``[len(tokens), sum(tokens)]``.

    Records every call; ``fail_with`` makes the next call raise.
    """

    supports_embeddings = True

    def __init__(self, batch_tokens: int = 8, batch_inputs: int = 3) -> None:
        self.embedding_info = EmbeddingInfo(2, batch_tokens, batch_tokens, batch_inputs)
        self.calls: list[list[list[int]]] = []
        self.fail_with: Exception | None = None

    def embed(self, inputs: Sequence[Sequence[int]]) -> list[list[float]]:
        self.calls.append([list(tokens) for tokens in inputs])
        if self.fail_with is not None:
            error, self.fail_with = self.fail_with, None
            raise error
        return [[float(len(tokens)), float(sum(tokens))] for tokens in inputs]


def make_queue(backend: EmbeddingBackendDouble, max_queue: int = 8) -> EmbeddingQueue:
    return EmbeddingQueue(
        "double",
        backend,  # type: ignore[arg-type]
        EngineMetrics(),
        threading.Event(),
        max_queue=max_queue,
    )


async def drain(queue: EmbeddingQueue) -> None:
    """Run batches until nothing waits, letting the loop deliver results in between."""
    while queue.pending:
        queue.run_batch()
        await asyncio.sleep(0)
    await asyncio.sleep(0)


def test_inputs_of_several_requests_share_calls_within_the_batch_limits() -> None:
    backend = EmbeddingBackendDouble(batch_tokens=8, batch_inputs=3)
    queue = make_queue(backend)

    async def scenario() -> tuple[list[list[float]], list[list[float]]]:
        first = queue.submit([[1, 2], [3]])
        second = queue.submit([[4, 4, 4, 4], [5], [6, 6]])
        await drain(queue)
        return await first, await second

    first, second = asyncio.run(scenario())
    assert first == [[2.0, 3.0], [1.0, 3.0]]
    assert second == [[4.0, 16.0], [1.0, 5.0], [2.0, 12.0]]
    # arrival order; at most 3 inputs and 8 tokens per call
    assert backend.calls == [[[1, 2], [3], [4, 4, 4, 4]], [[5], [6, 6]]]


def test_a_backend_error_fails_its_requests_only() -> None:
    backend = EmbeddingBackendDouble(batch_tokens=2, batch_inputs=1)
    queue = make_queue(backend)

    async def scenario() -> tuple[BaseException | None, list[list[float]]]:
        doomed = queue.submit([[1]])
        fine = queue.submit([[2]])
        backend.fail_with = BackendError("llama_decode returned 1")
        await drain(queue)
        return doomed.exception(), await fine

    error, fine = asyncio.run(scenario())
    assert isinstance(error, BackendError) and "llama_decode" in error.message
    assert fine == [[1.0, 2.0]]


def test_a_backend_bug_becomes_an_error_and_does_not_escape() -> None:
    backend = EmbeddingBackendDouble()
    queue = make_queue(backend)

    async def scenario() -> BaseException | None:
        future = queue.submit([[1]])
        backend.fail_with = ZeroDivisionError("oops")
        queue.run_batch()  # must not raise on the step thread
        await asyncio.sleep(0)
        return future.exception()

    error = asyncio.run(scenario())
    assert type(error) is BackendError and "ZeroDivisionError" in error.message
    assert error.status == 503


def test_the_queue_bound_is_429_and_a_cancelled_request_frees_its_place() -> None:
    backend = EmbeddingBackendDouble(batch_tokens=8, batch_inputs=8)
    queue = make_queue(backend, max_queue=1)

    async def scenario() -> list[list[float]]:
        waiting = queue.submit([[7], [8]])
        with pytest.raises(QueueFullError) as caught:
            queue.submit([[1]])
        assert caught.value.status == 429 and caught.value.headers["Retry-After"]
        waiting.cancel()
        await asyncio.sleep(0)
        later = queue.submit([[9]])
        await drain(queue)
        return await later

    assert asyncio.run(scenario()) == [[1.0, 9.0]]
    assert backend.calls == [[[9]]]  # the cancelled inputs were never embedded


def test_closing_fails_waiting_requests_and_refuses_new_ones() -> None:
    backend = EmbeddingBackendDouble()
    queue = make_queue(backend)

    async def scenario() -> BaseException | None:
        waiting = queue.submit([[1]])
        queue.fail_all(ServiceUnavailableError("the server is shutting down"))
        await asyncio.sleep(0)
        with pytest.raises(ServiceUnavailableError):
            queue.submit([[2]])
        return waiting.exception()

    error = asyncio.run(scenario())
    assert isinstance(error, ServiceUnavailableError) and error.status == 503
    assert backend.calls == []
