"""``/metrics`` after a mixed load on a real server: vLLM's names under our prefix with
plausible values, ours (HTTP, refusals, model state, process), and the deprecated aliases
equal to their replacements."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from inferflux_core.auth.policy_admin import KeyCreate, PolicyAdmin
from inferflux_core.config import Settings
from inferflux_core.contracts.policy import RateLimits
from tests.conftest import (
    MODEL_NAME,
    OutputBlocklist,
    OutputBlocklistPlugin,
    RunningServer,
    free_port,
    start_server,
)

BLOCKED = "tangerine submarine"
MODEL = {"model_name": MODEL_NAME, "engine": "0"}
#: Every family the issue names, with vLLM's meaning (histograms and counters by their
#: family name, as ``prometheus_client.parser`` gives them).
VLLM_FAMILIES = (
    "inferflux_num_requests_running",
    "inferflux_num_requests_waiting",
    "inferflux_kv_cache_usage_perc",
    "inferflux_prefix_cache_queries",
    "inferflux_prefix_cache_hits",
    "inferflux_num_preemptions",
    "inferflux_prompt_tokens",
    "inferflux_generation_tokens",
    "inferflux_request_success",
    "inferflux_time_to_first_token_seconds",
    "inferflux_inter_token_latency_seconds",
    "inferflux_e2e_request_latency_seconds",
    "inferflux_request_queue_time_seconds",
    "inferflux_request_prefill_time_seconds",
    "inferflux_request_decode_time_seconds",
    "inferflux_request_prompt_tokens",
    "inferflux_request_generation_tokens",
    "inferflux_iteration_tokens_total",
    "inferflux_iteration_batch_size",
    "inferflux_spec_decode_num_drafts",
    "inferflux_spec_decode_num_draft_tokens",
    "inferflux_spec_decode_num_accepted_tokens",
)
PHASES = (
    "inferflux_request_queue_time_seconds",
    "inferflux_request_prefill_time_seconds",
    "inferflux_request_decode_time_seconds",
)
#: A prompt long enough for its prefix to be reused (several prefill chunks).
LONG_PROMPT = " ".join(f"Item {i} is a small grey stone on a long road." for i in range(12))


@dataclass
class Scrape:
    """One ``/metrics`` text, parsed with prometheus_client's parser."""

    families: dict[str, str] = field(default_factory=dict)
    samples: list[tuple[str, dict[str, str], float]] = field(default_factory=list)

    @classmethod
    def of(cls, server: RunningServer) -> Scrape:
        """Scrape ``server`` now."""
        text = httpx.get(f"{server.base_url}/metrics", headers=server.auth_headers).text
        scrape = cls()
        for family in text_string_to_metric_families(text):
            scrape.families[family.name] = family.type
            for sample in family.samples:
                scrape.samples.append((sample.name, dict(sample.labels), sample.value))
        return scrape

    def total(self, name: str, **labels: str) -> float:
        """The sum of ``name``'s samples that carry ``labels`` (and any others)."""
        return sum(
            value
            for sample, have, value in self.samples
            if sample == name and all(have.get(k) == v for k, v in labels.items())
        )

    def labelled(self, name: str) -> list[dict[str, str]]:
        """The label sets of ``name``'s samples."""
        return [have for sample, have, _ in self.samples if sample == name]


@dataclass
class Usage:
    """What the clients were told: requests that finished (each choice), and tokens."""

    finished: int = 0
    prompt: int = 0
    completion: int = 0

    def add(self, usage: object, choices: int) -> None:
        """Add one response's usage (an OpenAI SDK ``CompletionUsage``)."""
        assert usage is not None
        self.finished += choices
        self.prompt += usage.prompt_tokens  # type: ignore[attr-defined]
        self.completion += usage.completion_tokens  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def served() -> Iterator[RunningServer]:
    """The default model behind a server with an input blocklist, the tests' output blocklist,
    and small prefill chunks (so a prompt's prefix is reusable after a few dozen tokens)."""
    settings = Settings.model_validate(
        {
            "server": {"port": free_port(), "log_level": "warning"},
            "models": [{"name": MODEL_NAME, "context_length": 2048, "max_sequences": 4}],
            "scheduler": {"prefill_chunk": 64},
            "guardrails": [
                {"name": "blocklist", "options": {"terms": [BLOCKED]}},
                {"name": "output_blocklist"},
            ],
        }
    )
    running = start_server(settings, [("output_blocklist", OutputBlocklistPlugin())])
    yield running
    running.stop()


