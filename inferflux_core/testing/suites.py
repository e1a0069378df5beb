"""The suites the kit's command-line options run (see :mod:`inferflux_core.testing.plugin`).

Each class takes the plugin's name and options from the command line instead of class
attributes; pytest collects this module only when one of the options names a plugin.
"""

from __future__ import annotations

import pytest

from inferflux_core.testing.backend import BackendConformance
from inferflux_core.testing.options import kit_options
from inferflux_core.testing.policy import PolicyStoreConformance
from inferflux_core.testing.request_backend import RequestBackendConformance
from inferflux_core.testing.scheduler import SchedulerConformance
from inferflux_core.testing.settings import BackendSettings, PluginSettings
from inferflux_core.testing.transport import TransportConformance


def _settings(config: pytest.Config, option: str) -> PluginSettings:
    return PluginSettings(config.getoption(option), kit_options(config))


def _backend_settings(
    config: pytest.Config, option: str, suite: type[BackendConformance | RequestBackendConformance]
) -> BackendSettings:
    """The backend ``option`` names, ``--inferflux-model`` and the suite's bounds."""
    chosen = _settings(config, option)
    model = config.getoption("inferflux_model")
    return BackendSettings(
        chosen.name, model, chosen.options, suite.context_length, suite.max_sequences
    )


class TestBackend(BackendConformance):
    """The backend named by ``--inferflux-backend``."""

    @pytest.fixture(scope="class")
    @classmethod
    def backend_settings(cls, pytestconfig: pytest.Config) -> BackendSettings:
        """Name, model and options from the command line; the class's bounds."""
        return _backend_settings(pytestconfig, "inferflux_backend", cls)


class TestEngineBackend(RequestBackendConformance):
    """The request-level backend named by ``--inferflux-engine-backend``."""

    @pytest.fixture(scope="class")
    @classmethod
    def engine_backend_settings(cls, pytestconfig: pytest.Config) -> BackendSettings:
        """Name, source (``--inferflux-model``) and options from the command line."""
        return _backend_settings(pytestconfig, "inferflux_engine_backend", cls)


class TestScheduler(SchedulerConformance):
    """The scheduler named by ``--inferflux-scheduler``."""

    @pytest.fixture(scope="class")
    @classmethod
    def scheduler_settings(cls, pytestconfig: pytest.Config) -> PluginSettings:
        """Name and options from the command line."""
        return _settings(pytestconfig, "inferflux_scheduler")


class TestPolicyStore(PolicyStoreConformance):
    """The policy store named by ``--inferflux-policy-store``."""

    @pytest.fixture(scope="class")
    @classmethod
    def policy_store_settings(cls, pytestconfig: pytest.Config) -> PluginSettings:
        """Name and options from the command line."""
        return _settings(pytestconfig, "inferflux_policy_store")


class TestTransport(TransportConformance):
    """The KV transport named by ``--inferflux-transport``."""

    @pytest.fixture(scope="class")
    @classmethod
    def transport_settings(cls, pytestconfig: pytest.Config) -> PluginSettings:
        """Name and options from the command line."""
        return _settings(pytestconfig, "inferflux_transport")
