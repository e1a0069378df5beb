"""The examples work as their README says: the bigram plugin, the embedding script, the configs."""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import openai
import pytest

from inferflux_core.config import ModelConfig, ServerConfig, Settings, load_config
from inferflux_core.engine import Engine
from inferflux_core.frontdoors import OpenAIDicts
from inferflux_plugins.backends.llama_cpp.options import parse_options
from tests.conftest import free_port, start_server

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
CONFIGS = sorted((EXAMPLES / "configs").glob("*.yaml"))
RUNNABLE_CONFIGS = ["cpu.yaml", "bigram.yaml"]
BIGRAM_DIST = "inferflux-bigram"
EOS = 256
HELLO = [{"role": "user", "content": "Tell me about the river."}]


def run_python(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """``python *args`` from the repository root, without the caller's INFERFLUX_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("INFERFLUX_")}
    return subprocess.run(
        [sys.executable, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )


def bigram_package() -> ModuleType:
    """The installed example plugin; fails (never skips) with how to install it."""
    try:
        importlib.metadata.distribution(BIGRAM_DIST)
        import inferflux_bigram
    except (importlib.metadata.PackageNotFoundError, ImportError) as exc:
        pytest.fail(
            f"the example plugin {BIGRAM_DIST} is not installed ({exc}); install it with "
            "`pip install -e examples/third_party_backend` (CI does this before the tests)"
        )
    return inferflux_bigram


def greedy_continuation(after: str, n_tokens: int) -> str:
    """What the bigram model must answer greedily: the most frequent next byte, lowest id first."""
    from inferflux_bigram.counts import BigramCounts

    counts = BigramCounts.from_text(bigram_package().corpus_path().read_text(encoding="utf-8"))
    token, out = after.encode()[-1], bytearray()
    for _ in range(n_tokens):
        row = counts.following(token)
        token = max(range(len(row)), key=lambda t: (row[t], -t))
        if token == EOS:
            break
        out.append(token)
    return out.decode("utf-8", errors="replace")


def corpus_bigrams() -> set[bytes]:
    """Every byte pair the corpus holds; the model can produce no other."""
    data = bigram_package().corpus_path().read_bytes()
    return {data[i : i + 2] for i in range(len(data) - 1)}


@pytest.fixture(scope="module")
def bigram_client() -> Iterator[openai.OpenAI]:
    """A real server whose only model is the bigram example, found via its entry point."""
    plugin = bigram_package()
    port = free_port()
    model = ModelConfig(
        name="bigram",
        backend="bigram",
        source=str(plugin.corpus_path()),
        context_length=1024,
        max_sequences=4,
    )
    settings = Settings(server=ServerConfig(port=port, log_level="warning"), models=[model])
    running = start_server(settings)
    try:
        assert running.engine.plugins.records["bigram"].distribution == BIGRAM_DIST
        yield openai.OpenAI(
            base_url=f"http://127.0.0.1:{port}/v1",
            api_key=running.api_key,
            max_retries=0,
            timeout=60,
        )
    finally:
        running.stop()


# -- the third-party backend plugin ---------------------------------------------------------


def test_bigram_plugin_is_installed() -> None:
    plugin = bigram_package()
    assert plugin.INFERFLUX_HOOKSPEC_VERSION == 1
    assert plugin.corpus_path().is_file()


def test_plugins_command_lists_the_bigram_plugin() -> None:
    bigram_package()
    result = run_python("-m", "inferflux_core.cli.main", "plugins", "--json", timeout=60)
    assert result.returncode == 0, result.stderr
    records = {record["name"]: record for record in json.loads(result.stdout)}
    assert records["bigram"]["distribution"] == BIGRAM_DIST
    assert records["bigram"]["registered"] == {"backends": ["bigram"]}
    assert records["bigram"]["hooks"] == ["register_backends"]


def test_bigram_greedy_chat_is_the_most_frequent_path(bigram_client: openai.OpenAI) -> None:
    replies = [
        bigram_client.chat.completions.create(
            model="bigram", messages=HELLO, temperature=0, max_tokens=40
        )
        for _ in range(2)
    ]
    text = replies[0].choices[0].message.content
    assert text == replies[1].choices[0].message.content
    # the built-in chat template ends the prompt with "assistant: "
    assert text == greedy_continuation("assistant: ", 40)
    assert replies[0].usage is not None and replies[0].usage.completion_tokens == 40


def test_bigram_seed_makes_sampling_reproducible(bigram_client: openai.OpenAI) -> None:
    def sample(seed: int) -> str:
        reply = bigram_client.chat.completions.create(
            model="bigram", messages=HELLO, temperature=1.0, seed=seed, max_tokens=60
        )
        return reply.choices[0].message.content or ""

    first = sample(7)
    assert first and sample(7) == first
    assert len({first, sample(8), sample(9), sample(10)}) > 1
    pairs = corpus_bigrams()
    produced = (" " + first).encode()  # the prompt ends with a space
    assert all(produced[i : i + 2] in pairs for i in range(len(produced) - 1))


def test_bigram_streamed_chat_equals_non_streamed(bigram_client: openai.OpenAI) -> None:
    options = {"model": "bigram", "messages": HELLO, "temperature": 0.8, "seed": 3}
    whole = bigram_client.chat.completions.create(**options, max_tokens=50)
    chunks = list(bigram_client.chat.completions.create(**options, max_tokens=50, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text and text == whole.choices[0].message.content
    assert chunks[-1].choices[0].finish_reason == whole.choices[0].finish_reason


def test_bigram_streamed_text_completion_is_greedy(bigram_client: openai.OpenAI) -> None:
    stream = bigram_client.completions.create(
        model="bigram", prompt="The river", temperature=0, max_tokens=30, stream=True
    )
    text = "".join(chunk.choices[0].text for chunk in stream if chunk.choices)
    assert text == greedy_continuation("The river", 30)


# -- embedding the engine -------------------------------------------------------------------


@pytest.mark.timeout(240)
def test_embed_engine_example_prints_answers() -> None:
    result = run_python(str(EXAMPLES / "embed_engine.py"), timeout=180)
    assert result.returncode == 0, result.stderr
    answers = dict(line.split(": ", 1) for line in result.stdout.splitlines() if ": " in line)
    for label in ("chat", "stream", "tokens", "text"):
        assert answers.get(label, "").strip(), f"no {label!r} line in:\n{result.stdout}"
    assert answers["chat"] == answers["stream"]


# -- the example configs --------------------------------------------------------------------


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_example_config_validates(path: Path) -> None:
    settings = load_config(path)
    for model in settings.models:
        if model.backend == "llama_cpp":
            parse_options(model.options)


def test_every_runnable_config_is_listed() -> None:
    assert {p.name for p in CONFIGS} == {*RUNNABLE_CONFIGS, "cuda.yaml"}


@pytest.mark.parametrize("name", RUNNABLE_CONFIGS)
def test_runnable_example_config_serves_a_chat(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if name == "bigram.yaml":
        bigram_package()
    monkeypatch.chdir(REPO)  # the configs' relative paths are relative to the repository root
    settings = load_config(EXAMPLES / "configs" / name)
    model = settings.models[0].name

    async def ask() -> str:
        engine = Engine(settings)
        await engine.start()
        try:
            body = {"model": model, "messages": HELLO, "max_tokens": 8, "temperature": 0}
            reply = await OpenAIDicts(engine).chat(body)
        finally:
            await engine.stop()
        return reply["choices"][0]["message"]["content"]

    assert asyncio.run(ask())


def test_bigram_refuses_logprobs_and_still_gives_n_choices(bigram_client: openai.OpenAI) -> None:
    """A backend without ``supports_logprobs`` gets a clear 400; ``n`` works without prefix
    reuse (each choice prefills its own prompt)."""
    with pytest.raises(openai.BadRequestError) as caught:
        bigram_client.chat.completions.create(
            model="bigram", messages=HELLO, max_tokens=5, logprobs=True
        )
    assert caught.value.body["param"] == "logprobs"  # type: ignore[index]
    reply = bigram_client.chat.completions.create(
        model="bigram", messages=HELLO, max_tokens=20, temperature=1.0, seed=2, n=3
    )
    assert [c.index for c in reply.choices] == [0, 1, 2]
    assert len({c.message.content for c in reply.choices}) > 1