def mixed_load(server: RunningServer) -> Usage:
    """Streamed and whole chats, ``n = 2``, a prefix-reuse pair; a rate-limited refusal, two
    authentication failures, a guardrail block, a templated route and an unknown path."""
    client = openai.OpenAI(base_url=server.api_url, api_key=server.api_key, max_retries=0)
    usage = Usage()
    chat = {"model": MODEL_NAME, "max_tokens": 6, "temperature": 0}
    messages = [{"role": "user", "content": "Say hello to a friend."}]
    whole = client.chat.completions.create(messages=messages, **chat)  # type: ignore[call-overload]
    usage.add(whole.usage, 1)
    stream = client.chat.completions.create(  # type: ignore[call-overload]
        messages=messages, stream=True, stream_options={"include_usage": True}, **chat
    )
    usage.add([chunk for chunk in stream][-1].usage, 1)
    two = client.chat.completions.create(  # type: ignore[call-overload]
        messages=messages, **{**chat, "n": 2, "temperature": 1.0, "seed": 5}
    )
    usage.add(two.usage, 2)
    for _ in range(2):  # the second reuses the first's prompt
        reply = client.completions.create(model=MODEL_NAME, prompt=LONG_PROMPT, max_tokens=4)
        usage.add(reply.usage, 1)

    limited = PolicyAdmin(server.access.store).create_key(
        KeyCreate(name="limited", limits=RateLimits(requests_per_minute=1))
    )["key"]
    base = server.base_url
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {limited}"}) as http:
        assert http.get("/v1/models").status_code == 200
        assert http.get("/v1/models").status_code == 429
    assert httpx.post(f"{base}/v1/chat/completions", json={}).status_code == 401
    wrong = {"Authorization": "Bearer sk-not-a-key"}
    assert httpx.get(f"{base}/v1/models", headers=wrong).status_code == 401
    with httpx.Client(base_url=base, headers=server.auth_headers) as http:
        body = {"model": MODEL_NAME, "messages": [{"role": "user", "content": f"A {BLOCKED}."}]}
        refused = http.post("/v1/chat/completions", json=body)
        assert refused.status_code == 400 and refused.json()["error"]["code"] == "content_blocked"
        assert http.get(f"/v1/models/no-such-model-{uuid.uuid4().hex}").status_code == 404
        assert http.get(f"/v1/no-such-route-{uuid.uuid4().hex}").status_code == 404
    assert server.wait_idle()
    return usage


def test_a_mixed_load_shows_in_vllms_metrics_under_our_prefix(served: RunningServer) -> None:
    before = Scrape.of(served)
    usage = mixed_load(served)
    after = Scrape.of(served)

    def grew(name: str, **labels: str) -> float:
        return after.total(name, **labels) - before.total(name, **labels)

    for family in VLLM_FAMILIES:
        assert family in after.families, family
    for family in VLLM_FAMILIES:
        names = [s for s, have, _ in after.samples if s.startswith(family)]
        assert all(MODEL.items() <= have.items() for s, have, _ in after.samples if s in names)
        assert any(
            have.get("model_name") == MODEL_NAME for s, have, _ in after.samples if s in names
        )

    finished = grew("inferflux_request_success_total", **MODEL)
    assert finished == usage.finished == 6
    assert grew("inferflux_request_success_total", finished_reason="error") == 0
    assert grew("inferflux_time_to_first_token_seconds_count", **MODEL) == finished
    assert grew("inferflux_e2e_request_latency_seconds_count", **MODEL) == finished
    for phase in PHASES:
        assert grew(f"{phase}_count", **MODEL) == finished
    ttft, e2e = (
        grew(f"{n}_sum", **MODEL)
        for n in ("inferflux_time_to_first_token_seconds", "inferflux_e2e_request_latency_seconds")
    )
    assert 0 < ttft <= e2e
    # the phases of a request add up to its end-to-end latency
    assert sum(grew(f"{phase}_sum", **MODEL) for phase in PHASES) == pytest.approx(e2e, abs=1e-3)
    assert grew("inferflux_inter_token_latency_seconds_count", **MODEL) > 0

    assert grew("inferflux_prompt_tokens_total", **MODEL) == usage.prompt
    assert grew("inferflux_generation_tokens_total", **MODEL) == usage.completion
    assert grew("inferflux_request_generation_tokens_sum", **MODEL) == usage.completion
    assert grew("inferflux_request_prompt_tokens_count", **MODEL) == finished
    assert grew("inferflux_iteration_tokens_total_sum", **MODEL) >= usage.completion

    queries = after.total("inferflux_prefix_cache_queries_total", **MODEL)
    hits = after.total("inferflux_prefix_cache_hits_total", **MODEL)
    assert 0 < hits <= queries
    assert grew("inferflux_prefix_cache_hits_total", **MODEL) >= 64  # the pair's reuse
    assert 0.0 <= after.total("inferflux_kv_cache_usage_perc", **MODEL) <= 1.0

    assert grew("inferflux_http_requests_total", route="/v1/chat/completions", status="200") == 3
    assert grew("inferflux_http_requests_total", route="/v1/models", status="429") == 1
    assert grew("inferflux_http_requests_total", route="/v1/models/{model_id}", status="404") == 1
    assert grew("inferflux_http_requests_total", route="unmatched", status="404") == 1
    routes = {have["route"] for have in after.labelled("inferflux_http_requests_total")}
    assert not any("no-such" in route for route in routes)  # templates, never raw paths
    assert grew("inferflux_rate_limit_refusals_total", route="/v1/models") == 1
    assert grew("inferflux_auth_failures_total", reason="missing_credentials") == 1
    assert grew("inferflux_auth_failures_total", reason="invalid_api_key") == 1
    assert grew("inferflux_guardrail_blocks_total", stage="input") == 1

    assert after.total("inferflux_model_state", model_name=MODEL_NAME, state="ready") == 1
    assert after.total("inferflux_model_state", model_name=MODEL_NAME) == 1
    assert after.total("inferflux_model_load_seconds", model_name=MODEL_NAME) > 0
    assert "process_cpu_seconds" in after.families and "python_info" in after.families
    assert_aliases_equal_their_replacements(after)


