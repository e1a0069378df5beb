"""Guardrails on a real server: blocked prompts, OPA's decisions, filtered output and streams."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import BLOCKED_PHRASE, MODEL_NAME, SecuredServer
from tests.fakes import FakeOpa

CHAT = "/v1/chat/completions"
SYSTEM = {"role": "system", "content": "You are a helpful assistant."}


def _body(question: str, **extra: Any) -> dict[str, Any]:
    return {
        "model": MODEL_NAME,
        "messages": [SYSTEM, {"role": "user", "content": question}],
        "temperature": 0,
        "max_tokens": 12,
        **extra,
    }


@pytest.fixture
def http(secured: SecuredServer) -> Iterator[httpx.Client]:
    """A client of the secured server; afterwards the server still answers and is idle."""
    server = secured.running
    with httpx.Client(base_url=server.base_url, headers=server.auth_headers, timeout=60) as c:
        yield c
        assert c.get("/healthz").status_code == 200
        assert c.post(CHAT, json=_body("Hello", max_tokens=2)).status_code == 200
    assert server.wait_idle(), "a request was left holding a sequence"


def _generated(secured: SecuredServer) -> float:
    return sum(
        s.value
        for f in secured.running.engine.metrics.registry.collect()
        for s in f.samples
        if s.name == "inferflux_requests_total"
    )


def _error(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    return str(error["message"])


def test_a_prompt_with_a_blocked_phrase_is_400_before_generation(
    secured: SecuredServer, http: httpx.Client
) -> None:
    before = _generated(secured)
    for body in (
        _body(f"Tell me about the {BLOCKED_PHRASE.upper()}"),
        {"model": MODEL_NAME, "prompt": ["fine", f"a {BLOCKED_PHRASE}"], "max_tokens": 2},
    ):
        path = CHAT if "messages" in body else "/v1/completions"
        message = _error(http.post(path, json=body), 400, "content_blocked")
        assert "blocklist" in message and BLOCKED_PHRASE not in message
    assert _generated(secured) == before


_CALL = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
_TOOL_TURNS: list[dict[str, Any]] = [
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": None, "tool_calls": [_CALL]},
]


def _with_messages(*messages: dict[str, Any]) -> dict[str, Any]:
    return {"model": MODEL_NAME, "messages": list(messages), "max_tokens": 2}


@pytest.mark.parametrize(
    ("path", "body"),
    [
        pytest.param(
            "/v1/completions",
            {"model": MODEL_NAME, "prompt": "def f():", "suffix": f"# {BLOCKED_PHRASE}"},
            id="completions-suffix",
        ),
        pytest.param(
            CHAT,
            _with_messages({"role": "user", "content": "Hi", "name": BLOCKED_PHRASE}),
            id="message-name",
        ),
        pytest.param(
            CHAT,
            _with_messages(
                *_TOOL_TURNS,
                {"role": "tool", "tool_call_id": "call_1", "content": f"a {BLOCKED_PHRASE}"},
            ),
            id="tool-result",
        ),
        pytest.param(
            CHAT,
            _with_messages(
                _TOOL_TURNS[0],
                {"role": "assistant", "tool_calls": [{**_CALL, "id": BLOCKED_PHRASE}]},
                {"role": "tool", "tool_call_id": BLOCKED_PHRASE, "content": "ok"},
            ),
            id="tool-call-ids",
        ),
        pytest.param(
            CHAT,
            _with_messages(
                _TOOL_TURNS[0],
                {
                    "role": "assistant",
                    "tool_calls": [
                        {
                            **_CALL,
                            "function": {"name": "f", "arguments": f'{{"x": "{BLOCKED_PHRASE}"}}'},
                        }
                    ],
                },
            ),
            id="earlier-call-arguments",
        ),
    ],
)
def test_a_blocked_phrase_in_any_part_of_the_prompt_is_400(
    secured: SecuredServer, http: httpx.Client, path: str, body: dict[str, Any]
) -> None:
    before = _generated(secured)
    message = _error(http.post(path, json=body), 400, "content_blocked")
    assert "blocklist" in message and BLOCKED_PHRASE not in message
    assert _generated(secured) == before
    assert http.post(CHAT, json=_body("Hello", max_tokens=2)).status_code == 200


def test_a_blocked_phrase_sent_as_token_ids_is_still_found(
    secured: SecuredServer, http: httpx.Client
) -> None:
    tokens = secured.running.engine.model(MODEL_NAME).tokenize_prompt(f"the {BLOCKED_PHRASE}")
    body = {"model": MODEL_NAME, "prompt": tokens, "max_tokens": 2}
    _error(http.post("/v1/completions", json=body), 400, "content_blocked")


def test_opa_refusal_is_400_with_its_reason_and_opa_down_is_503(
    secured: SecuredServer, http: httpx.Client, opa: FakeOpa
) -> None:
    message = _error(http.post(CHAT, json=_body("forbidden-by-opa topic")), 400, "content_blocked")
    assert "topic not allowed" in message
    assert opa.inputs[-1]["key_id"] == secured.running.api_key[4:20]
    opa.mode = "error"
    try:
        _error(http.post(CHAT, json=_body("Hello")), 503, "guardrail_unavailable")
    finally:
        opa.mode = "policy"


STORY = "Tell me a short story about a cat."


def _events(response: httpx.Response) -> list[dict[str, Any]]:
    """A 200 stream's chunks, checked to be SSE ``data:`` events ending with ``[DONE]``."""
    assert response.status_code == 200, response.read()
    raw = response.read().decode()
    events = [e for e in raw.split("\n\n") if e.strip() and not e.startswith(":")]
    assert all(e.startswith("data: ") for e in events), raw
    assert events[-1] == "data: [DONE]"
    return [json.loads(e[6:]) for e in events[:-1]]


