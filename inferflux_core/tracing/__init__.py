"""OpenTelemetry tracing of generation requests: the optional ``[otel]`` extra.

:class:`RequestTracer` starts one span per request (``chat <model>``), with ``queue``,
``prefill`` and ``decode`` children and OpenTelemetry's ``gen_ai.*`` attributes; spans are
exported as the standard ``OTEL_*`` variables say (:mod:`inferflux_core.tracing.setup`).
Without the extra, or with ``tracing.enabled: false``, nothing of OpenTelemetry is imported
and requests pay nothing. See ``docs/observability.md``.
"""

from inferflux_core.tracing.setup import otel_installed, tracing_wanted
from inferflux_core.tracing.spans import RequestTrace, RequestTracer, TracedEvents
from inferflux_core.tracing.timing import RequestTiming

__all__ = [
    "RequestTiming",
    "RequestTrace",
    "RequestTracer",
    "TracedEvents",
    "otel_installed",
    "tracing_wanted",
]
