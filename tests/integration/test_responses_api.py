"""``/v1/responses`` through the official OpenAI SDK and raw HTTP, against the real model.

Bodies are checked against OpenAI's own schemas (the OpenAPI document); what the model says
is never asserted, only its shape, and whole and streamed runs of one greedy request agree.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema
import openai
import pytest

from inferflux_core.auth.policy_admin import KeyCreate, PolicyAdmin
from tests.conftest import MODEL_NAME, RunningServer
from tests.integration.openai_spec import OpenAISpec, load_spec

WEATHER: dict[str, Any] = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 30}},
    "required": ["city"],
    "additionalProperties": False,
}
TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "name": "get_weather",
        "description": "Get the weather forecast for a city",
        "parameters": WEATHER,
        "strict": True,
    }
]
FORCED = {"type": "function", "name": "get_weather"}
QUESTION = "What is the weather in Paris?"
PERSON: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 20},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
    },
    "required": ["name", "age"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def spec() -> OpenAISpec:
    """OpenAI's OpenAPI document, loaded once for the module."""
    return load_spec()


@pytest.fixture
def client(openai_client: openai.OpenAI, server: RunningServer) -> Iterator[openai.OpenAI]:
    """The SDK client; after the test no request may still hold a sequence."""
    yield openai_client
    assert server.wait_idle(), "a request was left holding a sequence"


@pytest.fixture
def http(server: RunningServer) -> Iterator[httpx.Client]:
    """Raw HTTP with the admin key."""
    with httpx.Client(base_url=server.api_url, headers=server.auth_headers, timeout=120) as c:
        yield c


@pytest.fixture(scope="module")
def other_client(server: RunningServer) -> openai.OpenAI:
    """The SDK with another credential (role ``user``)."""
    key = PolicyAdmin(server.access.store).create_key(KeyCreate(name="other", roles=["user"]))
    return openai.OpenAI(base_url=server.api_url, api_key=key["key"], max_retries=0, timeout=120)


def sse_events(http: httpx.Client, body: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """``(event name, data)`` of each event of a streamed ``POST /v1/responses``."""
    events: list[tuple[str, dict[str, Any]]] = []
    with http.stream("POST", "/responses", json={**body, "stream": True}) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        name = None
        for line in response.iter_lines():
            if line.startswith("event: "):
                name = line[len("event: ") :]
            elif line.startswith("data: "):
                assert name is not None, "data without an event name"
                events.append((name, json.loads(line[len("data: ") :])))
                name = None
    return events


def _body(**extra: Any) -> dict[str, Any]:
    return {"model": MODEL_NAME, "input": "Say hello.", "temperature": 0, **extra}


# -- whole and streamed ---------------------------------------------------------------------


def test_create_returns_a_response_object_valid_against_openai_schema(
    client: openai.OpenAI, http: httpx.Client, spec: OpenAISpec
) -> None:
    raw = http.post(
        "/responses",
        json=_body(instructions="Be brief.", max_output_tokens=16, metadata={"run": "a"}),
    )
    assert raw.status_code == 200, raw.text
    body = raw.json()
    spec.validate("Response", body)
    assert body["id"].startswith("resp_") and body["object"] == "response"
    assert body["status"] in ("completed", "incomplete")
    assert body["model"] == MODEL_NAME and body["instructions"] == "Be brief."
    assert body["metadata"] == {"run": "a"} and body["store"] is True
    assert body["truncation"] == "disabled" and body["tools"] == []
    [message] = body["output"]
    assert message["type"] == "message" and message["role"] == "assistant"
    assert message["id"].startswith("msg_")
    [part] = message["content"]
    assert part["type"] == "output_text" and part["annotations"] == []
    usage = body["usage"]
    assert usage["input_tokens"] > 0 and 0 < usage["output_tokens"] <= 16
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    assert usage["output_tokens_details"] == {"reasoning_tokens": 0}
    assert usage["input_tokens_details"]["cached_tokens"] >= 0

    sdk = client.responses.create(**_body(max_output_tokens=8))
    assert sdk.object == "response" and sdk.output_text == sdk.output[0].content[0].text  # type: ignore[union-attr]


def test_a_list_of_input_items_with_text_parts_is_a_conversation(
    client: openai.OpenAI, spec: OpenAISpec, http: httpx.Client
) -> None:
    items = [
        {"role": "developer", "content": "Answer in one word."},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hi"}]},
        {"role": "assistant", "content": [{"type": "output_text", "text": "Hello"}]},
        {"role": "user", "content": "Which colour is the sky?"},
    ]
    reply = http.post("/responses", json=_body(input=items, max_output_tokens=8))
    assert reply.status_code == 200, reply.text
    spec.validate("Response", reply.json())
    listed = http.get(f"/responses/{reply.json()['id']}/input_items", params={"order": "asc"})
    spec.validate("ResponseItemList", listed.json())
    assert [i["role"] for i in listed.json()["data"]] == ["developer", "user", "assistant", "user"]


def test_streamed_events_come_in_openai_order_with_sequence_numbers(
    http: httpx.Client, spec: OpenAISpec
) -> None:
    body = _body(max_output_tokens=24)
    events = sse_events(http, body)
    names = [name for name, _ in events]
    assert [data["type"] for _, data in events] == names
    assert [data["sequence_number"] for _, data in events] == list(range(len(events)))
    for _, data in events:
        spec.validate_event("ResponseStreamEvent", data)
    assert names[:5] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
    ]
    ending = [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
    ]
    deltas = [n for n in names[4:-4]]
    assert set(deltas) == {"response.output_text.delta"}
    assert names[-4:-1] == ending and names[-1] in ("response.completed", "response.incomplete")
    created, final = events[0][1]["response"], events[-1][1]["response"]
    assert created["status"] == "in_progress" and created["output"] == []
    text = "".join(data["delta"] for name, data in events if name.endswith("text.delta"))
    item_id = events[2][1]["item"]["id"]
    assert all(d.get("item_id", item_id) == item_id for _, d in events[2:-1])
    assert final["output"][0]["content"][0]["text"] == text
    assert final["id"] == created["id"]

    whole = http.post("/responses", json=body).json()
    assert whole["output"][0]["content"][0]["text"] == text
    assert whole["usage"]["output_tokens"] == final["usage"]["output_tokens"]


