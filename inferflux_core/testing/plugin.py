"""The kit as a pytest plugin (entry point ``pytest11``: ``inferflux``).

It adds ``--inferflux-backend`` (a step-level backend), ``--inferflux-engine-backend`` (a
request-level one), ``--inferflux-scheduler``, ``--inferflux-policy-store`` and
``--inferflux-transport`` (each a registered name), ``--inferflux-model`` (a model source for
the backend) and ``--inferflux-options`` (JSON, the plugin's options). Each family named on
the command line adds its suite from :mod:`inferflux_core.testing.suites` to the run, next to
whatever tests pytest collects anyway. Without these options the plugin does nothing.
"""

from __future__ import annotations

import pytest

from inferflux_core.testing import suites
from inferflux_core.testing.options import kit_options

#: Command-line option -> the test class of :mod:`~inferflux_core.testing.suites` it adds.
SUITES = {
    "inferflux_backend": "TestBackend",
    "inferflux_engine_backend": "TestEngineBackend",
    "inferflux_scheduler": "TestScheduler",
    "inferflux_policy_store": "TestPolicyStore",
    "inferflux_transport": "TestTransport",
}


def pytest_addoption(parser: pytest.Parser) -> None:
    """The kit's command-line options."""
    group = parser.getgroup("inferflux", "inferflux conformance kit")
    group.addoption("--inferflux-backend", metavar="NAME", help="run the backend suite on NAME")
    group.addoption(
        "--inferflux-engine-backend",
        metavar="NAME",
        help="run the request-level backend suite on NAME",
    )
    group.addoption("--inferflux-model", metavar="SOURCE", help="model source for the backend")
    group.addoption("--inferflux-scheduler", metavar="NAME", help="run the scheduler suite")
    group.addoption("--inferflux-policy-store", metavar="NAME", help="run the policy-store suite")
    group.addoption("--inferflux-transport", metavar="NAME", help="run the KV-transport suite")
    group.addoption(
        "--inferflux-options",
        metavar="JSON",
        default="{}",
        help='the plugin\'s options as a JSON object; "{tmp}" in a string is a per-test directory',
    )


def pytest_configure(config: pytest.Config) -> None:
    """Add the suites of the families named on the command line to the run."""
    chosen = [test for option, test in SUITES.items() if config.getoption(option)]
    if not chosen:
        return
    options = kit_options(config)
    if not isinstance(options, dict):
        raise pytest.UsageError("--inferflux-options must be a JSON object")
    if len([o for o in SUITES if config.getoption(o)]) > 1 and options:
        raise pytest.UsageError("--inferflux-options applies to one plugin: name only one")
    config.args.extend(f"{suites.__file__}::{test}" for test in chosen)
