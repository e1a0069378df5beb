"""inferflux-bigram: an example third-party backend plugin, a byte-level bigram model.

Installing this distribution is all it takes: its ``inferflux`` entry point names this module,
inferflux loads it at startup, and :func:`register_backends` makes ``backend: bigram``
available in ``models[]``.
"""

from __future__ import annotations

from pathlib import Path

from inferflux_bigram.backend import BigramBackend
from inferflux_core.contracts import StepBackend
from inferflux_core.hookspecs import hookimpl

__all__ = ["INFERFLUX_HOOKSPEC_VERSION", "BigramBackend", "corpus_path", "register_backends"]

#: The version of inferflux's hook contract this plugin was written against.
INFERFLUX_HOOKSPEC_VERSION = 1


def corpus_path() -> Path:
    """The small public-domain corpus shipped with this package, usable as a model source."""
    return Path(__file__).with_name("corpus.txt")


@hookimpl
def register_backends() -> dict[str, type[StepBackend]]:
    """Register the ``bigram`` backend."""
    return {"bigram": BigramBackend}
