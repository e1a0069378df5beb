"""``inferflux new-plugin``: a ready plugin package that passes the conformance kit unedited."""

from inferflux_core.scaffold.create import KINDS, PluginKind, create_plugin

__all__ = ["KINDS", "PluginKind", "create_plugin"]
