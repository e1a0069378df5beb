"""Tool calls end to end under another family's chat template: the default model served with
Kimi-K2's and Mistral Small 3.2's templates, so the calls are forced in, and parsed out of,
that family's syntax (the model itself is SmolLM2: what it writes under the grammar is real)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from inferflux_core.config import ModelConfig, ServerConfig, Settings
from tests.conftest import MODEL_NAME, TEST_CONTEXT, RunningServer, free_port, start_server

TEMPLATES = Path(__file__).parent.parent / "data" / "templates"
FORECAST: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "forecast",
        "description": "The weather tomorrow",
        "parameters": {
            "type": "object",
            "properties": {"unit": {"enum": ["c", "f"]}, "rain": {"type": "boolean"}},
            "required": ["unit", "rain"],
        },
    },
}
QUESTION = [{"role": "user", "content": "Will it rain tomorrow?"}]


@pytest.fixture(
    scope="module", params=["moonshotai-Kimi-K2.jinja", "Mistral-Small-3.2-24B-Instruct-2506.jinja"]
)
def family_client(request: pytest.FixtureRequest) -> Iterator[tuple[openai.OpenAI, RunningServer]]:
    settings = Settings(
        server=ServerConfig(port=free_port(), log_level="warning"),
        models=[
            ModelConfig(
                name=MODEL_NAME,
                context_length=TEST_CONTEXT,
                max_sequences=2,
                chat_template_file=TEMPLATES / request.param,
            )
        ],
    )
    running = start_server(settings)
    client = openai.OpenAI(
        base_url=running.api_url, api_key=running.api_key, max_retries=0, timeout=120
    )
    yield client, running
    running.stop()


def test_a_forced_call_in_the_family_syntax_comes_back_as_a_tool_call(
    family_client: tuple[openai.OpenAI, RunningServer],
) -> None:
    client, _ = family_client
    fields: dict[str, Any] = {
        "model": MODEL_NAME,
        "messages": QUESTION,
        "tools": [FORECAST],
        "tool_choice": "required",
        "parallel_tool_calls": False,
        "max_tokens": 200,
        "temperature": 0,
    }
    whole = client.chat.completions.create(**fields)
    choice = whole.choices[0]
    assert choice.finish_reason == "tool_calls", choice
    assert not choice.message.content
    calls = choice.message.tool_calls or []
    assert len(calls) == 1 and calls[0].function.name == "forecast"
    arguments = json.loads(calls[0].function.arguments)
    assert arguments["unit"] in ("c", "f") and isinstance(arguments["rain"], bool)

    streamed = ""
    content = ""
    for chunk in client.chat.completions.create(**fields, stream=True):
        for delta_call in chunk.choices[0].delta.tool_calls or [] if chunk.choices else []:
            streamed += delta_call.function.arguments or "" if delta_call.function else ""
        if chunk.choices:
            content += chunk.choices[0].delta.content or ""
    assert json.loads(streamed) == arguments
    assert content == ""
