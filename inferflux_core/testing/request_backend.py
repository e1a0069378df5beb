"""Conformance tests for request-level backends (:class:`~inferflux_core.contracts.RequestBackend`).

Subclass :class:`RequestBackendConformance` in a test module, set ``engine_backend_name``,
``model_source`` (the model's ``source`` as the backend takes it) and ``backend_options``, and
pytest runs every test below against the backend the installed plugins register under that
name. Each test builds the backend afresh, starts it, runs on its own event loop and closes
it, so nothing a test leaves behind (a connection, a task) reaches the next.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, ClassVar, TypeVar, cast

import pytest

from inferflux_core.contracts import (
    ChatMessage,
    Finish,
    GenerationOptions,
    InferenceEvent,
    InferenceRequest,
    OutputConstraint,
    Readiness,
    RequestBackend,
    RequestBackendCapabilities,
    RequestBackendSpec,
    TextDelta,
    ToolCallDelta,
    UsageReport,
)
from inferflux_core.errors import InvalidRequestError
from inferflux_core.testing.lookup import plugin_factory
from inferflux_core.testing.settings import BackendSettings

T = TypeVar("T")
#: Seconds a stream may take to end after :meth:`RequestBackend.abort` or an early close.
STOP_SECONDS = 10.0
#: Seconds one short generation may take.
GENERATE_SECONDS = 120.0
EVENT_TYPES = (TextDelta, ToolCallDelta, Finish, UsageReport)


def load_request_backend(settings: BackendSettings) -> RequestBackend:
    """Construct the request-level backend ``settings`` names, through the installed plugins."""
    factory: Any = plugin_factory("backends", settings.name)
    if not (isinstance(factory, type) and issubclass(factory, RequestBackend)):
        raise TypeError(f"backend {settings.name!r} is not a RequestBackend: {factory!r}")
    spec = RequestBackendSpec(
        model_name=f"conformance-{settings.name}",
        source=settings.model_source or settings.name,
        context_length=settings.context_length,
        max_sequences=settings.max_sequences,
        options=dict(settings.options),
    )
    built: RequestBackend = cast(Any, factory)(spec)
    return built


class RequestBackendConformance:
    """The request-backend contract as tests. Set ``engine_backend_name``; override the rest
    if needed. Tests of an optional capability (``n``, ``logprobs``) run only when the
    backend's :attr:`~RequestBackend.capabilities` declare it."""

    #: The name the backend is registered under (``models[].backend``).
    engine_backend_name: ClassVar[str] = ""
    #: ``models[].source`` as the backend takes it; None: the backend's name.
    model_source: ClassVar[str | None] = None
    #: ``models[].options`` to build the backend with.
    backend_options: ClassVar[dict[str, Any]] = {}
    context_length: ClassVar[int] = 2048
    max_sequences: ClassVar[int] = 4
    #: A prompt any chat model answers at length.
    prompt: ClassVar[str] = "Tell me a long story about a river, a baker and a village."
    #: Tokens a short generation asks for.
    short_tokens: ClassVar[int] = 8
    #: Tokens a generation that is stopped midway asks for (it never gets them).
    long_tokens: ClassVar[int] = 2000

    @pytest.fixture(scope="class")
    @classmethod
    def engine_backend_settings(cls) -> BackendSettings:
        """What to build; override this fixture to compute it (the kit's CLI options do)."""
        if not cls.engine_backend_name:
            pytest.fail(f"{cls.__name__} must set engine_backend_name")
        return BackendSettings(
            cls.engine_backend_name,
            cls.model_source,
            cls.backend_options,
            cls.context_length,
            cls.max_sequences,
        )

    def run(
        self, settings: BackendSettings, scenario: Callable[[RequestBackend], Awaitable[T]]
    ) -> T:
        """Build and start the backend, run ``scenario`` with it, close it; on a fresh loop."""

        async def main() -> T:
            backend = load_request_backend(settings)
            await backend.start()
            try:
                return await scenario(backend)
            finally:
                await backend.close()

        return asyncio.run(main())

    def request(self, backend: RequestBackend, max_tokens: int, **options: Any) -> InferenceRequest:
        """:attr:`prompt` as the backend takes it (a conversation, or token ids)."""
        generation = GenerationOptions(temperature=0.0, max_tokens=max_tokens, **options)
        if backend.capabilities.input == "tokens":
            tokens = tuple(backend.tokenize(self.prompt))
            return InferenceRequest("conformance", prompt=tokens, options=generation)
        messages = (ChatMessage("user", self.prompt),)
        return InferenceRequest("conformance", messages=messages, options=generation)

    # -- the shape of a stream ------------------------------------------------------------

    def test_the_backend_is_a_request_backend(
        self, engine_backend_settings: BackendSettings
    ) -> None:
        backend = load_request_backend(engine_backend_settings)
        assert isinstance(backend.capabilities, RequestBackendCapabilities)
        assert backend.capabilities.input in ("messages", "tokens")

    def test_generate_yields_text_then_a_finish_then_one_final_usage(
        self, engine_backend_settings: BackendSettings
    ) -> None:
        events = self.run(engine_backend_settings, self._short)
        check_shape(events, n=1)
        text = "".join(e.text for e in events if isinstance(e, TextDelta))
        assert text, "no text was generated"
        usage = events[-1]
        assert isinstance(usage, UsageReport)
        assert 0 < usage.completion_tokens <= self.short_tokens
        assert usage.prompt_tokens >= 0 and 0 <= usage.cached_tokens <= usage.prompt_tokens

    async def _short(self, backend: RequestBackend) -> list[InferenceEvent]:
        request = self.request(backend, self.short_tokens)
        return await asyncio.wait_for(collect(backend.generate(request)), GENERATE_SECONDS)

    def test_n_choices_each_stream_and_finish(
        self, engine_backend_settings: BackendSettings
    ) -> None:
        events = self._generate_if(engine_backend_settings, "n", n=2)
        check_shape(events, n=2)
        for choice in (0, 1):
            assert any(isinstance(e, TextDelta) and e.choice == choice and e.text for e in events)

    def test_logprobs_come_with_the_text(self, engine_backend_settings: BackendSettings) -> None:
        events = self._generate_if(engine_backend_settings, "logprobs", logprobs=2)
        deltas = [e for e in events if isinstance(e, TextDelta) and e.text]
        assert deltas and all(d.logprobs for d in deltas)
        for entry in (entry for d in deltas for entry in d.logprobs):
            assert entry.logprob <= 0.0 and not math.isnan(entry.logprob)
            assert len(entry.top) <= 2

    def _generate_if(
        self, settings: BackendSettings, capability: str, **options: Any
    ) -> list[InferenceEvent]:
        """A short generation with ``options``; skipped unless ``capabilities.<capability>``."""

        async def scenario(backend: RequestBackend) -> list[InferenceEvent] | None:
            if not getattr(backend.capabilities, capability):
                return None
            request = self.request(backend, self.short_tokens, **options)
            return await asyncio.wait_for(collect(backend.generate(request)), GENERATE_SECONDS)

        events = self.run(settings, scenario)
        if events is None:
            pytest.skip(f"capabilities.{capability} is False")
        return events

    # -- stopping -------------------------------------------------------------------------

    def test_abort_ends_the_stream_soon_with_each_choice_finished(
        self, engine_backend_settings: BackendSettings
    ) -> None:
        async def scenario(backend: RequestBackend) -> tuple[list[InferenceEvent], float]:
            request = self.request(backend, self.long_tokens, ignore_eos=True)
            events: list[InferenceEvent] = []

            async def consume() -> None:
                async for event in backend.generate(request):
                    events.append(event)
                    if len(events) == 1:
                        await backend.abort(request.request_id)

            await asyncio.wait_for(consume(), STOP_SECONDS + GENERATE_SECONDS)
            return events, backend.metrics().get("num_requests_running", 0.0)

        events, running = self.run(engine_backend_settings, scenario)
        check_shape(events, n=1)
        finish = next(e for e in events if isinstance(e, Finish))
        assert finish.reason != "error", finish
        usage = events[-1]
        assert isinstance(usage, UsageReport) and usage.completion_tokens < self.long_tokens
        assert running == 0

    def test_closing_the_stream_early_stops_the_request(
        self, engine_backend_settings: BackendSettings
    ) -> None:
        async def scenario(backend: RequestBackend) -> tuple[float, list[InferenceEvent]]:
            stream = backend.generate(self.request(backend, self.long_tokens, ignore_eos=True))
            first = await asyncio.wait_for(anext(stream), GENERATE_SECONDS)
            assert isinstance(first, EVENT_TYPES)
            await asyncio.wait_for(aclose(stream), STOP_SECONDS)
            running = backend.metrics().get("num_requests_running", 0.0)
            return running, await self._short(backend)  # and the backend still serves

        running, after = self.run(engine_backend_settings, scenario)
        assert running == 0
        check_shape(after, n=1)

    def test_aborting_an_unknown_request_is_ignored(
        self, engine_backend_settings: BackendSettings
    ) -> None:
        async def scenario(backend: RequestBackend) -> None:
            await asyncio.wait_for(backend.abort("no-such-request"), STOP_SECONDS)

        self.run(engine_backend_settings, scenario)

    def test_an_unsupported_capability_is_refused_before_the_first_event(
        self, engine_backend_settings: BackendSettings
    ) -> None:
        async def scenario(backend: RequestBackend) -> str | None:
            lacking = unsupported_request_options(backend.capabilities)
            if lacking is None:
                return None
            name, fields = lacking
            base = self.request(backend, self.short_tokens)
            options = GenerationOptions(
                temperature=0.0,
                max_tokens=self.short_tokens,
                **{k: v for k, v in fields.items() if k != "constraint"},
            )
            request = InferenceRequest(
                base.model,
                messages=base.messages,
                prompt=base.prompt,
                options=options,
                constraint=fields.get("constraint"),
            )
            stream = backend.generate(request)
            with pytest.raises(InvalidRequestError):
                event = await asyncio.wait_for(anext(stream), GENERATE_SECONDS)
                pytest.fail(f"{name} was not refused: the first event was {event!r}")
            await aclose(stream)
            return name

        if self.run(engine_backend_settings, scenario) is None:
            pytest.skip("the backend declares every capability a request can ask for")

    # -- what the engine asks -------------------------------------------------------------

    def test_readiness_answers_and_a_started_backend_is_ready(
        self, engine_backend_settings: BackendSettings
    ) -> None:
        async def scenario(backend: RequestBackend) -> Readiness:
            return await asyncio.wait_for(backend.readiness(), STOP_SECONDS)

        state = self.run(engine_backend_settings, scenario)
        assert isinstance(state, Readiness)
        assert state.ready, state.reason

    def test_metrics_are_numbers_by_name(self, engine_backend_settings: BackendSettings) -> None:
        async def scenario(backend: RequestBackend) -> dict[str, Any]:
            return dict(backend.metrics())

        metrics = self.run(engine_backend_settings, scenario)
        assert all(isinstance(k, str) and isinstance(v, int | float) for k, v in metrics.items())
        assert metrics.get("num_requests_running", 0) == 0


