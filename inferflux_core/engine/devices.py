"""Choosing the device a model runs on."""

from __future__ import annotations

from collections.abc import Sequence

from inferflux_core.contracts import DeviceContext, DeviceInfo
from inferflux_core.errors import ConfigError
from inferflux_core.plugins import PluginHost


def detect_devices(host: PluginHost) -> list[tuple[DeviceContext, DeviceInfo]]:
    """Every registered device context with what it detected, highest priority first."""
    found = []
    for kind in host.names("device_contexts"):
        context: DeviceContext = host.get("device_contexts", kind)()
        found.append((context, context.detect()))
    found.sort(key=lambda pair: pair[0].priority, reverse=True)
    return found


def select_device(
    host: PluginHost,
    requested: str,
    supported: Sequence[str],
    detected: Sequence[DeviceInfo] | None = None,
) -> DeviceInfo:
    """The device for ``requested`` (a kind, or ``auto``) among those the backend supports.

    ``detected`` is what :func:`detect_devices` found, highest priority first (detected now
    when not given).
    """
    if detected is None:
        detected = [info for _, info in detect_devices(host)]
    if requested == "auto":
        for info in detected:
            if info.present and info.kind in supported:
                return info
        raise ConfigError(
            f"device: auto found no present device this backend supports ({', '.join(supported)})"
        )
    for info in detected:
        if info.kind == requested:
            if requested not in supported:
                raise ConfigError(
                    f"device {requested!r} is not supported by this backend "
                    f"(it runs on {', '.join(supported)})"
                )
            if not info.present:
                raise ConfigError(f"device {requested!r} is not present: {info.reason}")
            return info
    known = ", ".join(info.kind for info in detected) or "none"
    raise ConfigError(f"unknown device {requested!r} (known: {known}, or auto)")
