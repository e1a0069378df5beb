"""llama-cpp-python's own ``Llama``, loaded with the repacking choice inferflux makes.

On a CPU with Intel AMX, llama.cpp's repacked weight layouts crash on multi-token batches, and
``Llama`` has no option to turn them off; the llama_cpp backend's ``repack: auto`` turns them
off there. Tests that compare with (or drive) llama-cpp-python directly load it through
:func:`direct_llama`, which does the same, so they run on every CPU the backend runs on.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import llama_cpp.llama_cpp as low_level
from llama_cpp import Llama

from inferflux_plugins.backends.llama_cpp.options import decide_repack
from inferflux_plugins.devices.cpu import cpu_has_amx


def direct_llama(model_path: Path | str, **kwargs: Any) -> Llama:
    """``Llama(model_path, **kwargs)`` with repacking as ``repack: auto`` decides it."""
    decision = decide_repack("auto", cpu_has_amx())
    original: Callable[[], Any] = low_level.llama_model_default_params

    def default_params() -> Any:
        params = original()
        params.use_extra_bufts = decision.use_extra_bufts
        return params

    low_level.llama_model_default_params = default_params
    try:
        return Llama(str(model_path), **kwargs)
    finally:
        low_level.llama_model_default_params = original
