"""``openai_upstream`` passes the request-level backend suite, against a second, real
``inferflux serve`` on loopback."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from inferflux_core.testing import BackendSettings, RequestBackendConformance
from tests.conftest import MODEL_NAME
from tests.upstream_server import UpstreamServer, upstream_server

__all__ = ["upstream_server"]  # the module-scoped fixture


class TestOpenAIUpstreamConformance(RequestBackendConformance):
    """The kit's request-backend suite; the upstream's key and URL come from the fixture."""

    engine_backend_name = "openai_upstream"
    model_source = MODEL_NAME

    @pytest.fixture(scope="class")
    @classmethod
    def engine_backend_settings(cls, upstream_server: UpstreamServer) -> BackendSettings:
        """The backend pointed at the upstream with its key."""
        options = {"base_url": upstream_server.api_url, "api_key": upstream_server.api_key}
        return BackendSettings(cls.engine_backend_name, cls.model_source, options)


def test_the_kit_runs_the_suite_from_command_line_options(
    upstream_server: UpstreamServer, tmp_path: Path
) -> None:
    options = {"base_url": upstream_server.api_url, "api_key": upstream_server.api_key}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-p", "no:cacheprovider"]
    done = subprocess.run(
        [
            *command,
            "--inferflux-engine-backend=openai_upstream",
            f"--inferflux-model={MODEL_NAME}",
            f"--inferflux-options={json.dumps(options)}",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:]
    assert re.search(r"\b10 passed\b", done.stdout), done.stdout[-500:]