LOGPROBS = {"include": ["message.output_text.logprobs"], "top_logprobs": 2}


def test_logprobs_come_with_the_output_text_whole_and_streamed(
    client: openai.OpenAI, http: httpx.Client, spec: OpenAISpec
) -> None:
    body = _body(max_output_tokens=12, **LOGPROBS)
    whole = http.post("/responses", json=body).json()
    spec.validate("Response", whole)
    assert whole["top_logprobs"] == 2
    part = whole["output"][0]["content"][0]
    entries = part["logprobs"]
    assert len(entries) == whole["usage"]["output_tokens"]
    assert "".join(e["token"] for e in entries) == part["text"]
    for entry in entries:
        assert entry["logprob"] <= 0 and bytes(entry["bytes"]).decode() == entry["token"]
        assert len(entry["top_logprobs"]) == 2
        best = max(t["logprob"] for t in entry["top_logprobs"])
        assert entry["logprob"] <= best + 1e-6  # greedy: the pick is the most likely token
        assert abs(entry["logprob"] - best) < 1e-4

    events = sse_events(http, body)
    for _, data in events:
        spec.validate_event("ResponseStreamEvent", data)
    deltas = [d for name, d in events if name == "response.output_text.delta"]
    assert all("".join(e["token"] for e in d["logprobs"]) == d["delta"] for d in deltas)
    streamed = [e for d in deltas for e in d["logprobs"]]
    [done] = [d for name, d in events if name == "response.output_text.done"]
    assert done["logprobs"] == streamed
    assert [e["logprob"] for e in streamed] == pytest.approx([e["logprob"] for e in entries])
    final = events[-1][1]["response"]["output"][0]["content"][0]
    assert [e["token"] for e in final["logprobs"]] == [e["token"] for e in streamed]

    plain = http.post("/responses", json=_body(max_output_tokens=12)).json()
    assert plain["output"][0]["content"][0]["logprobs"] == []
    sdk = client.responses.create(
        **_body(max_output_tokens=4), include=["message.output_text.logprobs"]
    )
    assert sdk.output[0].content[0].logprobs  # type: ignore[union-attr]


def test_the_sdk_streams_and_collects_the_final_response(client: openai.OpenAI) -> None:
    with client.responses.stream(**_body(max_output_tokens=200)) as stream:
        events = list(stream)
        final = stream.get_final_response()
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[0].type == "response.created" and events[-1].type == "response.completed"
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert final.output_text == text and final.status == "completed"
    assert final.usage is not None and final.usage.output_tokens > 0


