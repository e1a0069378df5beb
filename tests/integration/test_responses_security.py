"""``/v1/responses`` is admitted as chat completions are: credentials, the ``inference``
scope, model allow-lists, request and token rate limits, guardrails on the input and on
streamed text and tool-call arguments, the audit line and the metrics."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import BLOCKED_PHRASE, MODEL_NAME, RunningServer, SecuredServer
from tests.integration.test_audit_and_secrets import _line_for
from tests.integration.test_guardrails_http import assert_cut_before, assert_nowhere, phrase_in

STORY = "Tell me a short story about a cat."
ANSWER_TOOL = {
    "type": "function",
    "name": "answer",
    "description": "Give the answer",
    "parameters": {
        "type": "object",
        "properties": {"text": {"type": "string", "maxLength": 60}},
        "required": ["text"],
    },
}


def _body(text: str = "Say hello.", **extra: Any) -> dict[str, Any]:
    return {"model": MODEL_NAME, "input": text, "temperature": 0, "max_output_tokens": 24, **extra}


def _forced_answer(**extra: Any) -> dict[str, Any]:
    return _body(
        "What is the capital of France?",
        tools=[ANSWER_TOOL],
        tool_choice="required",
        parallel_tool_calls=False,
        max_output_tokens=40,
        **extra,
    )


def _new_key(server: RunningServer, **fields: Any) -> str:
    with httpx.Client(base_url=server.base_url, timeout=30) as admin:
        made = admin.post(
            "/v1/admin/keys", json={"name": "t", **fields}, headers=server.auth_headers
        )
    assert made.status_code in (200, 201), made.text
    return str(made.json()["key"])


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _events(response: httpx.Response) -> list[dict[str, Any]]:
    """A 200 stream's events (``event:`` + ``data:``), no ``[DONE]``."""
    assert response.status_code == 200, response.read()
    raw = response.read().decode()
    blocks = [b for b in raw.split("\n\n") if b.strip() and not b.startswith(":")]
    events = []
    for block in blocks:
        name, data = block.split("\n")
        assert name.startswith("event: ") and data.startswith("data: "), block
        events.append(json.loads(data[6:]))
        assert events[-1]["type"] == name[7:]
    return events


@pytest.fixture
def http(secured: SecuredServer) -> Iterator[httpx.Client]:
    """A client of the secured server; afterwards the server is idle."""
    server = secured.running
    with httpx.Client(base_url=server.api_url, headers=server.auth_headers, timeout=120) as c:
        yield c
    assert server.wait_idle(), "a request was left holding a sequence"


# -- credentials, scopes, allow-lists and rate limits ----------------------------------------


def test_every_route_needs_a_credential_and_the_inference_scope(server: RunningServer) -> None:
    operator = _bearer(_new_key(server, roles=["operator"]))
    with httpx.Client(base_url=server.api_url, timeout=60) as client:
        for method, path, body in (
            ("POST", "/responses", _body()),
            ("GET", "/responses/resp_x", None),
            ("DELETE", "/responses/resp_x", None),
            ("GET", "/responses/resp_x/input_items", None),
        ):
            anonymous = client.request(method, path, json=body)
            assert anonymous.status_code == 401, (method, path)
            assert anonymous.json()["error"]["type"] == "authentication_error"
            refused = client.request(method, path, json=body, headers=operator)
            assert refused.status_code == 403, (method, path)
            assert refused.json()["error"]["code"] == "insufficient_scope"


def test_the_model_allow_list_applies(server: RunningServer) -> None:
    key = _bearer(_new_key(server, models=["some-other-model"]))
    with httpx.Client(base_url=server.api_url, timeout=60) as client:
        refused = client.post("/responses", json=_body(), headers=key)
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "model_not_allowed"


def test_tokens_are_charged_and_a_key_in_debt_gets_429(server: RunningServer) -> None:
    key = _bearer(_new_key(server, limits={"tokens_per_minute": 40}))
    long_input = "one two three four five six seven eight nine ten " * 6
    with httpx.Client(base_url=server.api_url, timeout=60) as client:
        first = client.post("/responses", json=_body(long_input, max_output_tokens=2), headers=key)
        assert first.status_code == 200, first.text
        assert first.json()["usage"]["total_tokens"] > 40
        assert first.headers["x-ratelimit-remaining-tokens"] == "0"
        second = client.post("/responses", json=_body(long_input), headers=key)
    assert second.status_code == 429
    assert second.json()["error"]["type"] == "rate_limit_error"


def test_the_request_rate_limit_counts_every_responses_route(server: RunningServer) -> None:
    key = _bearer(_new_key(server, limits={"requests_per_minute": 2}))
    with httpx.Client(base_url=server.api_url, timeout=60) as client:
        made = client.post("/responses", json=_body(max_output_tokens=2), headers=key)
        assert made.status_code == 200, made.text
        assert client.get(f"/responses/{made.json()['id']}", headers=key).status_code == 200
        third = client.get(f"/responses/{made.json()['id']}", headers=key)
    assert third.status_code == 429 and int(third.headers["retry-after"]) >= 1


