"""``openai_upstream`` passes the request-level backend suite, against a second, real
``inferflux serve`` on loopback."""

from __future__ import annotations

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
