"""The llama.cpp step-level backend: one GGUF model, many KV sequences, one batch per step.

KV layout: ``context_length`` is the context of each sequence, and the KV cache holds
``context_length * max_sequences`` cells. By default every sequence has its own stream of
``context_length`` cells (llama.cpp's split KV cache): a sequence's numerics then do not depend
on what it is batched with, and attention only scans its own cells. ``options.kv_unified: true``
puts all cells in one stream that every sequence draws from.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inferflux_core.contracts import (
    BackendSpec,
    DeviceInfo,
    EmbeddingInfo,
    ModelInfo,
    SamplingParams,
    SequenceChunk,
    StepBackend,
    TokenLogprob,
    usable_cores,
)
from inferflux_core.errors import BackendError, ConfigError, ModelFileError, SequencesFailedError
from inferflux_core.gguf_check import (
    GGUFHeader,
    context_length,
    metadata_str,
    read_gguf_header,
    sampling_metadata,
)
from inferflux_plugins.backends.llama_cpp.adapters import LoraAdapters
from inferflux_plugins.backends.llama_cpp.batch import TokenBatch
from inferflux_plugins.backends.llama_cpp.embedding import (
    EmbeddingContext,
    EmbeddingSettings,
    resolve_pooling,
)
from inferflux_plugins.backends.llama_cpp.gpu import (
    apply_context_params,
    apply_model_params,
    check_offload,
    decide_placement,
    describe,
    gpu_build_command,
)
from inferflux_plugins.backends.llama_cpp.grammar import ConstrainedSampler, GrammarCache
from inferflux_plugins.backends.llama_cpp.guidance import (
    GuidanceFailure,
    GuidanceMatchers,
    GuidedSampler,
    end_tokens,
    use_llguidance,
)
from inferflux_plugins.backends.llama_cpp.logprobs import LogprobReader
from inferflux_plugins.backends.llama_cpp.options import (
    LlamaCppOptions,
    decide_repack,
    parse_options,
)
from inferflux_plugins.backends.llama_cpp.passing_thread import run_on_passing_thread
from inferflux_plugins.backends.llama_cpp.row_probe import PROBE_TOKENS, decode_matches_short_chunk
from inferflux_plugins.backends.llama_cpp.runtime import load_llama
from inferflux_plugins.backends.llama_cpp.sampling import build_sampler_chain
from inferflux_plugins.backends.llama_cpp.vocab import Vocab

log = logging.getLogger("inferflux.llama_cpp")

FLASH_ATTN = {"auto": -1, "off": 0, "on": 1}
METADATA_KEYS = ("general.name", "general.architecture")
DECODE_ERRORS = {
    2: "the step was aborted",
    -1: "the batch was rejected as invalid",
}


@dataclass(frozen=True, slots=True)
class SavedSequence:
    """A preempted sequence: llama.cpp's serialized KV state, its samplers and position."""

    data: Any
    size: int
    chain: Any
    position: int
    grammar: Any = None
    logprobs: int | None = None
    matcher: Any = None


#: A sequence to sample after a ``llama_decode``: seq id, sampler chain, the logits index of
#: its first wanted row, and the drafts it verifies (empty: it samples that row only).
Pending = tuple[int, Any, int, Sequence[int]]

#: Query tokens per KV stream from which llama.cpp's CPU flash attention uses its tiled kernel.
CPU_FLASH_ATTENTION_TILE = 64

#: Positions from which a lone decode step is padded for exact rows (:meth:`_pad_lone_decode`):
#: llama.cpp splits the only query row's cache across threads from 512 cells, and pads the
#: cells it attends to up to 256 at most; below 193 tokens a cache never reaches 512.
PAD_LONE_DECODE_FROM = 192


