"""The HTTP layer: a falcon ASGI app over the front doors and an engine.

The app is composed by :func:`inferflux_core.bootstrap.create_app`.
"""

from inferflux_core.api.app import FrontDoors, http_app

__all__ = ["FrontDoors", "http_app"]