def check_shape(events: list[InferenceEvent], n: int) -> None:
    """Typed events only; each of ``n`` choices finishes once, after its deltas; one usage,
    last."""
    assert events, "the stream was empty"
    assert all(isinstance(e, EVENT_TYPES) for e in events), events
    assert isinstance(events[-1], UsageReport), events[-1]
    assert not any(isinstance(e, UsageReport) for e in events[:-1]), "usage before the end"
    finishes = [e for e in events if isinstance(e, Finish)]
    assert sorted(f.choice for f in finishes) == list(range(n)), finishes
    for finish in finishes:
        later = events[events.index(finish) + 1 :]
        assert not any(getattr(e, "choice", None) == finish.choice for e in later)
    for event in events:
        assert getattr(event, "choice", 0) in range(n)


def unsupported_request_options(
    capabilities: RequestBackendCapabilities,
) -> tuple[str, dict[str, Any]] | None:
    """Something a request can ask for that ``capabilities`` lack, as request fields."""
    if not capabilities.grammar:
        return "a grammar", {"constraint": OutputConstraint("grammar", grammar='root ::= "a"')}
    if not capabilities.logprobs:
        return "logprobs", {"logprobs": 1}
    if not capabilities.n:
        return "n", {"n": 2}
    if not capabilities.json_schema:
        return "JSON output", {"constraint": OutputConstraint("json_object")}
    return None


async def collect(stream: AsyncIterator[InferenceEvent]) -> list[InferenceEvent]:
    """Every event of ``stream``."""
    return [event async for event in stream]


async def aclose(stream: AsyncIterator[InferenceEvent]) -> None:
    """Close ``stream`` early (an async generator's ``aclose``), as a client that left does."""
    close = getattr(stream, "aclose", None)
    if close is not None:
        await close()
