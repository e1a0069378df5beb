"""``POST /tokenize`` and ``POST /detokenize`` (vLLM's shapes) against the real vocabulary."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import MODEL_NAME, TEST_CONTEXT, RunningServer


@pytest.fixture
def http(server: RunningServer):  # type: ignore[no-untyped-def]
    with httpx.Client(base_url=server.base_url, headers=server.auth_headers, timeout=60) as client:
        yield client


def test_tokenize_a_prompt_and_detokenize_it_back(http: httpx.Client) -> None:
    reply = http.post("/tokenize", json={"model": MODEL_NAME, "prompt": "Hello, world!"})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["count"] == len(body["tokens"]) > 0
    assert body["max_model_len"] == TEST_CONTEXT
    back = http.post("/detokenize", json={"model": MODEL_NAME, "tokens": body["tokens"]})
    assert back.status_code == 200
    assert back.json() == {"prompt": "Hello, world!"}


def test_tokenize_messages_counts_what_chat_completions_prefills(
    http: httpx.Client, server: RunningServer
) -> None:
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    body = http.post("/tokenize", json={"model": MODEL_NAME, "messages": messages}).json()
    chat = http.post(
        "/v1/chat/completions", json={"model": MODEL_NAME, "messages": messages, "max_tokens": 1}
    ).json()
    assert body["count"] == chat["usage"]["prompt_tokens"]
    text = http.post("/detokenize", json={"model": MODEL_NAME, "tokens": body["tokens"]}).json()
    assert "<|im_start|>user\nWhat is the capital of France?" in text["prompt"]
    assert server.wait_idle()


def test_special_token_text_is_one_token(http: httpx.Client) -> None:
    body = http.post("/tokenize", json={"model": MODEL_NAME, "prompt": "<|im_start|>"}).json()
    assert body["count"] == 1


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/tokenize", {"model": MODEL_NAME}, None),
        ("/tokenize", {"model": MODEL_NAME, "prompt": "a", "messages": [{"role": "user"}]}, None),
        ("/tokenize", {"model": MODEL_NAME, "prompt": 5}, "prompt"),
        ("/detokenize", {"model": MODEL_NAME, "tokens": [1, 10_000_000]}, "tokens"),
        ("/detokenize", {"model": MODEL_NAME, "tokens": "abc"}, "tokens"),
        ("/detokenize", {"tokens": [1]}, "model"),
    ],
)
def test_bad_token_requests_are_400(
    http: httpx.Client, path: str, body: dict[str, object], param: str | None
) -> None:
    reply = http.post(path, json=body)
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert error["type"] == "invalid_request_error"
    if param is not None:
        assert error["param"] == param


@pytest.mark.parametrize("path", ["/tokenize", "/detokenize"])
def test_unknown_model_is_404(http: httpx.Client, path: str) -> None:
    reply = http.post(path, json={"model": "no-such-model", "prompt": "a", "tokens": [1]})
    assert reply.status_code == 404
    assert reply.json()["error"]["code"] == "model_not_found"


def test_token_endpoints_need_a_credential(server: RunningServer) -> None:
    reply = httpx.post(f"{server.base_url}/tokenize", json={"model": MODEL_NAME, "prompt": "a"})
    assert reply.status_code == 401
