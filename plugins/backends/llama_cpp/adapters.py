"""LoRA adapters of one llama.cpp model, and which one its context applies.

llama.cpp applies adapters to a whole context (``llama_set_adapters_lora``), not to single
sequences: the engine therefore never batches sequences of different adapters into one step,
and calls :meth:`LoraAdapters.use` before a step that needs another adapter than the last.
Switching makes llama.cpp rebuild its compute graph at the next decode; that cost is what
``benchmarks/adapter_mix.py`` measures.
"""

from __future__ import annotations

import ctypes
import logging
from pathlib import Path
from typing import Any

from inferflux_core.errors import BackendError, ConfigError, ModelFileError

log = logging.getLogger("inferflux.llama_cpp")


class LoraAdapters:
    """The adapters loaded for ``model`` and the one applied to ``ctx`` (None: the base)."""

    def __init__(self, llama: Any, model: Any, ctx: Any) -> None:
        self._llama = llama
        self._model = model
        self._ctx = ctx
        self._loaded: dict[str, tuple[Any, float]] = {}
        self._active: str | None = None

    @property
    def names(self) -> tuple[str, ...]:
        """The names of the loaded adapters."""
        return tuple(self._loaded)

    def load(self, name: str, path: Path, scale: float) -> None:
        """Load the adapter GGUF at ``path`` as ``name`` (ModelFileError if llama.cpp refuses
        it: not a LoRA adapter, or one of another architecture or shape)."""
        if name in self._loaded:
            raise ConfigError(f"the adapter {name!r} is loaded already", param="adapters")
        handle = self._llama.llama_adapter_lora_init(self._model, str(path).encode())
        if not handle:
            raise ModelFileError(
                f"llama.cpp could not load the LoRA adapter {name!r} from {path} (not a LoRA "
                "GGUF of this model's architecture and shapes; see the DEBUG log)"
            )
        self._loaded[name] = (handle, scale)
        log.info("llama_cpp loaded the adapter %s from %s (scale %g)", name, path, scale)

    def use(self, name: str | None) -> None:
        """Apply adapter ``name`` (None: none) to the context's next decodes."""
        if name == self._active:
            return
        llama = self._llama
        if name is None:
            code = llama.llama_set_adapters_lora(self._ctx, None, 0, None)
        else:
            try:
                handle, scale = self._loaded[name]
            except KeyError:
                raise BackendError(f"the adapter {name!r} is not loaded") from None
            handles = (llama.llama_adapter_lora_p_ctypes * 1)(handle)
            scales = (ctypes.c_float * 1)(scale)
            code = llama.llama_set_adapters_lora(self._ctx, handles, 1, scales)
        if code != 0:
            raise BackendError(f"llama_set_adapters_lora returned {code} for adapter {name!r}")
        self._active = name

    def close(self) -> None:
        """Free every adapter (after the context, before the model)."""
        for handle, _scale in self._loaded.values():
            self._llama.llama_adapter_lora_free(handle)
        self._loaded.clear()
        self._active = None