def stream_chunks(
    http: httpx.Client, body: dict[str, Any], path: str = CHAT
) -> list[dict[str, Any]]:
    with http.stream("POST", path, json=body) as response:
        return _events(response)


def _content(chunks: list[dict[str, Any]]) -> str:
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


def phrase_in(text: str) -> str:
    """Two words from the middle of the model's ``text``: a phrase that spans several tokens,
    with text before it."""
    pairs = [m.group(0) for m in re.finditer(r"[A-Za-z]{2,} [A-Za-z]{2,}", text)]
    assert len(pairs) >= 2, f"the model's output has too few words to block one: {text!r}"
    return pairs[len(pairs) // 2]


def assert_cut_before(sent: str, whole: str, phrase: str) -> None:
    """``sent`` is the start of ``whole`` up to the phrase (less at most the phrase's length,
    which a filter may hold back), and holds nothing of it."""
    at = whole.index(phrase)
    assert whole.startswith(sent), (sent, whole)
    assert at - len(phrase) < len(sent) <= at, (sent, whole, phrase)


def assert_nowhere(phrase: str, *responses: Any) -> None:
    """``phrase`` is in no field of the responses (serialized whole, ignoring case)."""
    text = json.dumps(responses, ensure_ascii=False).casefold()
    assert phrase.casefold() not in text


def assert_refused_whole(
    secured: SecuredServer, http: httpx.Client, phrase: str, body: dict[str, Any], path: str = CHAT
) -> None:
    """With ``phrase`` blocked, the complete response is a 400 that says nothing of it."""
    with secured.output_blocklist.blocking(phrase):
        response = http.post(path, json=body)
    _error(response, 400, "content_blocked")
    assert_nowhere(phrase, response.json())


def test_a_complete_response_with_a_blocked_phrase_is_400(
    secured: SecuredServer, http: httpx.Client
) -> None:
    body = _body(STORY, max_tokens=24)
    whole = http.post(CHAT, json=body)
    assert whole.status_code == 200, whole.text
    assert_refused_whole(
        secured, http, phrase_in(whole.json()["choices"][0]["message"]["content"]), body
    )
    again = http.post(CHAT, json=body)
    assert again.json()["choices"] == whole.json()["choices"]


def test_a_stream_is_cut_before_a_phrase_split_across_chunks(
    secured: SecuredServer, http: httpx.Client
) -> None:
    body = _body(STORY, stream=True, max_tokens=24)
    whole = _content(stream_chunks(http, body))
    phrase = phrase_in(whole)
    with secured.output_blocklist.blocking(phrase):
        chunks = stream_chunks(http, body)
    text = _content(chunks)
    assert_cut_before(text, whole, phrase)
    assert_nowhere(phrase, chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "content_filter"
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-1])