def test_requests_are_counted_in_the_metrics(server: RunningServer) -> None:
    def served() -> float:
        return sum(
            s.value
            for f in server.engine.metrics.registry.collect()
            for s in f.samples
            if s.name == "inferflux_requests_total"
        )

    before = served()
    with httpx.Client(base_url=server.api_url, headers=server.auth_headers, timeout=60) as c:
        assert c.post("/responses", json=_body(max_output_tokens=2)).status_code == 200
    assert served() == before + 1


# -- guardrails ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        _body(f"Tell me about the {BLOCKED_PHRASE}"),
        _body(instructions=f"Mention the {BLOCKED_PHRASE.upper()}"),
        _body(
            input=[{"role": "user", "content": [{"type": "input_text", "text": BLOCKED_PHRASE}]}]
        ),
        _body(
            input=[
                {"role": "user", "content": "Hi"},
                {"type": "function_call", "call_id": "call_1", "name": "f", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "call_1", "output": BLOCKED_PHRASE},
            ]
        ),
        _body(tools=[{**ANSWER_TOOL, "description": BLOCKED_PHRASE}]),
    ],
    ids=["input", "instructions", "input-text-part", "call-output", "tool-description"],
)
def test_a_blocked_phrase_anywhere_in_the_input_is_400(
    http: httpx.Client, body: dict[str, Any]
) -> None:
    refused = http.post("/responses", json=body)
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"]["code"] == "content_blocked"
    assert BLOCKED_PHRASE not in refused.json()["error"]["message"]


def test_a_whole_response_with_a_blocked_phrase_is_400(
    secured: SecuredServer, http: httpx.Client
) -> None:
    body = _body(STORY)
    whole = http.post("/responses", json=body).json()
    phrase = phrase_in(whole["output"][0]["content"][0]["text"])
    with secured.output_blocklist.blocking(phrase):
        refused = http.post("/responses", json=body)
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "content_blocked"
    assert_nowhere(phrase, refused.json())


def test_a_streamed_text_is_cut_before_a_blocked_phrase(
    secured: SecuredServer, http: httpx.Client
) -> None:
    body = _body(STORY, stream=True)
    whole = "".join(
        e["delta"] for e in _events(http.post("/responses", json=body)) if "text.delta" in e["type"]
    )
    phrase = phrase_in(whole)
    with secured.output_blocklist.blocking(phrase):
        events = _events(http.post("/responses", json=body))
    sent = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert_cut_before(sent, whole, phrase)
    assert_nowhere(phrase, events)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    final = events[-1]
    assert final["type"] == "response.incomplete"
    assert final["response"]["incomplete_details"] == {"reason": "content_filter"}
    assert final["response"]["output"][0]["content"][0]["text"] == sent


def test_streamed_tool_call_arguments_are_cut_before_a_blocked_phrase(
    secured: SecuredServer, http: httpx.Client
) -> None:
    reply = http.post("/responses", json=_forced_answer())
    assert reply.status_code == 200, reply.text
    whole = reply.json()["output"][0]["arguments"]
    phrase = str(json.loads(whole)["text"]).strip()
    assert phrase and phrase in whole
    with secured.output_blocklist.blocking(phrase):
        events = _events(http.post("/responses", json=_forced_answer(stream=True)))
        refused = http.post("/responses", json=_forced_answer())
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "content_blocked"
    sent = "".join(
        e["delta"] for e in events if e["type"] == "response.function_call_arguments.delta"
    )
    assert sent.startswith("{")
    assert_cut_before(sent, whole, phrase)
    assert_nowhere(phrase, events)
    assert events[-1]["type"] == "response.incomplete"


# -- audit -----------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_every_response_gets_one_audit_line_with_hashes_not_text(
    secured: SecuredServer, http: httpx.Client, stream: bool
) -> None:
    prompt = "Say hello to the auditor."
    request_id = f"responses-audit-{stream}"
    response = http.post(
        "/responses",
        json=_body(prompt, max_output_tokens=5, stream=stream),
        headers={"X-Request-ID": request_id},
    )
    assert response.status_code == 200
    response.read()
    line = _line_for(secured, request_id)
    assert line["path"] == "/v1/responses" and line["status"] == 200
    assert line["model"] == MODEL_NAME and line["stream"] is stream
    assert line["prompt_sha256"] == hashlib.sha256(prompt.encode()).hexdigest()
    assert isinstance(line["prompt_tokens"], int) and line["prompt_tokens"] > 5
    assert isinstance(line["completion_tokens"], int) and 1 <= line["completion_tokens"] <= 5
    if not stream:
        text = response.json()["output"][0]["content"][0]["text"]
        assert line["response_sha256"] == hashlib.sha256(text.encode()).hexdigest()
    assert prompt not in secured.audit_path.read_text()
