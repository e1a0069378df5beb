"""A real ``inferflux serve`` process answers the requests Claude Code makes of it: the SDK
with the key in ``x-api-key``, ``?beta=true``, ``anthropic-beta``, ``cache_control`` on
blocks and tools, ``metadata.user_id``, a tool schema with ``$schema``, streamed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import pytest

from tests.conftest import MODEL_NAME
from tests.upstream_server import UpstreamServer, start_serve, stop_upstream

EPHEMERAL = {"type": "ephemeral"}
READ_FILE = {
    "name": "Read",
    "description": "Read a file from the local filesystem.",
    "input_schema": {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "type": "object",
        "properties": {"file_path": {"type": "string"}},
        "required": ["file_path"],
        "additionalProperties": False,
    },
    "cache_control": EPHEMERAL,
}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpstreamServer]:
    """``inferflux serve`` with the default model, in its own process."""
    directory: Path = tmp_path_factory.mktemp("anthropic-serve")
    server = start_serve(directory, [{"name": MODEL_NAME, "context_length": 2048}])
    yield server
    stop_upstream(server)


def test_a_claude_code_style_stream_is_served(
    served: UpstreamServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN"):  # only x-api-key is sent
        monkeypatch.delenv(name, raising=False)
    client = anthropic.Anthropic(
        base_url=served.base_url,
        api_key=None,
        default_headers={"x-api-key": served.api_key, "anthropic-beta": "some-beta-2025-01-01"},
        max_retries=0,
        timeout=120,
    )
    conversation: dict[str, Any] = {
        "model": MODEL_NAME,
        "system": [
            {"type": "text", "text": "You are a coding assistant."},
            {"type": "text", "text": "Be brief.", "cache_control": EPHEMERAL},
        ],
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "<reminder>none</reminder>"},
                    {"type": "text", "text": "Say hello.", "cache_control": EPHEMERAL},
                ],
            }
        ],
        "tools": [READ_FILE],
        "tool_choice": {"type": "auto"},
    }
    with client.messages.stream(
        **conversation,
        max_tokens=16,
        metadata={"user_id": "user_0123_account_abcd_session_ef01"},
        extra_query={"beta": "true"},
        extra_body={"temperature": 0},
    ) as stream:
        final = stream.get_final_message()
    assert final.stop_reason in {"end_turn", "max_tokens", "tool_use"}
    assert final.content and final.usage.output_tokens > 0
    counted = client.messages.count_tokens(**conversation, extra_query={"beta": "true"})
    assert counted.input_tokens == final.usage.input_tokens
    client.close()
