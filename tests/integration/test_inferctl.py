"""``inferctl`` as a user runs it against a real server: a conversation under a
pseudo-terminal, one-shot ``chat`` and ``complete``, ``--json``, and the model's sampling
defaults, which the server applies to requests that leave them out."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import httpx
import pexpect
import pytest

from inferflux_core.config import (
    GuardrailConfig,
    ModelConfig,
    SamplingDefaults,
    ServerConfig,
    Settings,
)
from inferflux_core.contracts import ALLOW, Guardrail, GuardrailInput, GuardrailVerdict
from inferflux_core.gguf_check import read_gguf_header
from inferflux_core.hookspecs import hookimpl
from tests.conftest import RunningServer, free_port, start_server

TALK = "talk"
RECOMMENDS = "recommends"
INFERCTL = [sys.executable, "-m", "inferflux_core.cli.inferctl"]
GGUF_F32, GGUF_U32, GGUF_STRING = 6, 4, 8


class RecordingGuardrail(Guardrail):
    """Test double: lets every request through and keeps the prompt text it was shown."""

    texts: ClassVar[list[str]] = []
    models: ClassVar[list[str]] = []

    async def check_input(self, request: GuardrailInput) -> GuardrailVerdict:
        """Record, then allow."""
        RecordingGuardrail.texts.append(request.text)
        RecordingGuardrail.models.append(request.model)
        return ALLOW


class RecordingPlugin:
    """Registers the recorder as guardrail ``recorder``."""

    @hookimpl
    def register_guardrails(self) -> dict[str, type[Guardrail]]:
        """The recording guardrail."""
        return {"recorder": RecordingGuardrail}


def _kv(key: str, value_type: int, payload: bytes) -> bytes:
    encoded = key.encode()
    return struct.pack("<Q", len(encoded)) + encoded + struct.pack("<I", value_type) + payload


def with_sampling_metadata(source: Path, target: Path, temp: float, top_k: int) -> Path:
    """A copy of ``source`` with ``general.sampling.temp`` and ``.top_k`` added.

    The new pairs go first in the metadata, padded to the file's alignment, so the tensor
    data keeps its alignment and its offsets (they count from the data section)."""
    header = read_gguf_header(source)
    pairs = _kv("general.sampling.temp", GGUF_F32, struct.pack("<f", temp))
    pairs += _kv("general.sampling.top_k", GGUF_U32, struct.pack("<I", top_k))
    pad_key = "inferflux.test.padding"
    fixed = len(_kv(pad_key, GGUF_STRING, struct.pack("<Q", 0)))
    pad = -(len(pairs) + fixed) % header.alignment
    pairs += _kv(pad_key, GGUF_STRING, struct.pack("<Q", pad) + b" " * pad)
    with source.open("rb") as src, target.open("wb") as out:
        start = src.read(24)  # magic, version, tensor count, metadata count
        n_kv = struct.unpack_from("<Q", start, 16)[0]
        out.write(start[:16] + struct.pack("<Q", n_kv + 3) + pairs)
        shutil.copyfileobj(src, out)
    return target


@pytest.fixture(scope="module")
def ctl_server(
    model_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    """``talk`` (the default model, greedy by config) and ``recommends`` (the same weights
    whose file recommends ``temp`` 1.5 and ``top_k`` 1), behind the recording guardrail."""
    recommending = with_sampling_metadata(
        model_path, tmp_path_factory.mktemp("gguf") / "recommends.gguf", temp=1.5, top_k=1
    )
    settings = Settings(
        server=ServerConfig(port=free_port(), log_level="warning"),
        models=[
            ModelConfig(
                name=TALK,
                context_length=2048,
                max_sequences=2,
                sampling_defaults=SamplingDefaults(temperature=0.0),
            ),
            ModelConfig(
                name=RECOMMENDS, source=str(recommending), context_length=1024, max_sequences=2
            ),
        ],
        guardrails=[GuardrailConfig(name="recorder")],
    )
    running = start_server(settings, extra_plugins=[("recorder", RecordingPlugin())])
    yield running
    running.stop()


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("INFERFLUX_")}


def ctl(server: RunningServer, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``inferctl ARGS`` against ``server`` with its admin key."""
    return subprocess.run(
        [*INFERCTL, "--url", server.base_url, "--api-key", server.api_key, *args],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def direct_chat(server: RunningServer, messages: list[dict[str, str]], **fields: object) -> str:
    """The reply to ``messages`` from the API itself."""
    response = httpx.post(
        f"{server.api_url}/chat/completions",
        headers=server.auth_headers,
        json={"model": TALK, "messages": messages, **fields},
        timeout=120,
    )
    response.raise_for_status()
    return str(response.json()["choices"][0]["message"]["content"])


def spawn_session(server: RunningServer, *args: str) -> pexpect.spawn:
    """``inferctl chat`` with no message, under a pseudo-terminal."""
    child = pexpect.spawn(
        sys.executable,
        [*INFERCTL[1:], "--url", server.base_url, "--api-key", server.api_key, "chat", *args],
        env=_env(),
        encoding="utf-8",
        timeout=100,
        dimensions=(40, 200),
    )
    child.expect_exact(">>> ")
    return child


def assert_ended(child: pexpect.spawn) -> None:
    """The session ends by itself, with status 0."""
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_a_session_sends_the_history_and_obeys_system_and_clear(
    ctl_server: RunningServer,
) -> None:
    RecordingGuardrail.texts.clear()
    child = spawn_session(ctl_server, "--max-tokens", "8", "--system", "You are terse.")
    child.sendline("Name a colour.")
    child.expect_exact(">>> ")
    system = {"role": "system", "content": "You are terse."}
    first = [system, {"role": "user", "content": "Name a colour."}]
    reply = direct_chat(ctl_server, first, max_tokens=8)
    assert reply.strip() and reply.strip().splitlines()[0] in child.before.replace("\r", "")
    assert "Name a colour." in RecordingGuardrail.texts[0]

    # Turn two carries turn one: the server is shown the first question and its reply.
    child.sendline("And another?")
    child.expect_exact(">>> ")
    second = RecordingGuardrail.texts[-1]
    assert "Name a colour." in second and reply.strip() in second and "And another?" in second

    child.sendline("/system You answer in one word.")
    child.expect_exact("system: You answer in one word.")
    child.sendline("/clear")
    child.expect_exact("conversation cleared")
    child.expect_exact(">>> ")
    child.sendline("Hello")
    child.expect_exact(">>> ")
    cleared = RecordingGuardrail.texts[-1]
    assert "You answer in one word." in cleared and "Name a colour." not in cleared
    child.sendline("/exit")
    assert_ended(child)


def test_model_switches_the_model_a_session_talks_to(ctl_server: RunningServer) -> None:
    child = spawn_session(ctl_server, "--max-tokens", "4")
    child.sendline("/model no-such-model")
    child.expect_exact("404")
    child.expect_exact(">>> ")
    child.sendline(f"/model {RECOMMENDS}")
    child.expect_exact(f"model: {RECOMMENDS}")
    child.expect_exact(">>> ")
    count = len(RecordingGuardrail.models)
    child.sendline("Hi")
    child.expect_exact(">>> ")
    assert RecordingGuardrail.models[count:] == [RECOMMENDS]
    child.sendline("/exit")
    assert_ended(child)


def test_ctrl_c_cancels_the_reply_and_keeps_the_session(ctl_server: RunningServer) -> None:
    child = spawn_session(ctl_server, "--max-tokens", "300", "--temperature", "1", "--seed", "4")
    child.sendline("Write a very long story about a dragon and a knight.")
    runner = ctl_server.engine.models[TALK].runner
    deadline = time.monotonic() + 60
    while runner.live_requests == 0:
        assert time.monotonic() < deadline, "the reply never started"
        time.sleep(0.05)
    child.expect(r"\w+ \w+ \w+")  # some of the reply has streamed
    child.sendintr()
    child.expect_exact("[reply cancelled]")
    assert ctl_server.wait_idle(timeout=20), "the server still runs the cancelled request"
    child.expect_exact(">>> ")
    count = len(RecordingGuardrail.texts)
    child.sendline("Say hi.")
    child.expect_exact(">>> ")
    assert (
        len(RecordingGuardrail.texts) == count + 1 and "dragon" not in RecordingGuardrail.texts[-1]
    )
    # Ctrl-C at the prompt clears the line; a second one leaves.
    child.sendintr()
    child.expect_exact("Ctrl-C again")
    child.sendintr()
    assert_ended(child)


def test_blocks_and_continued_lines_are_one_message_and_eof_ends(ctl_server: RunningServer) -> None:
    child = spawn_session(ctl_server, "--max-tokens", "8")
    child.sendline('"""')
    child.sendline("line one")
    child.sendline('"""')
    child.expect_exact(">>> ")
    assert "line one" in RecordingGuardrail.texts[-1]
    child.sendline("first part \\")
    child.expect_exact("... ")
    child.sendline("second part")
    child.expect_exact(">>> ")
    assert "first part \nsecond part" in RecordingGuardrail.texts[-1]
    child.sendeof()
    assert_ended(child)


def test_one_shot_chat_and_complete_stream_text_and_json_parses(
    ctl_server: RunningServer,
) -> None:
    chat = ctl(ctl_server, "chat", "What is the capital of France?", "--max-tokens", "16")
    assert chat.returncode == 0, chat.stderr
    messages = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "What is the capital of France?"},
    ]
    assert chat.stdout.strip() == direct_chat(ctl_server, messages, max_tokens=16).strip()

    as_json = ctl(ctl_server, "chat", "--json", "Hi", "--max-tokens", "4", "--seed", "1")
    assert as_json.returncode == 0, as_json.stderr
    body = json.loads(as_json.stdout)
    assert body["object"] == "chat.completion" and body["usage"]["completion_tokens"] <= 4

    done = ctl(ctl_server, "complete", "--json", "Once upon a time", "--max-tokens", "5")
    completion = json.loads(done.stdout)
    streamed = ctl(ctl_server, "complete", "Once upon a time", "--max-tokens", "5")
    assert streamed.returncode == 0, streamed.stderr
    assert streamed.stdout.rstrip("\n") == completion["choices"][0]["text"]

    models = json.loads(ctl(ctl_server, "models", "--json").stdout)
    assert [m["id"] for m in models["data"]] == [TALK, RECOMMENDS]
    table = ctl(ctl_server, "models").stdout.splitlines()
    assert table[0].split("\t")[0] == "model" and table[1].split("\t")[0] == TALK


def test_the_server_applies_the_model_files_sampling_defaults(ctl_server: RunningServer) -> None:
    def shown(name: str) -> dict[str, float]:
        response = httpx.get(f"{ctl_server.api_url}/models/{name}", headers=ctl_server.auth_headers)
        return dict(response.json()["sampling_defaults"])

    assert shown(RECOMMENDS) == {"temperature": 1.5, "top_k": 1}
    assert shown(TALK) == {"temperature": 0.0}

    def completion(**fields: object) -> str:
        response = httpx.post(
            f"{ctl_server.api_url}/completions",
            headers=ctl_server.auth_headers,
            json={"model": RECOMMENDS, "prompt": "The weather today", "max_tokens": 24, **fields},
            timeout=120,
        )
        response.raise_for_status()
        return str(response.json()["choices"][0]["text"])

    greedy = completion(temperature=0)
    # Left out, top_k comes from the file (1: greedy, whatever the temperature).
    assert completion() == greedy and completion(seed=5) == greedy
    # Sent by the client, the file's values give way: temperature 1.5 with top_k off samples.
    sampled = {completion(top_k=0, seed=seed) for seed in (1, 2, 3)}
    assert sampled != {greedy}
