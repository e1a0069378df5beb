"""The stored-responses store: per owner, LRU within entry and byte bounds, with a TTL; and
how stored items become the engine's conversation."""

from __future__ import annotations

from typing import Any

import pytest

from inferflux_core.contracts.generation import ChatMessage, ToolCall
from inferflux_core.errors import InvalidRequestError, NotFoundError
from inferflux_core.frontdoors.openai_responses import ResponsesDoor
from inferflux_core.frontdoors.openai_responses_input import conversation
from inferflux_core.frontdoors.openai_responses_store import ResponseStore


class Clock:
    """A clock the test moves."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _response(response_id: str, text: str = "hi") -> dict[str, Any]:
    return {"id": response_id, "output": [{"type": "message", "text": text}]}


def test_an_owner_sees_only_its_own_entries() -> None:
    store = ResponseStore()
    assert store.put("alice", _response("resp_1"), [])
    assert store.get("alice", "resp_1") is not None
    assert store.get("bob", "resp_1") is None
    assert not store.delete("bob", "resp_1")
    assert store.delete("alice", "resp_1")
    assert store.get("alice", "resp_1") is None and len(store) == 0


def test_the_least_recently_used_entry_goes_first() -> None:
    store = ResponseStore(max_entries=2)
    store.put("a", _response("r1"), [])
    store.put("a", _response("r2"), [])
    assert store.get("a", "r1") is not None  # r2 is now the least recently used
    store.put("a", _response("r3"), [])
    assert store.get("a", "r2") is None
    assert store.get("a", "r1") is not None and store.get("a", "r3") is not None


def test_one_owner_cannot_push_out_everyone_else() -> None:
    store = ResponseStore(max_entries=10, max_entries_per_owner=2)
    store.put("quiet", _response("q"), [])
    for index in range(5):
        store.put("busy", _response(f"b{index}"), [])
    assert store.get("quiet", "q") is not None
    assert [store.get("busy", f"b{i}") is not None for i in range(5)] == [False] * 3 + [True] * 2


def test_bytes_are_bounded_and_an_oversized_entry_is_not_kept() -> None:
    store = ResponseStore(max_bytes=1000)
    assert not store.put("a", _response("big", "x" * 2000), [])
    for index in range(10):
        assert store.put("a", _response(f"r{index}", "x" * 200), [])
        assert store.bytes_used <= 1000
    assert store.get("a", "r9") is not None and store.get("a", "r0") is None
    store.delete("a", "r9")
    assert 0 <= store.bytes_used < 1000


def test_an_entry_expires_after_the_ttl() -> None:
    clock = Clock()
    store = ResponseStore(ttl_seconds=60, clock=clock)
    store.put("a", _response("r1"), [])
    clock.now = 59
    assert store.get("a", "r1") is not None
    clock.now = 61
    assert store.get("a", "r1") is None and len(store) == 0


def test_putting_an_id_again_replaces_it() -> None:
    store = ResponseStore()
    store.put("a", _response("r1", "old"), [])
    store.put("a", _response("r1", "new"), [])
    entry = store.get("a", "r1")
    assert entry is not None and entry.response["output"][0]["text"] == "new"
    assert len(store) == 1


def test_calls_join_the_assistant_message_before_them_and_outputs_are_tool_messages() -> None:
    items = [
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Q"}]},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "A"}]},
        {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
        {"type": "function_call", "call_id": "c2", "name": "g", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "one"},
        {"type": "function_call_output", "call_id": "c2", "output": "two"},
        {"type": "function_call", "call_id": "c3", "name": "f", "arguments": "{}"},
    ]
    assert conversation("Be brief.", items) == (
        ChatMessage("system", "Be brief."),
        ChatMessage("user", "Q"),
        ChatMessage(
            "assistant", "A", tool_calls=(ToolCall("c1", "f", "{}"), ToolCall("c2", "g", "{}"))
        ),
        ChatMessage("tool", "one", tool_call_id="c1"),
        ChatMessage("tool", "two", tool_call_id="c2"),
        ChatMessage("assistant", None, tool_calls=(ToolCall("c3", "f", "{}"),)),
    )


def test_previous_response_id_is_looked_up_for_its_owner_only() -> None:
    door = ResponsesDoor()
    first = door.parse({"model": "m", "input": "Hi"}, "alice")
    answer = {
        "type": "message",
        "role": "assistant",
        "content": [{"type": "output_text", "text": "Hello"}],
    }
    door.keep(first.wire, {"id": first.wire.response_id, "status": "completed", "output": [answer]})
    body = {"model": "m", "input": "More", "previous_response_id": first.wire.response_id}
    call = door.parse(body, "alice")
    messages = call.requests[0].messages or ()
    assert [(m.role, m.content) for m in messages] == [
        ("user", "Hi"),
        ("assistant", "Hello"),
        ("user", "More"),
    ]
    with pytest.raises(NotFoundError):
        door.parse(body, "bob")
    with pytest.raises(NotFoundError):
        door.parse(body, None)


def test_an_empty_input_is_refused() -> None:
    with pytest.raises(InvalidRequestError) as refused:
        ResponsesDoor().parse({"model": "m", "input": []}, "alice")
    assert refused.value.param == "input"
