"""The HTTP layer: a falcon ASGI app over an :class:`~inferflux_core.engine.Engine`."""

from inferflux_core.api.app import create_app

__all__ = ["create_app"]
