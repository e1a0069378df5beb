"""The conformance kit: pytest suites a plugin author runs against their plugin.

Subclass a suite in a test module and name the plugin under test; it is looked up through the
installed ``inferflux`` entry points, exactly as ``inferflux serve`` finds it::

    from inferflux_core.testing import BackendConformance

    class TestMyBackend(BackendConformance):
        backend_name = "my_backend"
        model_source = "path/to/model.bin"

Or, with nothing to write, run the suites from the command line (the kit is a pytest plugin,
registered through the ``pytest11`` entry point when inferflux is installed)::

    pytest --inferflux-backend=my_backend --inferflux-model=path/to/model.bin
    pytest --inferflux-engine-backend=openai_upstream --inferflux-model=served-model-name \
        --inferflux-options='{"base_url": "http://127.0.0.1:8000/v1"}'

See ``docs/plugin-author-guide.md``.
"""

from inferflux_core.testing.backend import BackendConformance, load_backend
from inferflux_core.testing.lookup import fill_tmp, model_path_for, plugin_factory
from inferflux_core.testing.policy import PolicyStoreConformance
from inferflux_core.testing.request_backend import RequestBackendConformance, load_request_backend
from inferflux_core.testing.scheduler import SchedulerConformance
from inferflux_core.testing.settings import BackendSettings, PluginSettings
from inferflux_core.testing.simulation import SimulatedEngine
from inferflux_core.testing.transport import TransportConformance

__all__ = [
    "BackendConformance",
    "BackendSettings",
    "PluginSettings",
    "PolicyStoreConformance",
    "RequestBackendConformance",
    "SchedulerConformance",
    "SimulatedEngine",
    "TransportConformance",
    "fill_tmp",
    "load_backend",
    "load_request_backend",
    "model_path_for",
    "plugin_factory",
]