def test_max_output_tokens_makes_the_response_incomplete(
    client: openai.OpenAI, http: httpx.Client
) -> None:
    body = _body(input="Count from one to fifty in words.", max_output_tokens=3)
    whole = client.responses.create(**body)
    assert whole.status == "incomplete"
    assert whole.incomplete_details is not None
    assert whole.incomplete_details.reason == "max_output_tokens"
    assert whole.usage is not None and whole.usage.output_tokens == 3
    events = sse_events(http, body)
    assert events[-1][0] == "response.incomplete"
    assert events[-1][1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}


# -- the store ------------------------------------------------------------------------------


def test_a_stored_response_is_retrieved_listed_and_deleted(
    client: openai.OpenAI, http: httpx.Client, spec: OpenAISpec
) -> None:
    made = client.responses.create(model=MODEL_NAME, input="Say hello.", max_output_tokens=6)
    got = client.responses.retrieve(made.id)
    assert got.id == made.id and got.output_text == made.output_text
    spec.validate("Response", http.get(f"/responses/{made.id}").json())
    items = client.responses.input_items.list(made.id)
    assert [i.type for i in items.data] == ["message"]
    assert items.data[0].role == "user"  # type: ignore[union-attr]
    assert items.first_id == items.last_id == items.data[0].id and items.has_more is False
    deleted = http.delete(f"/responses/{made.id}")
    assert deleted.json() == {"id": made.id, "object": "response.deleted", "deleted": True}
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(made.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.delete(made.id)


def test_input_items_are_paged_with_limit_order_and_after(http: httpx.Client) -> None:
    items = [{"role": "user", "content": f"Message {i}"} for i in range(5)]
    made = http.post("/responses", json=_body(input=items, max_output_tokens=2)).json()
    url = f"/responses/{made['id']}/input_items"
    page = http.get(url, params={"limit": 2}).json()
    texts = [i["content"][0]["text"] for i in page["data"]]
    assert texts == ["Message 4", "Message 3"] and page["has_more"] is True
    rest = http.get(url, params={"limit": 10, "after": page["last_id"]}).json()
    assert [i["content"][0]["text"] for i in rest["data"]] == [
        "Message 2",
        "Message 1",
        "Message 0",
    ]
    assert rest["has_more"] is False
    ascending = http.get(url, params={"order": "asc", "limit": 1}).json()
    assert ascending["data"][0]["content"][0]["text"] == "Message 0"
    for params, param in (
        ({"limit": 0}, "limit"),
        ({"limit": 101}, "limit"),
        ({"limit": "x"}, "limit"),
        ({"order": "up"}, "order"),
        ({"after": "msg_nope"}, "after"),
    ):
        refused = http.get(url, params=params)
        assert refused.status_code == 400, params
        assert refused.json()["error"]["param"] == param


def test_previous_response_id_continues_the_stored_conversation(client: openai.OpenAI) -> None:
    first = client.responses.create(
        model=MODEL_NAME, input="My name is Ada.", temperature=0, max_output_tokens=12
    )
    second = client.responses.create(
        model=MODEL_NAME,
        input="What is my name?",
        previous_response_id=first.id,
        temperature=0,
        max_output_tokens=4,
    )
    assert second.previous_response_id == first.id
    assert first.usage is not None and second.usage is not None
    assert second.usage.input_tokens > first.usage.input_tokens + first.usage.output_tokens
    items = client.responses.input_items.list(second.id, order="asc").data
    assert [i.type for i in items] == ["message", "message", "message"]
    assert items[1].id == first.output[0].id  # type: ignore[union-attr]
    with pytest.raises(openai.NotFoundError) as refused:
        client.responses.create(
            model=MODEL_NAME, input="Hi", previous_response_id="resp_does_not_exist"
        )
    assert refused.value.body["param"] == "previous_response_id"  # type: ignore[index]


def test_store_false_keeps_nothing(client: openai.OpenAI) -> None:
    made = client.responses.create(model=MODEL_NAME, input="Hi", store=False, max_output_tokens=2)
    assert made.store is False
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(made.id)


def test_another_key_can_never_read_a_stored_response(
    client: openai.OpenAI, other_client: openai.OpenAI
) -> None:
    made = client.responses.create(model=MODEL_NAME, input="A secret.", max_output_tokens=4)
    for attempt in (
        lambda: other_client.responses.retrieve(made.id),
        lambda: other_client.responses.input_items.list(made.id),
        lambda: other_client.responses.delete(made.id),
        lambda: other_client.responses.create(
            model=MODEL_NAME, input="Go on.", previous_response_id=made.id
        ),
    ):
        with pytest.raises(openai.NotFoundError):
            attempt()
    assert client.responses.retrieve(made.id).id == made.id


def test_a_streamed_response_is_stored_as_it_ended(client: openai.OpenAI) -> None:
    with client.responses.stream(**_body(max_output_tokens=200)) as stream:
        final = stream.get_final_response()
    stored = client.responses.retrieve(final.id)
    assert stored.output_text == final.output_text and stored.status == final.status


# -- tools and structured output ------------------------------------------------------------


def _one_call(response: Any) -> Any:
    calls = [item for item in response.output if item.type == "function_call"]
    assert len(calls) == 1, response.output
    call = calls[0]
    assert call.name == "get_weather" and call.status == "completed"
    assert call.id.startswith("fc_") and call.call_id
    jsonschema.validate(json.loads(call.arguments), WEATHER)
    return call


def test_a_forced_function_call_and_its_output_turn(
    client: openai.OpenAI, http: httpx.Client, spec: OpenAISpec
) -> None:
    raw = http.post("/responses", json=_body(input=QUESTION, tools=TOOLS, tool_choice=FORCED))
    assert raw.status_code == 200, raw.text
    spec.validate("Response", raw.json())
    first = client.responses.create(
        model=MODEL_NAME,
        input=QUESTION,
        tools=TOOLS,
        tool_choice=FORCED,
        temperature=0,  # type: ignore[arg-type]
    )
    call = _one_call(first)
    result = {"type": "function_call_output", "call_id": call.call_id, "output": '{"sky":"sunny"}'}
    history = [{"role": "user", "content": QUESTION}, *[i.model_dump() for i in first.output]]
    answer = client.responses.create(
        model=MODEL_NAME,
        input=[*history, result],  # type: ignore[list-item]
        tools=TOOLS,  # type: ignore[arg-type]
        tool_choice="none",
        temperature=0,
        max_output_tokens=24,
    )
    assert answer.output[0].type == "message"
    assert all(item.type == "message" for item in answer.output)
    listed = client.responses.input_items.list(answer.id, order="asc").data
    assert [i.type for i in listed] == ["message", "function_call", "function_call_output"]
    chained = client.responses.create(
        model=MODEL_NAME,
        input=[result],  # type: ignore[list-item]
        previous_response_id=first.id,
        tools=TOOLS,  # type: ignore[arg-type]
        tool_choice="none",
        temperature=0,
        max_output_tokens=24,
    )
    assert chained.output_text == answer.output_text


def test_a_streamed_required_call_sends_its_arguments_as_deltas(
    client: openai.OpenAI, http: httpx.Client
) -> None:
    body = _body(input=QUESTION, tools=TOOLS, tool_choice="required", parallel_tool_calls=False)
    events = sse_events(http, body)
    names = [name for name, _ in events]
    assert names[2] == "response.output_item.added"
    assert events[2][1]["item"]["type"] == "function_call"
    deltas = [d["delta"] for n, d in events if n == "response.function_call_arguments.delta"]
    [done] = [d for n, d in events if n == "response.function_call_arguments.done"]
    assert "".join(deltas) == done["arguments"] and done["name"] == "get_weather"
    jsonschema.validate(json.loads(done["arguments"]), WEATHER)
    final = events[-1][1]["response"]
    assert names[-1] == "response.completed"
    assert final["output"][-1]["arguments"] == done["arguments"]
    whole = client.responses.create(**body)
    assert _one_call(whole).arguments == done["arguments"]


@pytest.mark.parametrize("seed", range(2))
def test_json_schema_text_format_output_parses_and_validates(
    client: openai.OpenAI, seed: int
) -> None:
    reply = client.responses.create(
        model=MODEL_NAME,
        input="Describe a person as JSON.",
        text={
            "format": {"type": "json_schema", "name": "person", "schema": PERSON, "strict": True}
        },
        temperature=0.7,
        extra_body={"seed": seed},
        max_output_tokens=80,
    )
    assert reply.status == "completed"
    jsonschema.validate(json.loads(reply.output_text), PERSON)
    assert reply.text is not None and reply.text.format is not None
    assert reply.text.format.type == "json_schema"


def test_json_object_text_format_output_is_an_object(client: openai.OpenAI) -> None:
    reply = client.responses.create(
        model=MODEL_NAME,
        input="Give me a JSON object.",
        text={"format": {"type": "json_object"}},
        temperature=0.7,
        extra_body={"seed": 3},
        max_output_tokens=60,
    )
    if reply.status == "completed":
        assert isinstance(json.loads(reply.output_text), dict)
    else:  # cut off mid-object: still the start of one
        assert reply.incomplete_details is not None
        assert reply.incomplete_details.reason == "max_output_tokens"
        assert reply.output_text.startswith("{")


# -- what cannot be honoured, and bad input -------------------------------------------------

IMAGE = {"type": "input_image", "image_url": "https://example.com/cat.png"}


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"tools": [{"type": "web_search"}]}, "tools.0.type"),
        ({"tools": [TOOLS[0], {"type": "file_search"}]}, "tools.1.type"),
        ({"tools": [{"type": "computer_use_preview"}]}, "tools.0.type"),
        ({"reasoning": {"effort": "high"}}, "reasoning.effort"),
        ({"reasoning": {"summary": "auto"}}, "reasoning.summary"),
        ({"background": True}, "background"),
        ({"include": ["file_search_call.results"]}, "include.0"),
        ({"truncation": "auto"}, "truncation"),
        ({"conversation": "conv_1"}, "conversation"),
        ({"prompt": {"id": "pmpt_1"}}, "prompt"),
        ({"top_logprobs": 21}, "top_logprobs"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_text", "text": "?"}, IMAGE]}]},
            "input.0.content.1.type",
        ),
        ({"input": [{"type": "reasoning", "summary": []}]}, "input.0.type"),
        ({"tools": TOOLS, "tool_choice": {"type": "web_search_preview"}}, "tool_choice.type"),
    ],
)
def test_a_field_that_cannot_be_honoured_is_400_naming_it(
    http: httpx.Client, extra: dict[str, Any], param: str
) -> None:
    refused = http.post("/responses", json=_body(**extra))
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error"
    assert param.split(".")[0] in error["message"]


