"""The bundled in-process KV transport passes the conformance kit."""

from __future__ import annotations

from inferflux_core.testing import TransportConformance


class TestInProcessTransport(TransportConformance):
    """``inprocess`` with room for four pending blocks."""

    transport_name = "inprocess"
    transport_options = {"max_pending": 4}
