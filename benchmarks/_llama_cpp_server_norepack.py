"""Run ``python -m llama_cpp.server`` with llama.cpp's weight repacking off on AMX CPUs.

On a CPU with Intel AMX, llama.cpp's repacked weight layouts ("extra buffer types") crash
llama-cpp-python's server, and the server has no option to turn them off. This wrapper patches
``llama_model_default_params`` to return params with ``use_extra_bufts = False`` and then runs
the server's own ``main()`` with the same command-line arguments. Elsewhere it changes nothing,
so every contender in the benchmark uses the same setting inferflux's ``repack: auto`` picks.

    .venv/bin/python benchmarks/_llama_cpp_server_norepack.py --model M.gguf --port 8001
"""

from __future__ import annotations

from typing import Any

from _workload import cpu_has_amx


def patch_default_params() -> None:
    """Make every ``llama_model_default_params()`` call return params without repacking."""
    import llama_cpp
    import llama_cpp.llama_cpp as low_level

    original = low_level.llama_model_default_params

    def without_repack() -> Any:
        params = original()
        params.use_extra_bufts = False
        return params

    low_level.llama_model_default_params = without_repack
    llama_cpp.llama_model_default_params = without_repack


def main() -> None:
    """Patch when the CPU has AMX, then run the server (arguments come from ``sys.argv``)."""
    if cpu_has_amx():
        patch_default_params()
    from llama_cpp.server.__main__ import main as server_main

    server_main()


if __name__ == "__main__":
    main()