class LlamaCppBackend(StepBackend):
    """A GGUF model run by llama.cpp through its C API (``llama_cpp`` low-level bindings)."""

    options_model = LlamaCppOptions
    supported_devices = ("cpu", "metal", "cuda", "rocm")
    supports_prefix_reuse = True
    supports_preemption = True
    supports_logprobs = True
    supports_embeddings = True
    supports_adapters = True

    @classmethod
    def device_problem(cls, device: DeviceInfo) -> str | None:
        """None if llama-cpp-python is installed and, for a GPU, built to offload to one."""
        problem = super().device_problem(device)
        if problem is not None:
            return problem
        try:
            llama = load_llama()
        except ConfigError as exc:
            return str(exc)
        if device.kind != "cpu" and not llama.llama_supports_gpu_offload():
            return (
                "this llama-cpp-python build cannot offload to a GPU; install a GPU build: "
                f"{gpu_build_command(device.kind)}"
            )
        return None

    def __init__(self, spec: BackendSpec) -> None:
        self._model: Any = None
        self._ctx: Any = None
        self._embedder: EmbeddingContext | None = None
        self._adapters: LoraAdapters | None = None
        self._chains: dict[int, Any] = {}
        self._grammars: GrammarCache | None = None
        self._grammar_of: dict[int, Any] = {}
        self._matcher_of: dict[int, Any] = {}
        self._logprobs_of: dict[int, int] = {}
        self._logprobs: dict[int, TokenLogprob] = {}
        #: Drafts accepted per draft chunk in the last decode.
        self._accepted: dict[int, int] = {}
        #: Sequences of the running decode whose llguidance matcher failed, with why.
        self._failures: dict[int, str] = {}
        self._pad_lone_decodes = False
        options = parse_options(spec.options, spec.model_name)
        if spec.max_sequences < 1:
            raise ConfigError("max_sequences must be at least 1", param="max_sequences")
        header = read_gguf_header(spec.model_path)
        self._placement = decide_placement(options, spec.device, spec.model_name)
        self._llama = llama = load_llama()
        self._spec = spec
        self._model = self._load_model(spec, options)
        try:
            self._ctx = self._create_context(spec, options, header)
            self._vocab = Vocab(llama, llama.llama_model_get_vocab(self._model))
            self._grammars = GrammarCache(llama, self._vocab.handle)
            self._constrained = ConstrainedSampler(llama, self._vocab.size)
            self.supports_llguidance = use_llguidance(options.structured_output)
            self._matchers = GuidanceMatchers(
                llama, self._vocab.handle, end_tokens(llama, self._vocab.handle)
            )
            self._guided = GuidedSampler(llama, self._vocab.size)
            self._logprob_reader = LogprobReader(llama, self._vocab.size)
            self._mem = llama.llama_get_memory(self._ctx)
            self._adapters = LoraAdapters(llama, self._model, self._ctx)
            self._n_ctx = min(llama.llama_n_ctx_seq(self._ctx), spec.context_length)
            self._kv_capacity = llama.llama_n_ctx(self._ctx)
            self._kv_unified = options.kv_unified
            self.independent_rows_below = independent_rows_below(spec.device.kind, options)
            self.kv_rows_by_chunk_class = run_on_passing_thread(self._probe_row_classes)
            self._n_batch = min(llama.llama_n_batch(self._ctx), llama.llama_n_ubatch(self._ctx))
            # A draft is verified exactly when its chunk computes every row as plain decoding.
            self.supports_speculation = 0 < self.independent_rows_below <= self._n_batch
            self._batch = TokenBatch(llama, self._n_batch, spec.max_sequences)
            self._positions = [0] * spec.max_sequences
            self._decode_fn = llama.llama_decode
            self._sample_fn = llama.llama_sampler_sample
            self._info = self._read_info(header)
            self._embedder = EmbeddingContext(
                llama,
                self._model,
                EmbeddingSettings(
                    pooling=resolve_pooling(options.embedding_pooling, header),
                    batch_tokens=min(options.batch_size, self._n_ctx),
                    threads=_threads(spec, options),
                    flash_attn=FLASH_ATTN[options.flash_attn],
                    placement=self._placement,
                ),
            )
        except BaseException:
            self.close()
            raise
        log.info(
            "llama_cpp loaded %s (%s): up to %d sequences, %d tokens of context %s",
            spec.model_path,
            self._info.metadata.get("general.name", "?"),
            spec.max_sequences,
            self._n_ctx,
            "each, drawn from one shared cache" if self._kv_unified else "each",
        )

    # -- loading ---------------------------------------------------------------------------

    def _load_model(self, spec: BackendSpec, options: LlamaCppOptions) -> Any:
        llama = self._llama
        params = llama.llama_model_default_params()
        placement = self._placement
        check_offload(llama, spec.device, placement)
        tensor_split = apply_model_params(llama, params, placement)
        log.info("llama_cpp places %s: %s", spec.model_name, describe(placement, spec.device))
        decision = decide_repack(options.repack, cpu_has_amx(spec.device))
        params.use_extra_bufts = decision.use_extra_bufts
        log.info(
            "llama_cpp repacked weights %s (%s)",
            "on" if decision.use_extra_bufts else "off",
            decision.reason,
        )
        model = llama.llama_model_load_from_file(str(spec.model_path).encode(), params)
        del tensor_split  # llama.cpp has copied the shares by now
        if not model:
            raise ModelFileError(
                f"llama.cpp could not load the model file {spec.model_path} "
                "(unsupported architecture or corrupt data; see the DEBUG log for details)"
            )
        return model

    def _create_context(
        self, spec: BackendSpec, options: LlamaCppOptions, header: GGUFHeader
    ) -> Any:
        llama = self._llama
        params = llama.llama_context_default_params()
        per_sequence = spec.context_length if spec.context_length > 0 else context_length(header)
        n_ctx = (per_sequence or 0) * spec.max_sequences
        threads = _threads(spec, options)
        batch_size = max(options.batch_size, spec.max_sequences)
        params.n_ctx = n_ctx
        params.n_seq_max = spec.max_sequences
        params.n_batch = params.n_ubatch = batch_size
        params.n_threads = params.n_threads_batch = threads
        params.flash_attn_type = FLASH_ATTN[options.flash_attn]
        apply_context_params(params, self._placement)
        if hasattr(params, "kv_unified"):
            params.kv_unified = options.kv_unified
        elif options.kv_unified:  # an older llama.cpp splits the context between sequences
            log.warning("llama_cpp: this llama.cpp has no unified KV cache; n_ctx is per sequence")
        ctx = llama.llama_init_from_model(self._model, params)
        if not ctx:
            raise ConfigError(
                f"llama.cpp could not create a context of {n_ctx} tokens for "
                f"{spec.max_sequences} sequences (out of memory?)",
                param="context_length",
            )
        log.info(
            "llama_cpp context: n_ctx=%d (%s KV), threads=%d, batch=%d",
            n_ctx,
            "unified" if options.kv_unified else "per-sequence",
            threads,
            batch_size,
        )
        return ctx

    def _probe_row_classes(self) -> bool:
        """Whether one-token decode steps compute tokens as short chunks do, checked on this
        context (see :mod:`.row_probe`); only asked where short chunks are independent."""
        if not self.independent_rows_below:
            return False
        probe = self._vocab.tokenize(
            "The quick brown fox jumps over the lazy dog.", add_special=True
        )
        tokens = probe[: min(PROBE_TOKENS, self.independent_rows_below - 1)]
        matches = decode_matches_short_chunk(
            self._llama, self._ctx, self._mem, tokens, self._vocab.size
        )
        log.info(
            "llama_cpp: decode steps %s short prompt chunks bit for bit%s",
            "compute tokens as" if matches else "do not compute tokens as",
            ": any cached prompt prefix is reusable exactly" if matches else "",
        )
        return matches

    def _read_info(self, header: GGUFHeader) -> ModelInfo:
        llama, vocab = self._llama, self._vocab
        template = llama.llama_model_chat_template(self._model, None)
        metadata = {key: value for key in METADATA_KEYS if (value := metadata_str(header, key))}
        metadata.update(sampling_metadata(header))
        return ModelInfo(
            context_length=self._n_ctx,
            kv_capacity=self._kv_capacity,
            vocab_size=vocab.size,
            chat_template=template.decode("utf-8", errors="replace") if template else None,
            bos_token=vocab.special_text(llama.llama_vocab_bos(vocab.handle)),
            eos_token=vocab.special_text(llama.llama_vocab_eos(vocab.handle)),
            add_bos=bool(llama.llama_vocab_get_add_bos(vocab.handle)),
            metadata=metadata,
            fim_tokens=self._fim_tokens(),
        )

    def _fim_tokens(self) -> tuple[int, int, int] | None:
        llama, handle = self._llama, self._vocab.handle
        tokens = (
            llama.llama_vocab_fim_pre(handle),
            llama.llama_vocab_fim_suf(handle),
            llama.llama_vocab_fim_mid(handle),
        )
        return tokens if all(t >= 0 for t in tokens) else None

    # -- the contract ----------------------------------------------------------------------

    @property
    def info(self) -> ModelInfo:
        """Context length, vocabulary size, chat template and special tokens of the model."""
        return self._info

    def tokenize(self, text: str, *, add_special: bool = True) -> list[int]:
        """Token ids of ``text``; special-token text is parsed (thread-safe)."""
        return self._vocab.tokenize(text, add_special=add_special)

    def detokenize(self, tokens: Sequence[int]) -> str:
        """The text of ``tokens`` with special tokens rendered (thread-safe)."""
        return self._vocab.detokenize(tokens)

    def token_bytes(self, token: int) -> bytes:
        """The bytes ``token`` contributes to the output."""
        return self._vocab.token_bytes(token)

    def is_end_of_generation(self, token: int) -> bool:
        """True for EOS / end-of-turn tokens."""
        return self._vocab.is_end_of_generation(token)

    def check_grammar(self, grammar: str) -> None:
        """400 unless llama.cpp parses ``grammar``; parsed grammars are cached (thread-safe)."""
        assert self._grammars is not None
        self._grammars.check(grammar)

    def check_llguidance(self, grammar: str) -> None:
        """400 unless llguidance compiles ``grammar`` for this vocabulary (cached; thread-safe)."""
        self._matchers.check(grammar)

    def open_sequence(self, seq_id: int, params: SamplingParams, *, keep_tokens: int = 0) -> None:
        """Give ``seq_id`` a sampler chain built from ``params``; keep its first ``keep_tokens``."""
        self._check_free(seq_id)
        grammar = None
        matcher = self._matchers.new_matcher(params.llguidance) if params.llguidance else None
        if params.grammar is not None:
            assert self._grammars is not None
            grammar = self._grammars.new_sampler(params.grammar)
        try:
            chain = build_sampler_chain(self._llama, self._vocab.size, self._n_ctx, params)
        except BaseException:
            if grammar is not None:
                self._llama.llama_sampler_free(grammar)
            raise
        self._truncate(seq_id, keep_tokens)
        self._chains[seq_id] = chain
        if grammar is not None:
            self._grammar_of[seq_id] = grammar
        if matcher is not None:
            self._matcher_of[seq_id] = matcher
        if params.logprobs is not None:
            self._logprobs_of[seq_id] = params.logprobs

    def take_logprobs(self) -> dict[int, TokenLogprob]:
        """Logprobs of the last decode's tokens, for sequences opened with ``logprobs``."""
        taken, self._logprobs = self._logprobs, {}
        return taken

    def copy_prefix(self, src_seq_id: int, dst_seq_id: int, n_tokens: int) -> None:
        """``dst_seq_id`` gets the first ``n_tokens`` of ``src_seq_id``'s KV.

        Across KV streams llama.cpp copies whole streams only (anything else aborts the
        process), so the whole source stream is copied and the copy cut back to ``n_tokens``.
        """
        if dst_seq_id not in self._chains or src_seq_id == dst_seq_id:
            raise BackendError(f"cannot copy sequence {src_seq_id} into {dst_seq_id}")
        if not 0 < n_tokens <= self._positions[src_seq_id]:
            raise BackendError(
                f"sequence {src_seq_id} holds {self._positions[src_seq_id]} tokens, not {n_tokens}"
            )
        llama = self._llama
        llama.llama_memory_seq_rm(self._mem, dst_seq_id, -1, -1)
        llama.llama_memory_seq_cp(self._mem, src_seq_id, dst_seq_id, -1, -1)
        self._positions[dst_seq_id] = self._positions[src_seq_id]
        self._truncate(dst_seq_id, n_tokens)

    def save_sequence(self, seq_id: int) -> SavedSequence:
        """The sequence's KV bytes, sampler chain and position; ``seq_id`` becomes free."""
        chain = self._chains.get(seq_id)
        if chain is None:
            raise BackendError(f"sequence {seq_id} is not open")
        llama = self._llama
        size = llama.llama_state_seq_get_size(self._ctx, seq_id)
        buffer = (ctypes.c_uint8 * max(size, 1))()
        written = llama.llama_state_seq_get_data(self._ctx, buffer, size, seq_id)
        if written != size:
            raise BackendError(f"could not save sequence {seq_id} ({written} of {size} bytes)")
        grammar = self._grammar_of.pop(seq_id, None)
        n_top = self._logprobs_of.pop(seq_id, None)
        matcher = self._matcher_of.pop(seq_id, None)
        saved = SavedSequence(buffer, size, chain, self._positions[seq_id], grammar, n_top, matcher)
        del self._chains[seq_id]
        self._truncate(seq_id, 0)
        return saved

    def restore_sequence(self, seq_id: int, saved: object) -> None:
        """Put a :meth:`save_sequence` result back under the free ``seq_id``."""
        if not isinstance(saved, SavedSequence):
            raise BackendError("restore_sequence needs what save_sequence returned")
        self._check_free(seq_id)
        self._truncate(seq_id, 0)
        read = self._llama.llama_state_seq_set_data(self._ctx, saved.data, saved.size, seq_id)
        if read != saved.size:
            self._truncate(seq_id, 0)
            raise BackendError(f"could not restore a saved sequence into {seq_id} (KV full?)")
        self._positions[seq_id] = saved.position
        self._chains[seq_id] = saved.chain
        if saved.grammar is not None:
            self._grammar_of[seq_id] = saved.grammar
        if saved.logprobs is not None:
            self._logprobs_of[seq_id] = saved.logprobs
        if saved.matcher is not None:
            self._matcher_of[seq_id] = saved.matcher

    @property
    def embedding_info(self) -> EmbeddingInfo:
        """The model's embedding size; inputs up to ``batch_size`` tokens, many per batch."""
        if self._embedder is None:
            raise BackendError("the llama_cpp backend is closed")
        return self._embedder.info

    def embed(self, inputs: Sequence[Sequence[int]]) -> list[list[float]]:
        """Pooled vectors from the embedding context (created on the first call)."""
        if self._embedder is None:
            raise BackendError("the llama_cpp backend is closed")
        return self._embedder.embed(inputs)

    def load_adapter(self, name: str, path: Path, scale: float) -> None:
        """Load a LoRA adapter GGUF of this model (see :mod:`.adapters`)."""
        if self._adapters is None:
            raise BackendError("the llama_cpp backend is closed")
        self._adapters.load(name, path, scale)

    def use_adapter(self, name: str | None) -> None:
        """Apply adapter ``name`` (None: none) to the context's next decodes."""
        if self._adapters is None:
            raise BackendError("the llama_cpp backend is closed")
        self._adapters.use(name)

    def _check_free(self, seq_id: int) -> None:
        if not 0 <= seq_id < self._spec.max_sequences:
            raise BackendError(f"seq_id {seq_id} is outside 0..{self._spec.max_sequences - 1}")
        if seq_id in self._chains:
            raise BackendError(f"sequence {seq_id} is already open")

    def _truncate(self, seq_id: int, n_tokens: int) -> None:
        """Keep the first ``n_tokens`` of the sequence's KV."""
        if not 0 <= n_tokens <= self._positions[seq_id]:
            raise BackendError(
                f"sequence {seq_id} holds {self._positions[seq_id]} tokens, not {n_tokens}"
            )
        self._llama.llama_memory_seq_rm(self._mem, seq_id, n_tokens if n_tokens else -1, -1)
        self._positions[seq_id] = n_tokens

    def decode(self, chunks: Sequence[SequenceChunk]) -> dict[int, int]:
        """Feed every chunk in as few ``llama_decode`` calls as the batch size allows.

        Chunks longer than the room left in the batch are split across calls; each sequence
        is sampled after the call holding its chunk's last token. A draft chunk is never split;
        its drafts are verified as :class:`SequenceChunk` says (see :meth:`take_accepted`).
        """
        if self._ctx is None:
            raise BackendError("the llama_cpp backend is closed")
        batch = self._batch
        chains = self._chains
        positions = self._positions
        self._logprobs = {}
        self._failures = {}
        self._accepted = {}
        sampled: dict[int, int] = {}
        pending: list[Pending] = []
        starts: list[tuple[int, int]] = []
        try:
            for group in self._call_groups(chunks):
                for chunk in group:
                    seq_id = chunk.seq_id
                    chain = chains.get(seq_id)
                    tokens = chunk.tokens
                    remaining = len(tokens)
                    if chain is None or not remaining:
                        raise BackendError(
                            f"sequence {seq_id} is not open"
                            if chain is None
                            else f"empty chunk for sequence {seq_id}"
                        )
                    starts.append((seq_id, positions[seq_id]))
                    if chunk.draft:
                        if remaining > batch.room:  # its logits must come from one call
                            self._run(pending, sampled)
                            pending = []
                        self._check_draft(chunk)
                    offset = 0
                    while remaining:
                        if not batch.room:
                            self._run(pending, sampled)
                            pending = []
                        take = min(remaining, batch.room)
                        remaining -= take
                        want = chunk.draft + 1 if chunk.sample and not remaining else 0
                        index = batch.add(seq_id, tokens, offset, take, positions[seq_id], want)
                        positions[seq_id] += take
                        offset += take
                        if want:
                            drafts = tokens[len(tokens) - chunk.draft :] if chunk.draft else ()
                            pending.append((seq_id, chain, index - chunk.draft, drafts))
                if batch.n_tokens:
                    padded = self._pad_lone_decode(group)
                    self._run(pending, sampled)
                    pending = []
                    if padded is not None:  # the padding token's KV goes again
                        self._llama.llama_memory_seq_rm(self._mem, padded, positions[padded], -1)
        except BaseException:
            batch.clear()
            self._roll_back(starts)
            raise
        if self._failures:
            raise SequencesFailedError(sampled, self._failures)
        return sampled

    def exact_decode_rows(self) -> bool:
        """From now on, a lone one-token decode step past :data:`PAD_LONE_DECODE_FROM` tokens
        gets a padding token (see :meth:`_pad_lone_decode`); only where row classes hold."""
        self._pad_lone_decodes = self.kv_rows_by_chunk_class
        return self._pad_lone_decodes

    def _pad_lone_decode(self, group: Sequence[SequenceChunk]) -> int | None:
        """Add a padding token to a call that decodes one token of one sequence, when asked
        to (:meth:`exact_decode_rows`) and its cache is long; the seq_id padded, or None.

        llama.cpp's CPU attention computes a call's only query row by splitting a cache of
        512 cells or more across threads, which rounds differently from the same token in a
        prompt chunk (or in a call with other sequences). A second row, the same token at the
        next position without logits, takes the row-by-row path; its KV is removed after.
        """
        if not self._pad_lone_decodes or len(group) != 1 or len(group[0].tokens) != 1:
            return None
        seq_id = group[0].seq_id
        position = self._positions[seq_id]  # the padding token's: the step's token is in
        if position <= PAD_LONE_DECODE_FROM or position >= self._n_ctx or not self._batch.room:
            return None
        self._batch.add(seq_id, group[0].tokens, 0, 1, position, False)
        return seq_id

    def _check_draft(self, chunk: SequenceChunk) -> None:
        """Refuse a draft chunk this backend cannot verify exactly, before it runs."""
        seq_id = chunk.seq_id
        if not self.supports_speculation or len(chunk.tokens) > self._batch.capacity:
            raise BackendError(f"cannot verify a draft of {chunk.draft} tokens here")
        if seq_id in self._grammar_of or seq_id in self._matcher_of or seq_id in self._logprobs_of:
            raise BackendError(f"sequence {seq_id} samples with state: it cannot take drafts")
        if not 0 < chunk.draft < len(chunk.tokens) or not chunk.sample:
            raise BackendError(f"a draft chunk of sequence {seq_id} needs its last sampled token")

    def take_accepted(self) -> dict[int, int]:
        """The drafts of each draft chunk the last decode accepted."""
        taken, self._accepted = self._accepted, {}
        return taken

    def _call_groups(self, chunks: Sequence[SequenceChunk]) -> list[list[SequenceChunk]]:
        """The chunks each ``llama_decode`` call gets, in ascending seq_id order.

        llama.cpp splits a batch whose sequences are not in ascending seq_id order into
        several ubatches when each sequence has its own KV stream (a step then costs up to
        twice as much: 113 vs 195 tok/s measured for 8 sequences). It also cuts every ubatch
        to the same number of tokens per sequence, so a prompt chunk batched with one-token
        decode steps would lose its first token to a one-row ubatch, which llama.cpp's
        attention computes differently. With per-sequence streams, the decode steps therefore
        share one call and every prompt chunk gets its own: each token is computed the same
        way whatever else runs. Decode steps that verify drafts are as long as their drafts
        allow: steps of one length share a call (one ubatch, whose rows llama.cpp computes
        as plain decoding would; a draft chunk is never split, so its rows' logits come from
        one call). A unified KV stream gives no such promise; all share a call.
        """
        ordered = sorted(chunks, key=_seq_id)
        if self._kv_unified:
            return [ordered]
        steps: dict[int, list[SequenceChunk]] = {}
        prompts: list[list[SequenceChunk]] = []
        for chunk in ordered:
            n_tokens = len(chunk.tokens)
            if n_tokens == 1 or chunk.draft:
                steps.setdefault(n_tokens, []).append(chunk)
            else:
                prompts.append([chunk])
        return [steps[n] for n in sorted(steps)] + prompts

    def _run(self, pending: list[Pending], sampled: dict[int, int]) -> None:
        """One ``llama_decode`` of the filled batch, then the samples it makes possible."""
        batch = self._batch
        batch.seal()
        ctx = self._ctx
        code = self._decode_fn(ctx, batch.struct)
        n_tokens = batch.n_tokens
        batch.clear()
        if code != 0:
            raise BackendError(self._decode_error(code, n_tokens))
        sample = self._sample_fn
        grammars = self._grammar_of
        matchers = self._matcher_of
        wants_logprobs = self._logprobs_of
        for seq_id, chain, index, drafts in pending:
            if drafts:
                sampled[seq_id] = self._verify(seq_id, chain, index, drafts)
                continue
            grammar = grammars.get(seq_id)
            matcher = matchers.get(seq_id) if matchers else None
            if matcher is not None:
                try:
                    token = self._guided.sample(chain, matcher, ctx, index)
                except GuidanceFailure as exc:
                    self._failures[seq_id] = str(exc)
                    continue
            elif grammar is None:
                token = sample(chain, ctx, index)
            else:
                token = self._constrained.sample(chain, grammar, ctx, index)
            sampled[seq_id] = token
            n_top = wants_logprobs.get(seq_id)
            if n_top is not None:
                self._logprobs[seq_id] = self._logprob_reader.read(ctx, index, token, n_top)

    def _verify(self, seq_id: int, chain: Any, index: int, drafts: Sequence[int]) -> int:
        """Sample after the last sampled token and after each draft token while they agree;
        drop the KV of the drafts after the first disagreement. The last token sampled."""
        ctx, sample = self._ctx, self._sample_fn
        token = sample(chain, ctx, index)
        n_accepted = 0
        for draft in drafts:
            if token != draft:
                break
            n_accepted += 1
            token = sample(chain, ctx, index + n_accepted)
        self._accepted[seq_id] = n_accepted
        rejected = len(drafts) - n_accepted
        if rejected:
            position = self._positions[seq_id] - rejected
            self._llama.llama_memory_seq_rm(self._mem, seq_id, position, -1)
            self._positions[seq_id] = position
        return token

    def _decode_error(self, code: int, n_tokens: int) -> str:
        if code == 1:
            scope = "shared by all sequences" if self._kv_unified else "per sequence"
            return (
                f"llama_decode returned 1: the KV cache is full (no room for {n_tokens} more "
                f"tokens; the context holds {self._n_ctx} tokens {scope})"
            )
        problem = DECODE_ERRORS.get(code, "llama.cpp failed")
        return f"llama_decode returned {code} for a batch of {n_tokens} tokens: {problem}"

    def _roll_back(self, starts: list[tuple[int, int]]) -> None:
        """Return sequences to where they stood before a failed step (KV and positions)."""
        if self._ctx is None:
            return
        for seq_id, position in starts:
            self._llama.llama_memory_seq_rm(self._mem, seq_id, position, -1)
            self._positions[seq_id] = position

    def free_sequence(self, seq_id: int, *, keep_kv: bool = False) -> None:
        """Drop the sampler chain, and the KV unless ``keep_kv``; ``seq_id`` may be reopened."""
        chain = self._chains.pop(seq_id, None)
        if chain is not None:
            self._llama.llama_sampler_free(chain)
        grammar = self._grammar_of.pop(seq_id, None)
        if grammar is not None:
            self._llama.llama_sampler_free(grammar)
        self._logprobs_of.pop(seq_id, None)
        self._matcher_of.pop(seq_id, None)
        if not keep_kv and self._ctx is not None and 0 <= seq_id < len(self._positions):
            self._llama.llama_memory_seq_rm(self._mem, seq_id, -1, -1)
            self._positions[seq_id] = 0

    def close(self) -> None:
        """Free samplers, context and model; calling it again does nothing."""
        llama = getattr(self, "_llama", None)
        if llama is None:
            return
        for sampler in [*self._chains.values(), *self._grammar_of.values()]:
            llama.llama_sampler_free(sampler)
        self._chains.clear()
        self._grammar_of.clear()
        self._matcher_of.clear()
        if self._grammars is not None:
            self._grammars.close()
            self._grammars = None
        if self._embedder is not None:
            self._embedder.close()
            self._embedder = None
        if self._ctx is not None:
            llama.llama_free(self._ctx)
            self._ctx = None
        if self._adapters is not None:
            self._adapters.close()
            self._adapters = None
        if self._model is not None:
            llama.llama_model_free(self._model)
            self._model = None

    def __del__(self) -> None:
        # at interpreter shutdown the library may already be gone
        with contextlib.suppress(Exception):
            self.close()


def cpu_has_amx(device: DeviceInfo) -> bool | None:
    """Whether the CPU has Intel AMX, as the model's device reports it (its ``amx`` feature).

    Only a cpu device describes the CPU; for any other device the answer is unknown (None).
    """
    return "amx" in device.features if device.kind == "cpu" else None


def _threads(spec: BackendSpec, options: LlamaCppOptions) -> int:
    """Threads for llama.cpp's decode: the option, else the device's cores, else ours."""
    return options.threads or spec.device.cores or usable_cores()


def _seq_id(chunk: SequenceChunk) -> int:
    return chunk.seq_id


def independent_rows_below(device_kind: str, options: LlamaCppOptions) -> int:
    """Chunk lengths below which every token's KV is computed independently of the others.

    On the CPU, with one KV stream per sequence, the matrix products work row by row, and so
    does flash attention for fewer than 64 query tokens (``GGML_FA_TILE_Q``; from 64 it
    switches to a tiled kernel that rounds differently). A shared KV stream mixes other
    sequences' tokens into that count, and GPU kernels depend on the batch shape: no promise.
    """
    if device_kind != "cpu" or options.kv_unified:
        return 0
    return CPU_FLASH_ATTENTION_TILE