def assert_aliases_equal_their_replacements(scrape: Scrape) -> None:
    """Each deprecated name has its replacement's value, under the label ``model``."""
    old = {"model": MODEL_NAME}
    for alias, replacement in (
        ("inferflux_requests_total", "inferflux_request_success_total"),
        ("inferflux_active_sequences", "inferflux_num_requests_running"),
        ("inferflux_waiting_requests", "inferflux_num_requests_waiting"),
        ("inferflux_preemptions_total", "inferflux_num_preemptions_total"),
        ("inferflux_prefix_reused_tokens_total", "inferflux_prefix_cache_hits_total"),
        ("inferflux_step_sequences_count", "inferflux_iteration_batch_size_count"),
        ("inferflux_step_sequences_sum", "inferflux_iteration_batch_size_sum"),
    ):
        assert scrape.labelled(alias), alias
        assert all("model_name" not in have for have in scrape.labelled(alias))
        assert scrape.total(alias, **old) == scrape.total(replacement, **MODEL), alias
    # kept names carry the old label too, with the same series
    for kept in ("inferflux_prompt_tokens_total", "inferflux_time_to_first_token_seconds_count"):
        assert scrape.total(kept, **old) == scrape.total(kept, **MODEL) > 0
    assert scrape.total("inferflux_requests_total", finish_reason="stop", **old) == scrape.total(
        "inferflux_request_success_total", finished_reason="stop", **MODEL
    )


def test_running_and_waiting_count_what_is_in_flight(served: RunningServer) -> None:
    before = Scrape.of(served)
    body = {
        "model": MODEL_NAME,
        "prompt": "Count slowly:",
        "max_tokens": 1500,
        "ignore_eos": True,
        "stream": True,
    }
    with (
        httpx.Client(base_url=served.base_url, headers=served.auth_headers, timeout=60) as http,
        http.stream("POST", "/v1/completions", json=body) as response,
    ):
        assert response.status_code == 200
        lines = response.iter_lines()
        assert next(line for line in lines if line.startswith("data: "))
        during = Scrape.of(served)
    in_flight = during.total("inferflux_num_requests_running", **MODEL) + during.total(
        "inferflux_num_requests_waiting", **MODEL
    )
    assert in_flight == 1
    assert during.total("inferflux_kv_cache_usage_perc", **MODEL) > 0
    assert served.wait_idle()
    deadline = time.monotonic() + 10
    while True:  # the gauges are set by the step loop, once it saw the cancel
        after = Scrape.of(served)
        idle = after.total("inferflux_num_requests_running", **MODEL) == 0
        if idle or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert idle and after.total("inferflux_num_requests_waiting", **MODEL) == 0

    # the stream the client left is counted as vLLM counts it: an abort
    aborted = after.total(
        "inferflux_request_success_total", finished_reason="abort", **MODEL
    ) - before.total("inferflux_request_success_total", finished_reason="abort", **MODEL)
    assert aborted == 1
    assert after.total("inferflux_requests_total", finish_reason="cancelled") == after.total(
        "inferflux_request_success_total", finished_reason="abort"
    )


def phrase_in(text: str) -> str:
    """Two words from the middle of the model's own ``text``, to block."""
    pairs = [m.group(0) for m in re.finditer(r"[A-Za-z]{2,} [A-Za-z]{2,}", text)]
    assert len(pairs) >= 2, f"the model's output has too few words to block one: {text!r}"
    return pairs[len(pairs) // 2]


def test_an_output_blocked_mid_stream_counts_as_an_output_block(served: RunningServer) -> None:
    guardrail = served.access.guardrails.guardrail("output_blocklist")
    assert isinstance(guardrail, OutputBlocklist)
    client = openai.OpenAI(base_url=served.api_url, api_key=served.api_key, max_retries=0)
    body = {
        "model": MODEL_NAME,
        "messages": [{"role": "user", "content": "Tell me a short story about a fox."}],
        "max_tokens": 24,
        "temperature": 0,
    }
    whole = client.chat.completions.create(**body).choices[0].message.content or ""  # type: ignore[call-overload]
    before = Scrape.of(served)
    with guardrail.blocking(phrase_in(whole)):
        chunks = list(client.chat.completions.create(**body, stream=True))  # type: ignore[call-overload]
    assert chunks[-1].choices[0].finish_reason == "content_filter"
    after = Scrape.of(served)
    blocked = after.total("inferflux_guardrail_blocks_total", stage="output")
    assert blocked - before.total("inferflux_guardrail_blocks_total", stage="output") == 1
    assert after.total("inferflux_guardrail_blocks_total", stage="input") == before.total(
        "inferflux_guardrail_blocks_total", stage="input"
    )
