"""The llama_cpp backend under an llguidance matcher: the mask holds at every step, across a
save/restore, and the sequence ends when the JSON does; the option picks the engine."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from inferflux_core.contracts import SamplingParams, SequenceChunk
from inferflux_core.errors import ConfigError, InvalidRequestError
from inferflux_core.structured.guidance import schema_guidance
from inferflux_plugins.backends.llama_cpp import LlamaCppBackend
from inferflux_plugins.backends.llama_cpp import guidance as plugin_guidance
from tests.backend.test_llama_cpp_backend import chat, load

SCHEMA = {
    "type": "object",
    "properties": {"code": {"type": "string", "pattern": "^[A-Z]{2}[0-9]{2}$"}},
    "required": ["code"],
}
LIMIT = 40


@pytest.fixture(scope="module")
def backend() -> Iterator[LlamaCppBackend]:
    """The default model, 2 sequences, structured output on llguidance."""
    loaded = load(max_sequences=2, structured_output="llguidance")
    yield loaded
    loaded.close()


def _finish(backend: LlamaCppBackend, seq_id: int, tokens: list[int]) -> str:
    while not backend.is_end_of_generation(tokens[-1]) and len(tokens) < LIMIT:
        tokens.append(backend.decode([SequenceChunk(seq_id, (tokens[-1],))])[seq_id])
    backend.free_sequence(seq_id)
    assert backend.is_end_of_generation(tokens[-1]), "the sequence did not end with the JSON"
    return b"".join(backend.token_bytes(t) for t in tokens[:-1]).decode()


@pytest.mark.parametrize("seed", [1, 2])
def test_a_matched_sequence_survives_save_and_restore(backend: LlamaCppBackend, seed: int) -> None:
    grammar = schema_guidance(SCHEMA)
    backend.check_llguidance(grammar)
    backend.open_sequence(0, SamplingParams(temperature=1.0, seed=seed, llguidance=grammar))
    tokens = [backend.decode([SequenceChunk(0, chat(backend, "Give me a code as JSON."))])[0]]
    tokens.append(backend.decode([SequenceChunk(0, (tokens[-1],))])[0])
    backend.restore_sequence(1, backend.save_sequence(0))
    text = _finish(backend, 1, tokens)
    code = json.loads(text)["code"]
    assert len(code) == 4 and code[:2].isupper() and code[2:].isdigit(), text


def test_a_grammar_llguidance_refuses_for_the_vocabulary_is_a_400(
    backend: LlamaCppBackend,
) -> None:
    with pytest.raises(InvalidRequestError):
        backend.check_llguidance('{"grammars": [{"lark_grammar": "start: undefined_rule"}]}')


def test_structured_output_gbnf_turns_llguidance_off() -> None:
    assert plugin_guidance.use_llguidance("gbnf") is False
    assert plugin_guidance.use_llguidance("auto") is True


def test_structured_output_llguidance_without_the_package_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(plugin_guidance, "guidance_available", lambda: False)
    assert plugin_guidance.use_llguidance("auto") is False
    with pytest.raises(ConfigError, match="structured_output"):
        plugin_guidance.use_llguidance("llguidance")
