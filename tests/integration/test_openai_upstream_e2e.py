"""End to end: the openai SDK -> ``inferflux serve`` whose models use ``backend:
openai_upstream`` -> a second ``inferflux serve`` with the default model.

Both servers are real processes configured only through public config; what the upstream
answers directly is the reference for what the gateway must answer.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import MODEL_NAME
from tests.upstream_server import (
    UpstreamServer,
    free_loopback_url,
    start_serve,
    stop_upstream,
    upstream_server,
)

__all__ = ["upstream_server"]  # the module-scoped fixture

GREEDY: dict[str, Any] = {"temperature": 0.0, "max_tokens": 12}
MESSAGES = [{"role": "user", "content": "Name three colours."}]
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


@pytest.fixture(scope="module")
def gateway(
    upstream_server: UpstreamServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[UpstreamServer]:
    """``inferflux serve`` with three gateway models: one forwarding to the upstream's default
    model, one naming a model the upstream lacks, one whose upstream is down."""
    options = {"base_url": upstream_server.api_url, "api_key_env": "UPSTREAM_E2E_KEY"}
    models = [
        {"name": "gateway", "source": MODEL_NAME, "backend": "openai_upstream", "options": options},
        {
            "name": "gateway-missing",
            "source": "no-such-model",
            "backend": "openai_upstream",
            "options": options,
        },
        {
            "name": "gateway-down",
            "source": MODEL_NAME,
            "backend": "openai_upstream",
            "options": {"base_url": free_loopback_url(), "timeout_seconds": 5},
        },
    ]
    environment = {"UPSTREAM_E2E_KEY": upstream_server.api_key}
    server = start_serve(tmp_path_factory.mktemp("gateway"), models, environment)
    try:
        yield server
    finally:
        stop_upstream(server)


def client_of(server: UpstreamServer) -> openai.OpenAI:
    """The openai SDK pointed at ``server``."""
    return openai.OpenAI(
        base_url=server.api_url, api_key=server.api_key, max_retries=0, timeout=120
    )


def test_a_streamed_chat_through_the_gateway_is_the_upstreams_answer(
    gateway: UpstreamServer, upstream_server: UpstreamServer
) -> None:
    stream = client_of(gateway).chat.completions.create(
        model="gateway",
        messages=MESSAGES,  # type: ignore[arg-type]
        stream=True,
        stream_options={"include_usage": True},
        **GREEDY,
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    reference = client_of(upstream_server).chat.completions.create(
        model=MODEL_NAME,
        messages=MESSAGES,  # type: ignore[arg-type]
        **GREEDY,
    )
    assert text == reference.choices[0].message.content
    assert all(c.model == "gateway" for c in chunks)
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == reference.usage.completion_tokens  # type: ignore[union-attr]


def test_a_whole_chat_and_a_completion_through_the_gateway(
    gateway: UpstreamServer, upstream_server: UpstreamServer
) -> None:
    whole = client_of(gateway).chat.completions.create(
        model="gateway",
        messages=MESSAGES,  # type: ignore[arg-type]
        **GREEDY,
    )
    reference = client_of(upstream_server).chat.completions.create(
        model=MODEL_NAME,
        messages=MESSAGES,  # type: ignore[arg-type]
        **GREEDY,
    )
    assert whole.choices[0].message.content == reference.choices[0].message.content
    completion = client_of(gateway).completions.create(
        model="gateway", prompt="The river rises in the hills", **GREEDY
    )
    direct = client_of(upstream_server).completions.create(
        model=MODEL_NAME, prompt="The river rises in the hills", **GREEDY
    )
    assert completion.choices[0].text == direct.choices[0].text


def test_n_2_with_logprobs_through_the_gateway(gateway: UpstreamServer) -> None:
    response = client_of(gateway).chat.completions.create(
        model="gateway",
        messages=MESSAGES,  # type: ignore[arg-type]
        n=2,
        logprobs=True,
        top_logprobs=2,
        **GREEDY,
    )
    assert [c.index for c in response.choices] == [0, 1]
    for choice in response.choices:
        assert choice.logprobs is not None and choice.logprobs.content
        tokens = "".join(entry.token for entry in choice.logprobs.content)
        assert tokens == choice.message.content


def test_a_forced_tool_call_through_the_gateway(gateway: UpstreamServer) -> None:
    response = client_of(gateway).chat.completions.create(
        model="gateway",
        messages=[{"role": "user", "content": "What is the weather in Paris?"}],
        tools=[WEATHER_TOOL],  # type: ignore[list-item]
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        temperature=0.0,
        max_tokens=64,
    )
    (call,) = response.choices[0].message.tool_calls or []
    assert call.function.name == "get_weather"  # type: ignore[union-attr]
    assert isinstance(json.loads(call.function.arguments)["city"], str)  # type: ignore[union-attr]
    assert response.choices[0].finish_reason == "tool_calls"


def test_the_upstreams_404_and_an_upstream_down_reach_the_client(gateway: UpstreamServer) -> None:
    with pytest.raises(openai.NotFoundError):
        client_of(gateway).chat.completions.create(
            model="gateway-missing",
            messages=MESSAGES,  # type: ignore[arg-type]
            **GREEDY,
        )
    with pytest.raises(openai.APIStatusError) as caught:
        client_of(gateway).chat.completions.create(
            model="gateway-down",
            messages=MESSAGES,  # type: ignore[arg-type]
            **GREEDY,
        )
    assert caught.value.status_code == 503
    assert caught.value.body["code"] == "upstream_unavailable"  # type: ignore[index]


def test_a_client_that_leaves_frees_the_upstreams_sequence(
    gateway: UpstreamServer, upstream_server: UpstreamServer
) -> None:
    stream = client_of(gateway).chat.completions.create(
        model="gateway",
        messages=[{"role": "user", "content": "Count to a thousand."}],
        stream=True,
        temperature=0.0,
        max_tokens=1500,
        extra_body={"ignore_eos": True},
    )
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            break
    assert upstream_server.active_sequences() >= 1
    stream.close()
    assert upstream_server.wait_for_active_sequences(lambda a: a == 0, timeout=10) == 0


def _metric(text: str, name: str, **labels: str) -> float | None:
    """The value of ``name`` with exactly ``labels`` in a Prometheus exposition text."""
    wanted = sorted(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        sample, _, value = line.rpartition(" ")
        metric, _, rest = sample.partition("{")
        if metric == name and sorted(rest.rstrip("}").split(",")) == wanted:
            return float(value)
    return None


def test_the_gateways_metrics_count_its_requests_and_show_what_the_backend_reports(
    gateway: UpstreamServer,
) -> None:
    def scrape() -> str:
        response = httpx.get(
            f"{gateway.base_url}/metrics",
            headers={"Authorization": f"Bearer {gateway.api_key}"},
            timeout=30,
        )
        assert response.status_code == 200
        return response.text

    before = _metric(scrape(), "inferflux_requests_total", model="gateway", finish_reason="length")
    client_of(gateway).chat.completions.create(
        model="gateway",
        messages=MESSAGES,  # type: ignore[arg-type]
        temperature=0.0,
        max_tokens=3,
        extra_body={"ignore_eos": True},
    )
    text = scrape()
    after = _metric(text, "inferflux_requests_total", model="gateway", finish_reason="length")
    assert after == (before or 0.0) + 1
    labels = {"model_name": "gateway", "engine": "0"}
    generated = _metric(text, "inferflux_generation_tokens_total", model="gateway", **labels)
    assert (generated or 0) >= 3
    assert _metric(text, "inferflux_num_requests_running", **labels) == 0.0
    assert _metric(text, "inferflux_num_requests_waiting", **labels) == 0.0
    assert _metric(text, "inferflux_backend_num_requests_running", model="gateway") == 0.0
    assert _metric(text, "inferflux_backend_num_requests_waiting", model="gateway") == 0.0
    assert _metric(text, "inferflux_active_sequences", model="gateway") == 0.0
