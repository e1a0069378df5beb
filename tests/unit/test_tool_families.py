"""Tool calls in each template family's syntax: detection from the reference templates, and
the recorded outputs parsed whole, a character at a time and in random chunks."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from inferflux_core.tools import ToolPlan, detect_family
from inferflux_core.tools.families import DS_CALLS_BEGIN, FAMILIES, SYNTAXES
from inferflux_core.tools.family_parser import FamilyParser
from inferflux_core.tools.output import new_parser
from inferflux_core.tools.parser import Arguments, CallStart, Event, Text, ToolCallParser

DATA = Path(__file__).parent.parent / "data"
OUTPUTS = sorted((DATA / "tool_outputs").glob("*.json"))
FILES = {path.stem: json.loads(path.read_text(encoding="utf-8")) for path in OUTPUTS}
CASES = [
    pytest.param(name, i, case, id=f"{name}-{i}")
    for name, data in FILES.items()
    for i, case in enumerate(data["cases"])
]


def parse(family: str, pieces: list[str], max_calls: int | None = None) -> tuple[str, list[Any]]:
    """The content and the ``[name, arguments]`` calls of output fed in ``pieces``."""
    parser = new_parser(ToolPlan("auto", (), None, max_calls, family))
    events: list[Event] = []
    for piece in pieces:
        events += parser.feed(piece)
    events += parser.finish()
    content = "".join(e.text for e in events if isinstance(e, Text))
    calls: list[list[Any]] = []
    for event in events:
        if isinstance(event, CallStart):
            assert event.index == len(calls)
            calls.append([event.name, ""])
        elif isinstance(event, Arguments):
            calls[event.index][1] += event.text
    return content, [[name, json.loads(arguments)] for name, arguments in calls]


def chunks(text: str, seed: int) -> list[str]:
    rng = random.Random(seed)
    out, at = [], 0
    while at < len(text):
        size = rng.randint(1, 12)
        out.append(text[at : at + size])
        at += size
    return out


def test_every_family_has_recorded_outputs() -> None:
    assert set(FILES) == set(FAMILIES)


@pytest.mark.parametrize("name", sorted(FILES))
def test_reference_templates_detect_their_family(name: str) -> None:
    for template in FILES[name]["templates"]:
        source = (DATA / "templates" / template).read_text(encoding="utf-8")
        assert detect_family(source) == name, template


def test_templates_without_a_known_marker_fall_back_to_hermes() -> None:
    source = (DATA / "templates" / "google-gemma-2-2b-it.jinja").read_text(encoding="utf-8")
    assert detect_family(source) == "hermes"


@pytest.mark.parametrize(("name", "index", "case"), CASES)
def test_recorded_output_parses_the_same_whole_and_streamed(
    name: str, index: int, case: dict[str, Any]
) -> None:
    expected = (case["content"], case["calls"])
    output = case["output"]
    assert parse(name, [output]) == expected
    assert parse(name, list(output)) == expected
    for seed in range(5):
        assert parse(name, chunks(output, seed)) == expected


def test_markup_never_reaches_content() -> None:
    for name, data in FILES.items():
        for case in data["cases"]:
            content, _ = parse(name, list(case["output"]))
            for marker in (
                "<|",
                "|>",
                "[TOOL_CALLS]",
                "<tool_call>",
                "\uff5c",
                ">>>",
                "<function=",
                "<arg_key>",
                "<invoke",
                "DSML",
                "minimax:",
                ".call(",
            ):
                assert marker not in content, (name, content)


@pytest.mark.parametrize("name", sorted(FILES))
def test_a_malformed_call_is_text(name: str) -> None:
    markers = {
        "hermes": "<tool_call>",
        "llama3": "<|python_tag|>",
        "mistral": "[TOOL_CALLS]",
        "qwen3_coder": "<tool_call>",
        "seed_oss": "<seed:tool_call>",
        "deepseek": DS_CALLS_BEGIN,
        "command_r7b": "<|START_ACTION|>",
        "command_r_plus": "Action:",
        "functionary_v3_2": ">>>",
        "functionary_v3_1_llama3_1": "<function=",
        "kimi_k2": "<|tool_calls_section_begin|>",
        "gpt_oss": "<|channel|>",
        "granite": "<|tool_call|>",
        "firefunction_v2": "functools",
        "nemotron_v2": "<TOOLCALL>",
        "apriel": "<tool_calls>",
        "glm": "<tool_call>",
        "minimax_m2": "<minimax:tool_call>",
        "deepseek_v3_2": "<\uff5cDSML\uff5cfunction_calls>",
        "lfm2": "<|tool_call_start|>",
        "gemma4": "<|tool_call>",
    }
    output = f"Before {markers[name]} not a call at all, {'x' * 300}"
    content, calls = parse(name, list(output))
    assert calls == []
    assert content.startswith("Before") and "x" * 300 in content
    assert parse(name, [output]) == (content, calls)


def test_max_calls_drops_later_calls() -> None:
    case = FILES["kimi_k2"]["cases"][0]
    assert parse("kimi_k2", list(case["output"]), max_calls=1)[1] == case["calls"][:1]


def test_arguments_stream_as_they_arrive() -> None:
    parser = FamilyParser(SYNTAXES["kimi_k2"])
    head = (
        "<|tool_calls_section_begin|><|tool_call_begin|>functions.f:0<|tool_call_argument_begin|>"
    )
    assert parser.feed(head) == []
    assert parser.feed('{"a": "bc') == [CallStart(0, "f"), Arguments(0, '{"a": "bc')]
    assert parser.feed('d"}') == [Arguments(0, 'd"}')]


def test_plain_text_streams_without_waiting_for_a_head() -> None:
    for name in ("llama3", "functionary_v3_2"):
        parser = new_parser(ToolPlan("auto", family=name))
        assert parser.feed("Hello, world") == [Text("Hello, world")]
    parser = new_parser(ToolPlan("auto", family="firefunction_v2"))
    events = parser.feed("import functools.")
    assert "".join(e.text for e in events if isinstance(e, Text)) == "import functools."


def test_deep_nesting_is_linear_and_bounded() -> None:
    output = '[TOOL_CALLS]f[ARGS]{"a": ' + "[" * 20000
    parser = new_parser(ToolPlan("auto", family="mistral"))
    events = parser.feed(output) + parser.finish()
    assert isinstance(events[0], CallStart)


def test_hermes_is_parsed_by_the_hermes_parser() -> None:
    assert isinstance(new_parser(ToolPlan("auto", family="hermes")), ToolCallParser)
    assert isinstance(new_parser(ToolPlan("auto", family="unknown")), ToolCallParser)


@pytest.mark.parametrize(
    "block",
    [
        "[f(x=__import__('os').system('true'))]",
        "[f(x=1 + 2)]",
        "[f(1)]",
        "[os.f(x=1)]",
        "[f(**kw)]",
        "[f(x=1e999)]",
        "[f(x=" + "(" * 300 + "1" + ")" * 300 + ")]",
        "[f(x=1)",
    ],
)
def test_a_pythonic_call_with_anything_but_literals_is_text(block: str) -> None:
    output = f"<|tool_call_start|>{block}<|tool_call_end|>"
    content, calls = parse("lfm2", list(output))
    assert calls == []
    assert block in content


def test_a_pythonic_block_is_bounded() -> None:
    output = "<|tool_call_start|>[f(x='" + "a" * 20000 + "')]<|tool_call_end|>"
    content, calls = parse("lfm2", chunks(output, 0))
    assert calls == [] and content.startswith("<|tool_call_start|>[f(x='aaa")


def test_llama3_builtin_call_that_is_code_is_text() -> None:
    output = "<|python_tag|>brave_search.call(query=open('/etc/passwd').read())"
    assert parse("llama3", list(output)) == (output, [])


def test_dsml_string_attribute_keeps_a_number_a_string() -> None:
    ds = "\uff5cDSML\uff5c"
    output = (
        f'<{ds}function_calls><{ds}invoke name="f"><{ds}parameter name="zip" string="true">'
        f'01234</{ds}parameter><{ds}parameter name="n" string="false">7</{ds}parameter>'
        f"</{ds}invoke></{ds}function_calls>"
    )
    assert parse("deepseek_v3_2", list(output)) == ("", [["f", {"zip": "01234", "n": 7}]])


@pytest.mark.parametrize(
    "body",
    [
        "call:f{a:1",
        'call:f{a:<|"|>x}',
        "call:f{a:1e999}",
        "call:f{a:ok}",
        "call:f{a:1} extra",
        "call:f{a:" + "[" * 100 + "]" * 100 + "}",
    ],
)
def test_a_malformed_gemma4_call_is_text(body: str) -> None:
    output = f"<|tool_call>{body}<tool_call|>"
    content, calls = parse("gemma4", list(output))
    assert calls == [] and body in content
