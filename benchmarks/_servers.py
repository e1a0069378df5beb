"""Starting and stopping the servers under test as child processes, one at a time.

Each server runs in its own session (process group) with its output in a log file; ``stop``
interrupts it, then terminates, then kills the whole group, so no server outlives the
benchmark, whatever happens to it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ServerProcess:
    """A server under test: how to start it, how to tell it is ready, and its process."""

    label: str
    argv: list[str]
    port: int
    ready_path: str
    env: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        """The server's process id."""
        if self.process is None:
            raise RuntimeError(f"{self.label} is not running")
        return self.process.pid

    def start(self, timeout: float = 180.0) -> None:
        """Launch the server and wait until ``ready_path`` answers 200."""
        handle, name = tempfile.mkstemp(prefix=f"bench-{self.port}-", suffix=".log")
        os.close(handle)
        self.log_path = Path(name)
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env or None,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(
                        f"{self.label} exited with status {self.process.returncode} "
                        f"before it was ready:\n{self.log_tail()}"
                    )
                with contextlib.suppress(httpx.HTTPError):
                    answer = client.get(self.base_url + self.ready_path, headers=self.headers)
                    if answer.status_code == 200:
                        return
                time.sleep(0.2)
        raise RuntimeError(f"{self.label} was not ready after {timeout:.0f} s:\n{self.log_tail()}")

    def stop(self) -> None:
        """Stop the server and everything it started: SIGINT, then SIGTERM, then SIGKILL."""
        process = self.process
        if process is None:
            return
        for sig, wait in ((signal.SIGINT, 15.0), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            if process.poll() is not None:
                break
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=wait)
        # the leader may be gone while a child it started lingers in the group
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        self.process = None

    def log_tail(self, n_bytes: int = 4000) -> str:
        """The end of the server's log."""
        if self.log_path is None or not self.log_path.exists():
            return "(no log)"
        data = self.log_path.read_bytes()[-n_bytes:]
        return data.decode("utf-8", errors="replace")

    def cleanup(self) -> None:
        """Stop the server and delete its log."""
        self.stop()
        if self.log_path is not None:
            with contextlib.suppress(OSError):
                self.log_path.unlink()


@contextlib.contextmanager
def running(server: ServerProcess) -> Iterator[ServerProcess]:
    """Start ``server``; stop it (and remove its log) on the way out, however that happens."""
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


def _clean_env() -> dict[str, str]:
    """This environment without any ``INFERFLUX_*`` setting that could change the server."""
    return {k: v for k, v in os.environ.items() if not k.startswith("INFERFLUX_")}


def inferflux_server(
    model_name: str, model_source: str, context_length: int, max_sequences: int
) -> ServerProcess:
    """``inferflux serve`` on a free port, configured through ``INFERFLUX_*`` variables."""
    model = {
        "name": model_name,
        "source": model_source,
        "context_length": context_length,
        "max_sequences": max_sequences,
    }
    return inferflux_models_server("inferflux", [model])


def inferflux_models_server(
    label: str, models: list[dict[str, Any]], env: dict[str, str] | None = None
) -> ServerProcess:
    """``inferflux serve`` with ``models`` (``INFERFLUX_MODELS``) on a free port, in this
    environment without ``INFERFLUX_*`` settings plus ``env``; auth on, with a fresh key."""
    port = free_port()
    executable = Path(sys.executable).with_name("inferflux")
    argv = [str(executable)] if executable.exists() else [shutil.which("inferflux") or "inferflux"]
    environment = {**_clean_env(), **(env or {})}
    environment["INFERFLUX_MODELS"] = json.dumps(models)
    environment["INFERFLUX_SERVER__LOG_LEVEL"] = "warning"
    headers = {}
    key = _inferflux_api_key()
    if key is not None:
        environment["INFERFLUX_API_KEY"] = key
        headers["Authorization"] = f"Bearer {key}"
    return ServerProcess(
        label=label,
        argv=[*argv, "serve", "--port", str(port)],
        port=port,
        ready_path="/readyz",
        env=environment,
        headers=headers,
    )


def _inferflux_api_key() -> str | None:
    """A fresh API key for the server to adopt as its development key (auth stays on, as by
    default); None for an inferflux without API keys."""
    try:
        from inferflux_core.auth.keys import generate_key
    except ImportError:
        return None
    key, _key_id = generate_key()
    return key


def llama_cpp_server(model: Path, threads: int, context_length: int) -> ServerProcess:
    """``python -m llama_cpp.server`` (through the no-repack wrapper) on a free port."""
    port = free_port()
    argv = [
        sys.executable,
        str(HERE / "_llama_cpp_server_norepack.py"),
        "--model",
        str(model),
        "--n_threads",
        str(threads),
        "--n_threads_batch",
        str(threads),
        "--n_ctx",
        str(context_length),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        # by default a new request interrupts the one streaming; queue them instead
        "--interrupt_requests",
        "false",
    ]
    return ServerProcess(
        label="llama-cpp-python server",
        argv=argv,
        port=port,
        ready_path="/v1/models",
        env=_clean_env(),
    )
