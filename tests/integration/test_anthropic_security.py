"""Anthropic's Messages API behind guardrails and the audit log, as chat completions are.

A phrase to block is taken from the model's own answer first (what it says differs between
CPUs), then the same request is made with that phrase blocked.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import pytest

from tests.conftest import BLOCKED_PHRASE, MODEL_NAME, SecuredServer
from tests.integration.test_guardrails_http import assert_cut_before, assert_nowhere, phrase_in

STORY = [{"role": "user", "content": "Tell me a short story about a cat."}]
GREEDY = {"temperature": 0}
ANSWER = {
    "name": "answer",
    "description": "Give the answer",
    "input_schema": {
        "type": "object",
        "properties": {"text": {"type": "string", "maxLength": 60}},
        "required": ["text"],
    },
}


@pytest.fixture
def claude(secured: SecuredServer) -> Iterator[anthropic.Anthropic]:
    """The SDK against the secured server; afterwards it is idle."""
    server = secured.running
    with anthropic.Anthropic(
        base_url=server.base_url, api_key=server.api_key, max_retries=0, timeout=120
    ) as client:
        yield client
    assert server.wait_idle(), "a request was left holding a sequence"


def _story(claude: anthropic.Anthropic, **extra: Any) -> anthropic.types.Message:
    return claude.messages.create(
        model=MODEL_NAME, max_tokens=24, messages=STORY, extra_body=GREEDY, **extra
    )


def _text(message: anthropic.types.Message) -> str:
    return "".join(block.text for block in message.content if block.type == "text")


def test_a_blocked_prompt_is_400_in_anthropics_shape(claude: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        claude.messages.create(
            model=MODEL_NAME,
            max_tokens=4,
            messages=[{"role": "user", "content": f"Tell me about the {BLOCKED_PHRASE}"}],
        )
    error = caught.value.body["error"]  # type: ignore[index]
    assert error["type"] == "invalid_request_error" and "blocklist" in error["message"]


def test_a_streamed_answer_is_cut_before_a_blocked_phrase_with_stop_reason_refusal(
    secured: SecuredServer, claude: anthropic.Anthropic
) -> None:
    whole = _text(_story(claude))
    phrase = phrase_in(whole)
    with secured.output_blocklist.blocking(phrase):
        events = list(
            claude.messages.create(
                model=MODEL_NAME, max_tokens=24, messages=STORY, extra_body=GREEDY, stream=True
            )
        )
        with pytest.raises(anthropic.BadRequestError) as caught:
            _story(claude)
    sent = "".join(e.delta.text for e in events if e.type == "content_block_delta")
    assert_cut_before(sent, whole, phrase)
    assert_nowhere(phrase, [e.to_dict() for e in events], caught.value.body)
    assert [e.type for e in events[-3:]] == ["content_block_stop", "message_delta", "message_stop"]
    assert events[-2].delta.stop_reason == "refusal"
    assert caught.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]


def test_a_streamed_tool_input_is_cut_before_a_blocked_phrase(
    secured: SecuredServer, claude: anthropic.Anthropic
) -> None:
    kwargs: dict[str, Any] = {
        "model": MODEL_NAME,
        "max_tokens": 48,
        "messages": [{"role": "user", "content": "What is the capital of France?"}],
        "tools": [ANSWER],
        "tool_choice": {"type": "tool", "name": "answer"},
        "extra_body": GREEDY,
    }
    whole = claude.messages.create(**kwargs)
    use = next(block for block in whole.content if block.type == "tool_use")
    arguments = json.dumps(use.input)
    phrase = str(use.input["text"]).strip()  # the model's answer
    assert phrase and phrase in arguments, f"no answer to block in {arguments!r}"
    with secured.output_blocklist.blocking(phrase):
        events = list(claude.messages.create(**kwargs, stream=True))
    sent = "".join(
        e.delta.partial_json
        for e in events
        if e.type == "content_block_delta" and e.delta.type == "input_json_delta"
    )
    assert sent.startswith("{") and phrase not in sent
    assert_nowhere(phrase, [e.to_dict() for e in events])
    assert len(sent) < len(arguments)
    assert events[-2].delta.stop_reason == "refusal"


def _audit_line(secured: SecuredServer, request_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for line in secured.audit_path.read_text().splitlines():
            record = json.loads(line)
            if record["request_id"] == request_id:
                return record  # type: ignore[no-any-return]
        time.sleep(0.05)
    raise AssertionError(f"no audit line for {request_id}")


@pytest.mark.parametrize("stream", [False, True])
def test_a_message_gets_an_audit_line_with_its_route_and_tokens(
    secured: SecuredServer, stream: bool
) -> None:
    server = secured.running
    request_id = f"anthropic-audit-{stream}"
    headers = {"x-api-key": server.api_key, "X-Request-ID": request_id}
    body = {"model": MODEL_NAME, "max_tokens": 8, "messages": STORY, "stream": stream}
    with httpx.Client(base_url=server.base_url, timeout=120) as http:
        response = http.post("/v1/messages", json=body, headers=headers)
    assert response.status_code == 200 and response.headers["request-id"] == request_id
    if stream:
        events = [e for e in response.text.split("\n\n") if e.startswith("event: message_delta")]
        usage = json.loads(events[0].split("\n")[1].removeprefix("data: "))["usage"]
    else:
        usage = response.json()["usage"]
    line = _audit_line(secured, request_id)
    assert (line["path"], line["model"], line["status"], line["stream"]) == (
        "/v1/messages",
        MODEL_NAME,
        200,
        stream,
    )
    assert line["prompt_tokens"] == usage["input_tokens"] + usage["cache_read_input_tokens"]
    assert line["completion_tokens"] == usage["output_tokens"] > 0
    assert line["key_id"] and line["auth"] == "api_key"


def test_count_tokens_gets_an_audit_line_without_tokens(secured: SecuredServer) -> None:
    server = secured.running
    headers = {**server.auth_headers, "X-Request-ID": "anthropic-audit-count"}
    body = {"model": MODEL_NAME, "messages": STORY}
    with httpx.Client(base_url=server.base_url, timeout=120) as http:
        response = http.post("/v1/messages/count_tokens", json=body, headers=headers)
    assert response.status_code == 200 and response.json()["input_tokens"] > 0
    line = _audit_line(secured, "anthropic-audit-count")
    assert (line["path"], line["model"], line["status"]) == (
        "/v1/messages/count_tokens",
        MODEL_NAME,
        200,
    )
    assert (line["prompt_tokens"], line["completion_tokens"]) == (0, 0)
