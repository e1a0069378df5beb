"""``llama-server`` built once from the llama.cpp sources vendored in llama-cpp-python's sdist.

The sdist of the llama-cpp-python release inferflux pins holds the llama.cpp our llama_cpp
backend runs, so the reference server and inferflux run the same kernels, compiled for this
CPU the same way (llama.cpp's defaults: ``GGML_NATIVE``, Release). The sdist comes from the
package registry (``pip download``); the build goes into a cache folder and is reused by every
later run. A 2-core build takes 15 minutes or more: never from a test.

    .venv/bin/python benchmarks/_llama_server_build.py            # build (or find) it
    .venv/bin/python benchmarks/_llama_server_build.py --print    # its path, if built
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

#: The llama-cpp-python release whose vendored llama.cpp is built (pyproject's pin).
LLAMA_CPP_PYTHON_VERSION = "0.3.36"

#: CMake options: the server alone, statically linked, no network at build time (no prebuilt
#: web UI from Hugging Face, no OpenSSL/curl), no tests or examples.
CMAKE_OPTIONS = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DBUILD_SHARED_LIBS=OFF",
    "-DLLAMA_BUILD_SERVER=ON",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_UI=OFF",
    "-DLLAMA_USE_PREBUILT_UI=OFF",
    "-DLLAMA_OPENSSL=OFF",
    "-DLLAMA_CURL=OFF",
)


def cache_root() -> Path:
    """``$INFERFLUX_BENCH_CACHE``, else ``~/.cache/inferflux/benchmarks``."""
    configured = os.environ.get("INFERFLUX_BENCH_CACHE")
    if configured:
        return Path(configured)
    return Path.home() / ".cache" / "inferflux" / "benchmarks"


def binary_path(version: str = LLAMA_CPP_PYTHON_VERSION) -> Path:
    """Where the built ``llama-server`` of ``version`` lies (it may not exist yet)."""
    return cache_root() / f"llama-server-{version}" / "llama-server"


def built(version: str = LLAMA_CPP_PYTHON_VERSION) -> Path | None:
    """The cached ``llama-server``, or None when it has not been built."""
    path = binary_path(version)
    return path if path.is_file() and os.access(path, os.X_OK) else None


def build(version: str = LLAMA_CPP_PYTHON_VERSION, jobs: int | None = None) -> Path:
    """The cached ``llama-server``, built first if needed (minutes; progress on stderr)."""
    existing = built(version)
    if existing is not None:
        return existing
    target = binary_path(version)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="llama-server-build-", dir=target.parent) as work:
        root = Path(work)
        sources = _unpack_sdist(version, root)
        build_dir = root / "build"
        _step(["cmake", "-S", str(sources), "-B", str(build_dir), *CMAKE_OPTIONS])
        n_jobs = str(jobs or os.cpu_count() or 1)
        _step(["cmake", "--build", str(build_dir), "--target", "llama-server", "-j", n_jobs])
        produced = build_dir / "bin" / "llama-server"
        if not produced.is_file():
            raise RuntimeError(f"the build finished without {produced}")
        partial = target.with_suffix(".partial")
        shutil.copy2(produced, partial)
        partial.replace(target)  # a finished binary appears at once, never half-copied
    return target


def _unpack_sdist(version: str, root: Path) -> Path:
    """Download llama-cpp-python's sdist into ``root`` and return its vendored llama.cpp."""
    download = root / "sdist"
    _step(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--no-binary",
            ":all:",
            f"llama-cpp-python=={version}",
            "-d",
            str(download),
        ]
    )
    (archive,) = download.glob("llama_cpp_python-*.tar.gz")
    with tarfile.open(archive) as tar:
        tar.extractall(root, filter="data")
    sources = root / f"llama_cpp_python-{version}" / "vendor" / "llama.cpp"
    if not (sources / "CMakeLists.txt").is_file():
        raise RuntimeError(f"the sdist of llama-cpp-python {version} holds no llama.cpp sources")
    return sources


def _step(argv: list[str]) -> None:
    print("+", " ".join(argv), file=sys.stderr, flush=True)
    subprocess.run(argv, check=True, stdout=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", default=LLAMA_CPP_PYTHON_VERSION)
    parser.add_argument("--jobs", type=int, default=None, help="parallel compile jobs")
    parser.add_argument("--print", action="store_true", help="print the path; build nothing")
    args = parser.parse_args()
    if args.print:
        path = built(args.version)
        if path is None:
            sys.exit(f"llama-server {args.version} is not built (run without --print)")
        print(path)
        return
    print(build(args.version, args.jobs))


if __name__ == "__main__":
    main()
