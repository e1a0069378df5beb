"""The example third-party backend (``examples/third_party_backend``) passes the kit."""

from __future__ import annotations

from inferflux_bigram import corpus_path

from inferflux_core.testing import BackendConformance


class TestBigramBackend(BackendConformance):
    """``bigram``, trained on the corpus its package ships."""

    backend_name = "bigram"
    model_source = str(corpus_path())
