"""Process-wide llama.cpp setup: importing the binding, initialising it once, routing its logs.

The binding is imported here, lazily, so that loading the plugin (to list plugins, say) works
on a machine without llama-cpp-python; only constructing the backend needs it.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from types import ModuleType
from typing import Any

from inferflux_core.errors import ConfigError
from inferflux_plugins.backends.llama_cpp.native_log import FORWARDER

GGML_LOG_LEVEL_ERROR = 4
GGML_LOG_LEVEL_CONT = 5

_lock = threading.Lock()
_initialised = False
#: The C callback must outlive every llama.cpp call, so the module holds it.
_log_callback: Any = None
_last_level = logging.DEBUG


def load_llama() -> ModuleType:
    """The ``llama_cpp`` binding, initialised once per process with logs sent to ``logging``.

    Raises :class:`~inferflux_core.errors.ConfigError` when llama-cpp-python is missing.
    """
    global _initialised
    try:
        import llama_cpp
    except ImportError as exc:
        raise ConfigError(
            f"llama-cpp-python is not installed: pip install 'inferflux[cpu]' ({exc})"
        ) from exc
    with _lock:
        if not _initialised:
            _forward_logs(llama_cpp)
            llama_cpp.llama_backend_init()
            _initialised = True
    return llama_cpp


def _forward_logs(llama: ModuleType) -> None:
    """Send llama.cpp's log lines to Python logging, bounded (see ``native_log``): errors at
    WARNING, the rest at DEBUG."""
    global _log_callback

    def forward(level: int, text: bytes | None, _user_data: Any) -> None:
        global _last_level
        if level != GGML_LOG_LEVEL_CONT:
            _last_level = logging.WARNING if level == GGML_LOG_LEVEL_ERROR else logging.DEBUG
        if text and FORWARDER.logger.isEnabledFor(_last_level):
            # Decode no more than a record can hold: a message may be a whole grammar.
            head = text[: 4 * 1024].decode("utf-8", errors="replace").rstrip("\n")
            if len(text) > 4 * 1024:
                head += f"… ({len(text)} bytes)"
            FORWARDER.emit(_last_level, head)

    _log_callback = llama.llama_log_callback(forward)
    llama.llama_log_set(_log_callback, ctypes.c_void_p(0))