def test_the_openai_sdk_reads_a_filtered_stream(secured: SecuredServer) -> None:
    server = secured.running
    client = openai.OpenAI(base_url=server.api_url, api_key=server.api_key, max_retries=0)
    body = _body(STORY, max_tokens=24)
    whole = client.chat.completions.create(**body).choices[0].message.content or ""
    phrase = phrase_in(whole)
    with secured.output_blocklist.blocking(phrase):
        chunks = list(client.chat.completions.create(**body, stream=True))
    assert chunks[-1].choices[0].finish_reason == "content_filter"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert_cut_before(text, whole, phrase)
    assert server.wait_idle(), "the cut stream's sequence was not freed"


ANSWER_TOOL = {
    "type": "function",
    "function": {
        "name": "answer",
        "description": "Give the answer",
        "parameters": {
            "type": "object",
            "properties": {"text": {"type": "string", "maxLength": 60}},
            "required": ["text"],
        },
    },
}


def _forced_answer(question: str, **extra: Any) -> dict[str, Any]:
    return _body(
        question,
        tools=[ANSWER_TOOL],
        tool_choice="required",
        parallel_tool_calls=False,
        max_tokens=40,
        **extra,
    )


def _answer_phrase(http: httpx.Client) -> tuple[str, str]:
    """The forced call's arguments, and a phrase of them to block: the model's answer."""
    reply = http.post(CHAT, json=_forced_answer("What is the capital of France?"))
    assert reply.status_code == 200, reply.text
    arguments = reply.json()["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"]
    answer = str(json.loads(arguments)["text"]).strip()
    assert answer and answer in arguments, f"no answer to block in {arguments!r}"
    return arguments, answer


def test_a_tool_call_with_a_blocked_phrase_is_400(
    secured: SecuredServer, http: httpx.Client
) -> None:
    _, phrase = _answer_phrase(http)
    assert_refused_whole(secured, http, phrase, _forced_answer("What is the capital of France?"))