def test_the_sdk_sees_a_400_naming_the_builtin_tool(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.create(model=MODEL_NAME, input="Hi", tools=[{"type": "web_search"}])
    assert refused.value.body["param"] == "tools.0.type"  # type: ignore[index]
    assert "web_search" in refused.value.body["message"]  # type: ignore[index]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": "Hi"}, "model"),
        ({"model": MODEL_NAME}, "input"),
        ({"model": MODEL_NAME, "input": []}, "input"),
        ({"model": MODEL_NAME, "input": 5}, "input"),
        ({"model": MODEL_NAME, "input": "Hi", "stream": "yes"}, "stream"),
        ({"model": MODEL_NAME, "input": "Hi", "temperature": 3}, "temperature"),
        ({"model": MODEL_NAME, "input": "Hi", "max_output_tokens": 0}, "max_output_tokens"),
        ({"model": MODEL_NAME, "input": "Hi", "max_output_tokens": 1 << 40}, "max_output_tokens"),
        ({"model": MODEL_NAME, "input": "Hi", "metadata": {"k": "v" * 513}}, "metadata.k"),
        ({"model": MODEL_NAME, "input": [{"role": "robot", "content": "x"}]}, "input.0.role"),
        ({"model": MODEL_NAME, "input": [{"type": "function_call"}]}, "input.0.call_id"),
        ({"model": MODEL_NAME, "input": "Hi", "tools": [{"type": "function"}]}, "tools.0.name"),
        ({"model": MODEL_NAME, "input": "Hi", "tool_choice": "required"}, "tool_choice"),
        (
            {
                "model": MODEL_NAME,
                "input": "Hi",
                "tools": TOOLS,
                "tool_choice": {"type": "function"},
            },
            "tool_choice.name",
        ),
        (
            {"model": MODEL_NAME, "input": "Hi", "text": {"format": {"type": "json_schema"}}},
            "text.format.name",
        ),
        (
            {"model": MODEL_NAME, "input": "Hi", "text": {"format": {"type": "xml"}}},
            "text.format.type",
        ),
    ],
)
def test_bad_input_is_400_in_openai_shape(
    http: httpx.Client, body: dict[str, Any], param: str
) -> None:
    refused = http.post("/responses", json=body)
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert error["param"] == param, error
    assert set(error) == {"message", "type", "param", "code"}


def test_an_unknown_model_is_404_and_no_json_is_400(http: httpx.Client) -> None:
    missing = http.post("/responses", json={"model": "nope", "input": "Hi"})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"
    garbled = http.post(
        "/responses", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert garbled.status_code == 400
