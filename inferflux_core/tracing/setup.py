"""Whether to trace, and the OpenTelemetry SDK's tracer provider built from the standard
``OTEL_*`` variables when the program has not installed one.

Nothing here imports OpenTelemetry unless tracing is wanted: the core runs without the
``[otel]`` extra.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import threading
from importlib.metadata import entry_points
from typing import Any

from inferflux_core.errors import ConfigError

log = logging.getLogger(__name__)

#: Any of these says where spans go (``OTEL_TRACES_EXPORTER=none`` says nowhere).
EXPORT_VARIABLES = (
    "OTEL_TRACES_EXPORTER",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
)
DEFAULT_SERVICE_NAME = "inferflux"
_OTLP_BY_PROTOCOL = {"http/protobuf": "otlp_proto_http", "grpc": "otlp_proto_grpc"}
_install_lock = threading.Lock()


def otel_installed() -> bool:
    """True when the ``[otel]`` extra (the OpenTelemetry SDK) is importable."""
    try:
        return importlib.util.find_spec("opentelemetry.sdk.trace") is not None
    except (ImportError, ValueError):  # a parent package is missing, or blocked
        return False


def tracing_wanted(enabled: bool | None) -> bool:
    """``tracing.enabled`` resolved: ``None`` means on when the SDK is installed and an
    ``OTEL_*`` variable says where to export (and ``OTEL_SDK_DISABLED`` is not ``true``).
    ``True`` without the SDK is a ConfigError naming the extra."""
    if enabled is False:
        return False
    if enabled is True:
        if not otel_installed():
            raise ConfigError(
                "tracing.enabled is true but OpenTelemetry is not installed: "
                "pip install 'inferflux[otel]'"
            )
        return True
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "none":
        return False
    return otel_installed() and any(os.environ.get(name) for name in EXPORT_VARIABLES)


def ensure_provider() -> None:
    """Install an SDK tracer provider from ``OTEL_*`` unless the program installed one."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider

    with _install_lock:
        if isinstance(trace.get_tracer_provider(), TracerProvider):
            return
        provider = build_provider()
        trace.set_tracer_provider(provider)
        log.info("tracing: spans go to %s", ", ".join(exporter_names()) or "nowhere")


def build_provider() -> Any:
    """An SDK ``TracerProvider``: resource from ``OTEL_SERVICE_NAME`` /
    ``OTEL_RESOURCE_ATTRIBUTES`` (service name ``inferflux`` by default), sampler from
    ``OTEL_TRACES_SAMPLER``, a batch processor per exporter of ``OTEL_TRACES_EXPORTER``."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    attributes: dict[str, str] = {}
    named = os.environ.get("OTEL_SERVICE_NAME") or "service.name=" in os.environ.get(
        "OTEL_RESOURCE_ATTRIBUTES", ""
    )
    if not named:
        attributes["service.name"] = DEFAULT_SERVICE_NAME
    provider = TracerProvider(resource=Resource.create(attributes))
    for name in exporter_names():
        provider.add_span_processor(BatchSpanProcessor(load_exporter(name)()))
    return provider


def exporter_names() -> list[str]:
    """The exporters ``OTEL_TRACES_EXPORTER`` names (default ``otlp``; ``none``: none), with
    ``otlp`` resolved by ``OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`` / ``OTEL_EXPORTER_OTLP_PROTOCOL``
    (default ``http/protobuf``, as the OpenTelemetry specification says)."""
    names = [
        n.strip() for n in os.environ.get("OTEL_TRACES_EXPORTER", "otlp").split(",") if n.strip()
    ]
    protocol = (
        os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    ).strip()
    resolved = []
    for name in names:
        if name == "none":
            return []
        if name == "otlp":
            if protocol not in _OTLP_BY_PROTOCOL:
                raise ConfigError(
                    f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r}: use http/protobuf or grpc"
                )
            name = _OTLP_BY_PROTOCOL[protocol]
        resolved.append(name)
    return resolved


def load_exporter(name: str) -> Any:
    """The span exporter class registered as ``name`` (entry-point group
    ``opentelemetry_traces_exporter``: ``otlp_proto_http``, ``otlp_proto_grpc``, ``console``)."""
    found = list(entry_points(group="opentelemetry_traces_exporter", name=name))
    if not found:
        raise ConfigError(
            f"OTEL_TRACES_EXPORTER names {name!r}, which no installed package provides"
        )
    return found[0].load()