def test_a_streamed_tool_call_is_cut_before_a_blocked_phrase(
    secured: SecuredServer, http: httpx.Client
) -> None:
    whole, phrase = _answer_phrase(http)
    body = _forced_answer("What is the capital of France?", stream=True)
    with secured.output_blocklist.blocking(phrase):
        chunks = stream_chunks(http, body)
    calls = [c for chunk in chunks for c in chunk["choices"][0]["delta"].get("tool_calls") or ()]
    assert calls[0]["function"]["name"] == "answer"
    arguments = "".join(c["function"].get("arguments") or "" for c in calls)
    assert arguments.startswith("{")
    assert_cut_before(arguments, whole, phrase)
    assert_nowhere(phrase, chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "content_filter"


def test_tool_definitions_are_part_of_the_checked_prompt(http: httpx.Client) -> None:
    tool = {"type": "function", "function": {"name": "f", "description": BLOCKED_PHRASE}}
    response = http.post(CHAT, json=_body("Hello", tools=[tool]))
    _error(response, 400, "content_blocked")


# -- token logprobs carry nothing of a blocked output ----------------------------------------

COMPLETIONS = "/v1/completions"


def _completion(**extra: Any) -> dict[str, Any]:
    return {
        "model": MODEL_NAME,
        "prompt": "Once upon a time, a cat",
        "temperature": 0,
        "max_tokens": 24,
        "logprobs": 3,
        **extra,
    }


def _chat_tokens(choices: list[dict[str, Any]]) -> str:
    """The text of the token entries in chat ``logprobs.content``, from their bytes."""
    entries = [e for c in choices for e in (c.get("logprobs") or {}).get("content") or ()]
    return b"".join(bytes(e["bytes"]) for e in entries).decode()


def _completion_tokens(choices: list[dict[str, Any]]) -> str:
    return "".join(t for c in choices for t in (c.get("logprobs") or {}).get("tokens") or ())


def test_streamed_chat_logprobs_are_cut_with_the_text(
    secured: SecuredServer, http: httpx.Client
) -> None:
    body = _body(STORY, stream=True, max_tokens=24, logprobs=True, top_logprobs=3)
    chunks = stream_chunks(http, body)
    whole = _content(chunks)
    assert _chat_tokens([c["choices"][0] for c in chunks]) == whole
    phrase = phrase_in(whole)
    with secured.output_blocklist.blocking(phrase):
        cut = stream_chunks(http, body)
    assert cut[-1]["choices"][0]["finish_reason"] == "content_filter"
    sent = _content(cut)
    assert_cut_before(sent, whole, phrase)
    assert sent.startswith(_chat_tokens([c["choices"][0] for c in cut]))
    assert_nowhere(phrase, cut)


def test_streamed_completion_logprobs_are_cut_with_the_text(
    secured: SecuredServer, http: httpx.Client
) -> None:
    chunks = stream_chunks(http, _completion(stream=True), COMPLETIONS)
    whole = "".join(c["choices"][0]["text"] for c in chunks)
    assert _completion_tokens([c["choices"][0] for c in chunks]) == whole
    phrase = phrase_in(whole)
    with secured.output_blocklist.blocking(phrase):
        cut = stream_chunks(http, _completion(stream=True), COMPLETIONS)
    assert cut[-1]["choices"][0]["finish_reason"] == "content_filter"
    sent = "".join(c["choices"][0]["text"] for c in cut)
    assert_cut_before(sent, whole, phrase)
    assert sent.startswith(_completion_tokens([c["choices"][0] for c in cut]))
    assert_nowhere(phrase, cut)


@pytest.mark.parametrize("path", [CHAT, COMPLETIONS])
def test_a_whole_response_with_logprobs_and_a_blocked_phrase_is_400(
    secured: SecuredServer, http: httpx.Client, path: str
) -> None:
    if path == CHAT:
        body = _body(STORY, max_tokens=24, logprobs=True, top_logprobs=3)
    else:
        body = _completion()
    reply = http.post(path, json=body)
    assert reply.status_code == 200, reply.text
    choice = reply.json()["choices"][0]
    if path == CHAT:
        whole = choice["message"]["content"]
        assert _chat_tokens([choice]) == whole
    else:
        whole = choice["text"]
        assert _completion_tokens([choice]) == whole
    assert_refused_whole(secured, http, phrase_in(whole), body, path)


def test_a_streamed_tool_calls_logprobs_carry_nothing_of_a_blocked_answer(
    secured: SecuredServer, http: httpx.Client
) -> None:
    _, phrase = _answer_phrase(http)
    body = _forced_answer("What is the capital of France?", stream=True, logprobs=True)
    with secured.output_blocklist.blocking(phrase):
        chunks = stream_chunks(http, body)
    assert chunks[-1]["choices"][0]["finish_reason"] == "content_filter"
    assert_nowhere(phrase, chunks)
    assert phrase not in _chat_tokens([c["choices"][0] for c in chunks])
