"""Concurrent requests are decoded together, and greedy output is what the backend gives."""

from __future__ import annotations

import asyncio
import re

import httpx
import openai

from inferflux_core.contracts import BackendSpec, SamplingParams, SequenceChunk
from inferflux_core.engine.devices import select_device
from tests.conftest import MODEL_NAME, TEST_CONTEXT, RunningServer

WORDS = ["apple", "river", "castle", "guitar", "yellow", "doctor", "planet", "silver"]
QUESTIONS = [
    "Name a fruit.",
    "What is 2 plus 2?",
    "Say hello in French.",
    "What colour is the sky?",
    "Name a planet.",
    "What is the opposite of hot?",
    "Name a large animal.",
    "What do bees make?",
]


def _histogram_counts(metrics_text: str) -> dict[str, float]:
    counts = {}
    pattern = r'inferflux_step_sequences_bucket\{le="([^"]+)",model="[^"]+"\} (\S+)'
    for le, value in re.findall(pattern, metrics_text):
        counts[le] = float(value)
    return counts


async def _stream_all(
    server: RunningServer, prompts: list[str], max_tokens: int, *, chat: bool = False
) -> list[str]:
    client = openai.AsyncOpenAI(base_url=server.api_url, api_key=server.api_key, max_retries=0)

    async def one(prompt: str) -> str:
        if chat:
            stream = await client.chat.completions.create(
                model=MODEL_NAME,
                messages=[{"role": "user", "content": prompt}],
                temperature=0,
                max_tokens=max_tokens,
                stream=True,
            )
            return "".join([c.choices[0].delta.content or "" async for c in stream])
        stream = await client.completions.create(
            model=MODEL_NAME, prompt=prompt, temperature=0, max_tokens=max_tokens, stream=True
        )
        return "".join([c.choices[0].text async for c in stream])

    try:
        return await asyncio.gather(*(one(p) for p in prompts))
    finally:
        await client.close()


def test_eight_concurrent_streams_share_batches_without_cross_talk(
    server: RunningServer,
) -> None:
    # Each prompt makes the model repeat its own word; a sequence that received another
    # sequence's logits or KV would show a foreign word.
    prompts = [", ".join([word] * 6) + "," for word in WORDS]
    metrics = f"{server.base_url}/metrics"
    before = _histogram_counts(httpx.get(metrics, headers=server.auth_headers).text)
    outputs = asyncio.run(_stream_all(server, prompts, 24))
    after = _histogram_counts(httpx.get(metrics, headers=server.auth_headers).text)

    for word, output in zip(WORDS, outputs, strict=True):
        words = re.findall(r"[a-z]+", output)
        assert len(words) >= 6, output
        assert set(words) == {word}, f"{word!r} stream produced {output!r}"
    steps = after["+Inf"] - before["+Inf"]
    steps_of_four_or_fewer = after["4.0"] - before["4.0"]
    assert steps > 0
    assert steps - steps_of_four_or_fewer > 0, "no step decoded more than four sequences together"
    assert server.wait_idle()


def test_greedy_output_is_the_same_alone_and_in_a_batch_of_eight(
    server: RunningServer, openai_client: openai.OpenAI
) -> None:
    alone = [
        openai_client.chat.completions.create(
            model=MODEL_NAME,
            messages=[{"role": "user", "content": q}],
            temperature=0,
            max_tokens=48,
        )
        .choices[0]
        .message.content
        for q in QUESTIONS
    ]
    together = asyncio.run(_stream_all(server, QUESTIONS, 48, chat=True))
    assert together == alone
    assert server.wait_idle()


def test_server_greedy_output_equals_backend_greedy_output(
    server: RunningServer, openai_client: openai.OpenAI
) -> None:
    messages = [{"role": "user", "content": "Describe a cat in one sentence."}]
    reply = openai_client.chat.completions.create(
        model=MODEL_NAME,
        messages=messages,
        temperature=0,
        max_tokens=48,
    )
    served = server.engine.model(MODEL_NAME)
    prompt_tokens = served.tokenize_prompt(served.render_chat(messages))

    backend_cls = server.engine.plugins.get("backends", "llama_cpp")
    device = select_device(server.engine.plugins, "cpu", backend_cls.supported_devices)
    spec = BackendSpec(MODEL_NAME, served.path, device, TEST_CONTEXT, 1)
    backend = backend_cls(spec)
    try:
        backend.open_sequence(0, SamplingParams(temperature=0.0))
        token = backend.decode([SequenceChunk(0, prompt_tokens)])[0]
        generated = []
        while not backend.is_end_of_generation(token) and len(generated) < 48:
            generated.append(token)
            token = backend.decode([SequenceChunk(0, [token])])[0]
        expected = backend.detokenize(generated)
    finally:
        backend.close()
    assert reply.choices[0].message.content == expected
