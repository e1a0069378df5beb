"""A real inferflux server with ``backend: vllm`` (vLLM's CPU build, multi-process engine)
answers the OpenAI SDK, and its greedy output is vLLM's own, token for token."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import openai
import pytest

from inferflux_core.engine.request_model import RequestModel
from tests.conftest import RunningServer
from tests.vllm.support import VLLM_MODEL

PROMPTS = ["The capital of France is", "List three colours:"]
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
TOKENS = 24


def client(server: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.api_url, api_key=server.api_key, max_retries=0)


def model_of(server: RunningServer) -> RequestModel:
    model = server.engine.models[VLLM_MODEL]
    assert isinstance(model, RequestModel)
    return model


def test_a_chat_whole_and_streamed_say_the_same(vllm_server: RunningServer) -> None:
    sdk = client(vllm_server)
    whole = sdk.chat.completions.create(
        model=VLLM_MODEL,
        messages=QUESTION,
        max_tokens=TOKENS,
        temperature=0,  # type: ignore[arg-type]
    )
    text = whole.choices[0].message.content
    assert text and whole.choices[0].finish_reason in ("stop", "length")
    assert whole.usage is not None and 0 < whole.usage.completion_tokens <= TOKENS
    stream = sdk.chat.completions.create(
        model=VLLM_MODEL,
        messages=QUESTION,  # type: ignore[arg-type]
        max_tokens=TOKENS,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == text
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_completions_n_2_and_logprobs(vllm_server: RunningServer) -> None:
    answer = client(vllm_server).completions.create(
        model=VLLM_MODEL, prompt=PROMPTS[0], max_tokens=8, temperature=0, n=2, logprobs=2
    )
    assert sorted(c.index for c in answer.choices) == [0, 1]
    assert answer.choices[0].text == answer.choices[1].text  # greedy: twice the same
    for choice in answer.choices:
        assert choice.logprobs is not None and choice.logprobs.token_logprobs
        assert all(lp is not None and lp <= 0 for lp in choice.logprobs.token_logprobs)
        assert all(len(top) <= 2 for top in choice.logprobs.top_logprobs or [])


def test_chat_logprobs_come_per_token(vllm_server: RunningServer) -> None:
    answer = client(vllm_server).chat.completions.create(
        model=VLLM_MODEL,
        messages=QUESTION,  # type: ignore[arg-type]
        max_tokens=8,
        temperature=0,
        logprobs=True,
        top_logprobs=3,
    )
    content = answer.choices[0].logprobs.content  # type: ignore[union-attr]
    assert content and all(entry.logprob <= 0 and len(entry.top_logprobs) <= 3 for entry in content)


def test_a_json_schema_response_format_is_enforced(vllm_server: RunningServer) -> None:
    schema = {
        "type": "object",
        "properties": {
            "city": {"type": "string", "maxLength": 20},
            "is_capital": {"type": "boolean"},
        },
        "required": ["city", "is_capital"],
        "additionalProperties": False,
    }
    answer = client(vllm_server).chat.completions.create(
        model=VLLM_MODEL,
        messages=[{"role": "user", "content": "Describe Paris as JSON."}],
        max_tokens=200,
        temperature=0,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "city", "schema": schema, "strict": True},
        },
    )
    assert answer.choices[0].finish_reason == "stop", answer.choices[0].message.content
    value = json.loads(answer.choices[0].message.content or "")
    assert set(value) == {"city", "is_capital"} and isinstance(value["is_capital"], bool)


def test_a_forced_tool_call_is_a_parsed_call(vllm_server: RunningServer) -> None:
    tool = {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string", "maxLength": 20}},
                "required": ["city"],
            },
        },
    }
    answer = client(vllm_server).chat.completions.create(
        model=VLLM_MODEL,
        messages=[{"role": "user", "content": "What is the weather in Paris?"}],
        tools=[tool],  # type: ignore[list-item]
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        max_tokens=200,
        temperature=0,
    )
    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls"
    [call] = choice.message.tool_calls or []
    assert call.function.name == "get_weather"  # type: ignore[union-attr]
    assert isinstance(json.loads(call.function.arguments)["city"], str)  # type: ignore[union-attr]


def test_priority_is_accepted(vllm_server: RunningServer) -> None:
    answer = client(vllm_server).chat.completions.create(
        model=VLLM_MODEL,
        messages=QUESTION,  # type: ignore[arg-type]
        max_tokens=4,
        extra_body={"priority": 5},
    )
    assert answer.choices[0].message.content is not None


def test_a_field_vllm_cannot_serve_is_a_400_naming_it(vllm_server: RunningServer) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        client(vllm_server).completions.create(
            model=VLLM_MODEL, prompt=PROMPTS[0], max_tokens=4, n=1, best_of=3
        )
    body: Any = refused.value.body
    assert body["param"] == "best_of", body


def test_a_client_that_leaves_aborts_the_vllm_request(vllm_server: RunningServer) -> None:
    backend: Any = model_of(vllm_server).backend
    body = {
        "model": VLLM_MODEL,
        "messages": QUESTION,
        "max_tokens": 1500,
        "ignore_eos": True,
        "stream": True,
    }
    with (
        httpx.Client(timeout=120) as http,
        http.stream(
            "POST",
            f"{vllm_server.api_url}/chat/completions",
            json=body,
            headers=vllm_server.auth_headers,
        ) as response,
    ):
        assert response.status_code == 200
        lines = response.iter_lines()
        for _ in range(3):
            next(lines)
        assert backend.metrics()["num_requests_running"] == 1
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if backend.metrics()["num_requests_running"] == 0 and backend.unfinished_in_vllm() == 0:
            break
        time.sleep(0.1)
    assert backend.metrics()["num_requests_running"] == 0
    assert backend.unfinished_in_vllm() == 0  # vLLM itself aborted it


def test_vllms_own_metrics_are_on_metrics(vllm_server: RunningServer) -> None:
    text = httpx.get(f"{vllm_server.base_url}/metrics", headers=vllm_server.auth_headers).text
    assert "vllm:num_requests_running" in text
    assert "vllm:kv_cache_usage_perc" in text
    assert "vllm:prompt_tokens" in text
    assert f'inferflux_backend_num_requests_running{{model="{VLLM_MODEL}"}}' in text
    assert f'inferflux_backend_kv_cache_usage_perc{{model="{VLLM_MODEL}"}}' in text
    # and through the serving families every model reports in (vLLM's names, our prefix)
    labels = f'{{engine="0",model_name="{VLLM_MODEL}"}}'
    assert f"inferflux_kv_cache_usage_perc{labels}" in text
    assert f"inferflux_num_requests_waiting{labels}" in text
    assert f"inferflux_num_preemptions_total{labels}" in text


def test_the_engine_runs_in_processes_of_its_own(vllm_server: RunningServer) -> None:
    backend: Any = model_of(vllm_server).backend
    assert backend.engine_kwargs["distributed_executor_backend"] == "mp"
    children = _psutil().Process().children(recursive=True)
    names = " ".join(" ".join(p.cmdline()) + " " + p.name() for p in children if p.is_running())
    assert "EngineCore" in names, names
    assert "Worker" in names, names


def test_greedy_output_is_vllms_own(vllm_server: RunningServer) -> None:
    """The served answers equal vLLM's ``AsyncLLM`` run directly with the same engine
    arguments, on the same token ids (the chat rendered by the model's own template)."""
    model = model_of(vllm_server)
    backend: Any = model.backend
    sdk = client(vllm_server)
    served = [
        sdk.completions.create(model=VLLM_MODEL, prompt=p, max_tokens=TOKENS, temperature=0)
        .choices[0]
        .text
        for p in PROMPTS
    ]
    chat = sdk.chat.completions.create(
        model=VLLM_MODEL,
        messages=QUESTION,
        max_tokens=TOKENS,
        temperature=0,  # type: ignore[arg-type]
    )
    rendered = model.render_chat(QUESTION, add_generation_prompt=True)
    prompts = [backend.tokenize(p) for p in PROMPTS] + [backend.tokenize(rendered)]
    direct = asyncio.run(direct_vllm(backend.engine_kwargs, prompts))
    assert direct == [*served, chat.choices[0].message.content]


async def direct_vllm(engine_kwargs: dict[str, Any], prompts: list[list[int]]) -> list[str]:
    """Greedy answers of vLLM's own ``AsyncLLM``, built from ``engine_kwargs``."""
    from vllm import SamplingParams
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.v1.engine.async_llm import AsyncLLM

    engine = AsyncLLM.from_engine_args(AsyncEngineArgs(**engine_kwargs))
    try:
        params = SamplingParams(temperature=0.0, max_tokens=TOKENS)
        answers = []
        for i, tokens in enumerate(prompts):
            final = None
            async for output in engine.generate({"prompt_token_ids": tokens}, params, f"ref-{i}"):
                final = output
            assert final is not None
            answers.append(final.outputs[0].text)
        return answers
    finally:
        engine.shutdown()


def _psutil() -> Any:
    """psutil (vLLM depends on it; imported here so the module collects without vLLM)."""
    import psutil

    return psutil


def test_every_sampling_field_reaches_vllm(vllm_server: RunningServer) -> None:
    sdk = client(vllm_server)
    backend: Any = model_of(vllm_server).backend
    greedy = sdk.completions.create(
        model=VLLM_MODEL, prompt=PROMPTS[0], max_tokens=4, temperature=0, logprobs=1
    )
    first = (greedy.choices[0].logprobs.tokens or [""])[0]  # type: ignore[union-attr]
    [banned] = backend.tokenize(first)[:1]
    biased = sdk.completions.create(
        model=VLLM_MODEL,
        prompt=PROMPTS[0],
        max_tokens=4,
        temperature=0,
        logit_bias={str(banned): -100},
    )
    assert not biased.choices[0].text.startswith(first)  # logit_bias was applied

    def sampled() -> str:
        return (
            sdk.completions.create(
                model=VLLM_MODEL,
                prompt=PROMPTS[1],
                max_tokens=12,
                temperature=0.9,
                top_p=0.9,
                seed=7,
                presence_penalty=0.5,
                frequency_penalty=0.5,
                stop=["\n\n"],
                extra_body={"top_k": 20, "min_p": 0.05, "repetition_penalty": 1.1, "min_tokens": 2},
            )
            .choices[0]
            .text
        )

    assert sampled() == sampled()  # a seeded request samples the same, every field honoured
