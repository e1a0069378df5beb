"""Conformance tests for step-level backends (:class:`~inferflux_core.contracts.StepBackend`).

Subclass :class:`BackendConformance` in a test module, set ``backend_name`` (and, for a backend
other than the default one, ``model_source``), and pytest runs every test below against the
backend the installed plugins register under that name. The backend is loaded once per class.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

import pytest

from inferflux_core.contracts import (
    BackendSpec,
    SamplingParams,
    SequenceChunk,
    StepBackend,
)
from inferflux_core.errors import BackendError, InvalidRequestError
from inferflux_core.testing.lookup import cpu_device, model_path_for, plugin_factory
from inferflux_core.testing.settings import BackendSettings
from inferflux_core.testing.steps import (
    GREEDY,
    continue_decoding,
    generate,
    generate_one,
    until_end,
)

N_TOKENS = 10
DEVICE_KINDS = {"cpu", "cuda", "rocm", "metal"}
DIGITS_GRAMMAR = 'root ::= [0-9]{3} "!"'


def load_backend(settings: BackendSettings) -> StepBackend:
    """Construct the backend ``settings`` names, through the installed plugins, on the CPU."""
    factory = plugin_factory("backends", settings.name)
    spec = BackendSpec(
        model_name=f"conformance-{settings.name}",
        model_path=model_path_for(settings.name, settings.model_source),
        device=cpu_device(),
        context_length=settings.context_length,
        max_sequences=settings.max_sequences,
        options=dict(settings.options),
    )
    backend: StepBackend = factory(spec)
    return backend


class BackendConformance:
    """The step-backend contract as tests. Set ``backend_name``; override the rest if needed.

    Optional capabilities are tested only when the backend's flags say it has them:
    ``supports_prefix_reuse``, ``supports_preemption``, and grammars when the backend
    overrides :meth:`~inferflux_core.contracts.StepBackend.check_grammar`.
    """

    #: The name the backend is registered under (``models[].backend``).
    backend_name: ClassVar[str] = ""
    #: A model source as ``models[].source`` takes it; None: the default model.
    model_source: ClassVar[str | None] = None
    #: ``models[].options`` to load the backend with.
    backend_options: ClassVar[dict[str, Any]] = {}
    context_length: ClassVar[int] = 512
    #: At least 3: the prefix-reuse test uses three sequence ids.
    max_sequences: ClassVar[int] = 4
    #: Short English prompts; the last ends a sentence, where EOS is a likely next token.
    prompts: ClassVar[tuple[str, ...]] = (
        "The river rises in the hills above the village",
        "A good question is worth more than",
        "The baker opens his shop before",
        "In the summer it is slow and clear.",
    )
    #: Text that must survive tokenize + detokenize unchanged.
    round_trip_text: ClassVar[str] = "Hello, world! héllo wörld — 日本語 🙂 a  b\n\tc"

    @pytest.fixture(scope="class")
    @classmethod
    def backend_settings(cls) -> BackendSettings:
        """What to load; override this fixture to compute it (the kit's CLI options do)."""
        if not cls.backend_name:
            pytest.fail(f"{cls.__name__} must set backend_name")
        return BackendSettings(
            cls.backend_name,
            cls.model_source,
            cls.backend_options,
            cls.context_length,
            cls.max_sequences,
        )

    @pytest.fixture(scope="class")
    @classmethod
    def backend(cls, backend_settings: BackendSettings) -> Iterator[StepBackend]:
        """The backend under test, loaded once for the class and closed after it."""
        loaded = load_backend(backend_settings)
        yield loaded
        loaded.close()

    @pytest.fixture(scope="class")
    @classmethod
    def n_sequences(cls, backend_settings: BackendSettings) -> int:
        """How many sequences the tests open at once: one per prompt, within the limit."""
        return min(backend_settings.max_sequences, len(cls.prompts))

    @pytest.fixture(scope="class")
    @classmethod
    def prompt_tokens(cls, backend: StepBackend) -> list[list[int]]:
        """The prompts as token ids, with BOS where the model wants one."""
        return [backend.tokenize(p, add_special=backend.info.add_bos) for p in cls.prompts]

    # -- the model and its tokenizer -----------------------------------------------------

    def test_info_describes_a_usable_model(
        self, backend: StepBackend, backend_settings: BackendSettings
    ) -> None:
        info = backend.info
        assert 0 < info.context_length <= backend_settings.context_length
        assert info.kv_capacity >= info.context_length
        assert info.vocab_size > 0
        assert isinstance(info.eos_token, str) and info.eos_token
        assert isinstance(info.bos_token, str) and isinstance(info.add_bos, bool)
        assert info.chat_template is None or isinstance(info.chat_template, str)
        assert backend.supported_devices and set(backend.supported_devices) <= DEVICE_KINDS

    def test_tokenize_and_detokenize_round_trip(self, backend: StepBackend) -> None:
        text = self.round_trip_text
        tokens = backend.tokenize(text, add_special=False)
        assert tokens and all(0 <= t < backend.info.vocab_size for t in tokens)
        assert backend.detokenize(tokens) == text
        assert b"".join(backend.token_bytes(t) for t in tokens) == text.encode()
        assert backend.detokenize([]) == ""
        assert backend.tokenize("", add_special=False) == []

    def test_tokenize_is_safe_while_another_thread_decodes(
        self, backend: StepBackend, prompt_tokens: list[list[int]]
    ) -> None:
        texts = [f"{i}: " + self.prompts[i % len(self.prompts)] * (i + 1) for i in range(32)]
        expected = [backend.tokenize(text) for text in texts]
        with ThreadPoolExecutor(max_workers=4) as pool:
            results = pool.map(backend.tokenize, texts)
            generate_one(backend, prompt_tokens[0], 4)
            assert list(results) == expected

    def test_the_eos_token_ends_generation(self, backend: StepBackend) -> None:
        eos = backend.tokenize(backend.info.eos_token, add_special=False)
        assert len(eos) == 1, "the EOS token's text must tokenize to the EOS token"
        assert backend.is_end_of_generation(eos[0])
        word = backend.tokenize("river", add_special=False)
        assert not any(backend.is_end_of_generation(t) for t in word)

    # -- decoding ------------------------------------------------------------------------

    def test_prefill_then_decode_samples_one_token_per_sampling_chunk(
        self, backend: StepBackend, prompt_tokens: list[list[int]]
    ) -> None:
        backend.open_sequence(0, GREEDY)
        backend.open_sequence(1, GREEDY)
        try:
            chunks = [SequenceChunk(0, prompt_tokens[0], False), SequenceChunk(1, prompt_tokens[1])]
            first = backend.decode(chunks)
            assert list(first) == [1]
            assert 0 <= first[1] < backend.info.vocab_size
            step = backend.decode([SequenceChunk(0, (first[1],)), SequenceChunk(1, (first[1],))])
            assert sorted(step) == [0, 1]
        finally:
            backend.free_sequence(0)
            backend.free_sequence(1)

    def test_greedy_decoding_is_deterministic(
        self, backend: StepBackend, prompt_tokens: list[list[int]]
    ) -> None:
        first = generate_one(backend, prompt_tokens[0], N_TOKENS)
        assert len(first) == N_TOKENS
        assert generate_one(backend, prompt_tokens[0], N_TOKENS) == first

    def test_batched_decoding_equals_decoding_alone(
        self, backend: StepBackend, prompt_tokens: list[list[int]], n_sequences: int
    ) -> None:
        prompts = dict(enumerate(prompt_tokens[:n_sequences]))
        alone = {s: generate_one(backend, p, N_TOKENS, seq_id=s) for s, p in prompts.items()}
        assert generate(backend, prompts, N_TOKENS) == alone

    def test_chunked_prefill_equals_a_one_shot_prefill(
        self, backend: StepBackend, prompt_tokens: list[list[int]]
    ) -> None:
        prompt = prompt_tokens[1]
        one_shot = generate_one(backend, prompt, N_TOKENS)
        cut = max(1, len(prompt) // 2)
        backend.open_sequence(0, GREEDY)
        try:
            assert backend.decode([SequenceChunk(0, prompt[:cut], sample=False)]) == {}
            first = backend.decode([SequenceChunk(0, prompt[cut:])])
            tokens = continue_decoding(backend, {0: [first[0]]}, N_TOKENS)[0]
        finally:
            backend.free_sequence(0)
        assert tokens == one_shot

    def test_a_cancelled_sequence_frees_its_id_for_the_same_output(
        self, backend: StepBackend, prompt_tokens: list[list[int]], n_sequences: int
    ) -> None:
        last = n_sequences - 1
        expected = generate_one(backend, prompt_tokens[2], N_TOKENS, seq_id=last)
        for _ in range(3):  # cancel mid-generation, more often than there are sequences
            backend.open_sequence(last, GREEDY)
            token = backend.decode([SequenceChunk(last, prompt_tokens[0])])[last]
            backend.decode([SequenceChunk(last, (token,))])
            backend.free_sequence(last)
        assert generate_one(backend, prompt_tokens[2], N_TOKENS, seq_id=last) == expected

    def test_every_sequence_id_can_be_used_again_and_again(
        self, backend: StepBackend, prompt_tokens: list[list[int]], n_sequences: int
    ) -> None:
        n = n_sequences
        prompts = {s: prompt_tokens[s % len(prompt_tokens)] for s in range(n)}
        first = generate(backend, prompts, 4)
        for _ in range(3):
            assert generate(backend, prompts, 4) == first

    def test_misuse_of_sequence_ids_raises_backend_error(
        self, backend: StepBackend, prompt_tokens: list[list[int]]
    ) -> None:
        with pytest.raises(BackendError):
            backend.decode([SequenceChunk(0, prompt_tokens[0])])
        backend.open_sequence(0, GREEDY)
        try:
            with pytest.raises(BackendError):
                backend.open_sequence(0, GREEDY)
        finally:
            backend.free_sequence(0)
        backend.free_sequence(0)  # freeing a free sequence is harmless

    def test_a_forced_eos_ends_the_sequence(
        self, backend: StepBackend, prompt_tokens: list[list[int]]
    ) -> None:
        (eos,) = backend.tokenize(backend.info.eos_token, add_special=False)
        params = SamplingParams(temperature=0.0, logit_bias={eos: 100.0})
        (token,) = generate_one(backend, prompt_tokens[3], 1, params)
        assert token == eos and backend.is_end_of_generation(token)

    # -- sampling parameters -------------------------------------------------------------

    def test_a_seed_makes_sampling_reproducible(
        self, backend: StepBackend, prompt_tokens: list[list[int]]
    ) -> None:
        def sample(seed: int) -> list[int]:
            params = SamplingParams(temperature=1.0, seed=seed)
            return generate_one(backend, prompt_tokens[0], N_TOKENS, params)

        first = sample(42)
        assert sample(42) == first
        assert any(sample(seed) != first for seed in range(1, 6)), "the seed changes nothing"

    def test_top_k_of_one_samples_the_greedy_tokens(
        self, backend: StepBackend, prompt_tokens: list[list[int]]
    ) -> None:
        greedy = generate_one(backend, prompt_tokens[1], N_TOKENS)
        params = SamplingParams(temperature=1.0, top_k=1, seed=3)
        assert generate_one(backend, prompt_tokens[1], N_TOKENS, params) == greedy

    def test_logit_bias_forces_and_bans_a_token(
        self, backend: StepBackend, prompt_tokens: list[list[int]], n_sequences: int
    ) -> None:
        prompt = prompt_tokens[0]
        (greedy,) = generate_one(backend, prompt, 1)
        other = self._another_likely_token(backend, prompt, greedy, n_sequences)
        forced = SamplingParams(temperature=0.0, logit_bias={other: 100.0})
        assert generate_one(backend, prompt, 1, forced) == [other]
        banned = SamplingParams(temperature=0.0, logit_bias={greedy: -100.0})
        assert generate_one(backend, prompt, 1, banned) != [greedy]

    @staticmethod
    def _another_likely_token(
        backend: StepBackend, prompt: list[int], greedy: int, n_sequences: int
    ) -> int:
        """A token other than ``greedy`` that sampling at temperature 1 picks after ``prompt``."""
        for round_ in range(8):
            for s in range(n_sequences):
                backend.open_sequence(s, SamplingParams(seed=round_ * n_sequences + s))
            try:
                draws = backend.decode([SequenceChunk(s, prompt) for s in range(n_sequences)])
            finally:
                for s in range(n_sequences):
                    backend.free_sequence(s)
            if set(draws.values()) - {greedy}:
                return min(set(draws.values()) - {greedy})
        pytest.fail(f"{8 * n_sequences} seeded draws at temperature 1 all gave the greedy token")

    # -- optional capabilities -----------------------------------------------------------

    def test_prefix_reuse_continues_from_kept_and_copied_kv(
        self, backend: StepBackend, prompt_tokens: list[list[int]]
    ) -> None:
        if not backend.supports_prefix_reuse:
            pytest.skip(f"{type(backend).__name__}.supports_prefix_reuse is False")
        prompt = prompt_tokens[0]
        expected = generate_one(backend, prompt, N_TOKENS)
        keep = len(prompt) // 2
        backend.open_sequence(1, GREEDY)
        backend.decode([SequenceChunk(1, prompt, sample=False)])
        backend.free_sequence(1, keep_kv=True)
        backend.open_sequence(2, GREEDY)
        backend.copy_prefix(1, 2, keep)
        backend.open_sequence(1, GREEDY, keep_tokens=keep)
        try:
            first = backend.decode([SequenceChunk(s, prompt[keep:]) for s in (1, 2)])
            out = continue_decoding(backend, {s: [t] for s, t in first.items()}, N_TOKENS)
        finally:
            backend.free_sequence(1)
            backend.free_sequence(2)
        assert out == {1: expected, 2: expected}

    def test_a_saved_sequence_resumes_with_the_same_tokens(
        self, backend: StepBackend, prompt_tokens: list[list[int]]
    ) -> None:
        if not backend.supports_preemption:
            pytest.skip(f"{type(backend).__name__}.supports_preemption is False")
        params = SamplingParams(temperature=1.0, seed=11)
        expected = generate_one(backend, prompt_tokens[1], N_TOKENS, params)
        backend.open_sequence(0, params)
        first = backend.decode([SequenceChunk(0, prompt_tokens[1])])
        partial = continue_decoding(backend, {0: [first[0]]}, N_TOKENS // 2)[0]
        saved = backend.save_sequence(0)
        generate_one(backend, prompt_tokens[2], 4, seq_id=0)  # the freed id serves another
        backend.restore_sequence(1, saved)
        try:
            resumed = continue_decoding(backend, {1: partial}, N_TOKENS)[1]
        finally:
            backend.free_sequence(1)
        assert resumed == expected

    def test_a_grammar_limits_the_output_to_what_it_allows(
        self, backend: StepBackend, prompt_tokens: list[list[int]]
    ) -> None:
        if type(backend).check_grammar is StepBackend.check_grammar:
            pytest.skip(f"{type(backend).__name__} does not override check_grammar")
        backend.check_grammar(DIGITS_GRAMMAR)
        with pytest.raises(InvalidRequestError):
            backend.check_grammar("root ::= undefined-rule")
        params = SamplingParams(temperature=1.0, seed=7, grammar=DIGITS_GRAMMAR)
        tokens = until_end(backend, generate_one(backend, prompt_tokens[0], 8, params))
        assert backend.is_end_of_generation(tokens[-1])
        text = b"".join(backend.token_bytes(t) for t in tokens[:-1]).decode()
        assert re.fullmatch(r"[0-9]{3}!", text), text
