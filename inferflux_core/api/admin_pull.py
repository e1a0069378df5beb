"""``POST /v1/admin/models/pull`` (scope ``models:write``): pull a model into the registry,
with progress streamed as server-sent events.

Request: ``{"source": str, "name": str | null, "sha256": str | null}``. A bad body, source form,
name or digest, or a name already registered, is an ordinary JSON error (400, 409) before
anything streams. Then ``text/event-stream``, each event one ``data: {json}`` line::

    data: {"status": "pulling", "completed": 1048576, "total": 98000000}   (repeated)
    data: {"status": "success", "model": {...manifest...}}
    data: {"status": "error", "error": {"type": "pull_failed", "message": "..."}}

(and ``: keep-alive`` comment lines while nothing else is sent). The last event is the
``success`` or the ``error``. The pull runs in a worker thread; a client that hangs up
cancels it (only a resumable ``.partial`` download is kept). Local paths are refused here:
they are pulled with the ``inferflux pull`` CLI on the server's machine.
"""

from __future__ import annotations

import asyncio
import functools
import json
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import falcon
import falcon.asgi
from falcon.asgi import SSEvent
from pydantic import BaseModel, ConfigDict, Field

from inferflux_core.api.body import read_json
from inferflux_core.api.sse import SseWire, sse_stream
from inferflux_core.auth.scopes import MODELS_WRITE
from inferflux_core.errors import (
    InferfluxError,
    ModelExistsError,
    PullError,
    ServiceUnavailableError,
)
from inferflux_core.protocol.common import parse_body
from inferflux_core.registry import Manifest, ModelRegistry, validate_sha256
from inferflux_core.registry.pull import (
    MAX_SOURCE_LENGTH,
    PullOptions,
    parse_source,
    pull_model,
    resolve_pull_name,
)
from inferflux_core.registry.store import already_registered

if TYPE_CHECKING:
    from inferflux_core.config import RegistryConfig

PULL_PATH = "/v1/admin/models/pull"
PULL_BODY_LIMIT = 16 * 1024
#: Pulls one server runs at once, each on its own thread; one more is refused with 503.
MAX_CONCURRENT_PULLS = 4
#: Called on the event loop with the manifest of each finished pull (the lead's glue point:
#: register the pulled model with the engine). An exception becomes the stream's error event.
OnPulled = Callable[[Manifest], None]


class PullRequest(BaseModel):
    """The pull route's body."""

    model_config = ConfigDict(extra="forbid")

    source: str = Field(min_length=1, max_length=MAX_SOURCE_LENGTH)
    name: str | None = None
    sha256: str | None = None


def _data(event: dict[str, Any]) -> SSEvent:
    return SSEvent(data=json.dumps(event, separators=(",", ":")).encode())


def _error(error: InferfluxError) -> SSEvent:
    kind = error.code or error.error_type
    return _data({"status": "error", "error": {"type": kind, "message": error.message}})


#: The pull stream: ``data: {json}`` events, the last one a success or an error; no ``[DONE]``.
PULL_SSE = SseWire(chunk=_data, error=_error, done=None)


class ModelPullResource:
    """Pull a model into the registry, streaming its progress."""

    scopes = {"POST": MODELS_WRITE}

    def __init__(
        self, registry: ModelRegistry, options: PullOptions, on_pulled: OnPulled | None = None
    ) -> None:
        self.registry = registry
        self.options = options
        self.on_pulled = on_pulled
        # Its own threads: a long download must not hold the default executor's workers.
        self._workers = ThreadPoolExecutor(MAX_CONCURRENT_PULLS, thread_name_prefix="pull")
        self._running = 0

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        """Check the request, then stream the pull."""
        body = parse_body(PullRequest, await read_json(req, PULL_BODY_LIMIT))
        spec = parse_source(body.source, hf_endpoint=self.options.hf_endpoint)
        if spec.is_local:
            raise PullError(
                "local paths are pulled only with the inferflux CLI on the server's machine",
                param="source",
            )
        name = resolve_pull_name(spec, body.name)
        if body.sha256 is not None:
            validate_sha256(body.sha256)
        if self.registry.exists(name):
            raise ModelExistsError(already_registered(name), param="name")
        if self._running >= MAX_CONCURRENT_PULLS:
            raise ServiceUnavailableError(
                f"{MAX_CONCURRENT_PULLS} pulls are running; try again when one has finished",
                headers={"Retry-After": "10"},
            )
        resp.content_type = "text/event-stream"
        resp.set_header("Cache-Control", "no-store")
        resp.sse = sse_stream(self._events(body, name), wire=PULL_SSE)

    async def _events(self, body: PullRequest, name: str) -> AsyncIterator[dict[str, Any]]:
        """The pull's progress events, then its success (an error is raised to the wire)."""
        loop = asyncio.get_running_loop()
        progress: asyncio.Queue[tuple[int, int | None]] = asyncio.Queue()
        cancel = threading.Event()

        def on_progress(completed: int, total: int | None) -> None:
            loop.call_soon_threadsafe(progress.put_nowait, (completed, total))

        self._running += 1
        job = loop.run_in_executor(
            self._workers,
            functools.partial(
                pull_model,
                self.registry,
                body.source,
                name=name,
                sha256=body.sha256,
                options=self.options,
                on_progress=on_progress,
                cancel=cancel,
                allow_local=False,
            ),
        )
        try:
            while not job.done():
                update = asyncio.ensure_future(progress.get())
                waiting: set[asyncio.Future[Any]] = {update, job}
                await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                if not update.done():
                    update.cancel()
                    break
                yield _pulling(*update.result())
            while not progress.empty():
                yield _pulling(*progress.get_nowait())
            manifest = await job
            if self.on_pulled is not None:
                try:
                    self.on_pulled(manifest)
                except InferfluxError:
                    raise
                except Exception as exc:
                    raise InferfluxError(
                        f"pulled {manifest.name}, but registering it failed: {exc}"
                    ) from exc
            yield {"status": "success", "model": manifest.to_dict()}
        finally:
            # A client that went away: the worker stops at its next chunk and cleans up.
            cancel.set()
            job.add_done_callback(self._finished)

    def _finished(self, job: asyncio.Future[Manifest]) -> None:
        self._running -= 1
        if not job.cancelled():
            job.exception()  # retrieved: a pull nobody waited for is not an unhandled error


def _pulling(completed: int, total: int | None) -> dict[str, Any]:
    return {"status": "pulling", "completed": completed, "total": total}


def add_pull_route(
    app: falcon.asgi.App[Any, Any], config: RegistryConfig, on_pulled: OnPulled | None = None
) -> None:
    """Serve :data:`PULL_PATH` for the registry ``config`` describes."""
    resource = ModelPullResource(ModelRegistry(config.path), config.pull_options(), on_pulled)
    app.add_route(PULL_PATH, resource)
