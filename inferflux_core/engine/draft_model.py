"""Drafting with a second, small model (``speculative.method: draft_model``).

The draft model is another instance of the model's step-level backend, loaded from
``speculative.draft_model`` with the model's device and options, and with the same vocabulary
(checked at load: :func:`check_same_vocabulary`). Each of the model's KV sequences that drafts
has a KV sequence under the same seq id in the draft model. Before drafting, the draft model
catches up on what the model's sequence holds now (its prompt and accepted output), keeping the
drafts of the last step the model accepted and dropping the rest; then it decodes greedily, one
``decode`` per draft position for all drafting sequences together. Its KV is freed when the
model's sequence ends or is preempted (:meth:`DraftModel.release`).

The drafts only change how many tokens a step yields, never which: the model verifies them
(:class:`~inferflux_core.contracts.SequenceChunk`), so a draft model that drafts badly costs
speed, not correctness.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from inferflux_core.config import ModelConfig
from inferflux_core.contracts import BackendSpec, SamplingParams, SequenceChunk, StepBackend
from inferflux_core.errors import BackendError, ConfigError
from inferflux_core.plugins import PluginHost
from inferflux_core.sources import resolve_model_source

log = logging.getLogger(__name__)

GREEDY = SamplingParams(temperature=0.0)
#: How many token texts :func:`check_same_vocabulary` compares (spread over the vocabulary).
VOCAB_SAMPLE = 256
#: A catch-up this long or longer (a prompt) is prefilled in one chunk before drafting; a
#: shorter one (the last step's last tokens) is fed a token per call with the drafts.
PREFILL_FROM = 4


@dataclass(frozen=True, slots=True)
class DraftQuery:
    """One sequence that wants drafts: its seq id, who owns it (its request id), its history
    (``prompt`` then ``generated``) and the most tokens to draft."""

    seq_id: int
    owner: str
    prompt: Sequence[int]
    generated: Sequence[int]
    limit: int


@dataclass(slots=True)
class _DraftSlot:
    """What the draft model's KV sequence holds: the first ``synced`` tokens of its owner's
    history, then ``drafts`` (drafted tokens the model had not accepted yet when fed)."""

    owner: str
    synced: int = 0
    drafts: list[int] = field(default_factory=list)


@dataclass(slots=True)
class _Drafting:
    """One sequence's draft in progress: tokens to feed (one per call), and what it drafted."""

    seq_id: int
    limit: int
    feed: list[int]
    drafted: list[int] = field(default_factory=list)


class DraftModel:
    """A draft model's backend and which of its KV sequences hold what (see the module
    docstring). Called from the model's step thread only."""

    def __init__(self, backend: StepBackend, source: str) -> None:
        self.backend = backend
        #: The configured source, for messages.
        self.source = source
        self._slots: dict[int, _DraftSlot] = {}

    @property
    def open_sequences(self) -> int:
        """Seq ids whose draft KV is held now."""
        return len(self._slots)

    def propose(self, queries: Sequence[DraftQuery]) -> dict[int, list[int]]:
        """Greedy drafts of up to ``limit`` tokens per query, by seq id (none after an end
        of generation). A failed draft step drafts nothing and frees the queries' draft KV."""
        try:
            drafting = self._catch_up([q for q in queries if q.limit > 0])
            self._draft(drafting)
        except BackendError as exc:
            log.warning("draft model %s failed a step (no drafts): %s", self.source, exc.message)
            for query in queries:
                self.release(query.seq_id)
            return {}
        return {d.seq_id: d.drafted for d in drafting if d.drafted}

    def release(self, seq_id: int) -> None:
        """Free the draft KV of ``seq_id`` (its sequence ended or was preempted)."""
        if self._slots.pop(seq_id, None) is not None:
            self.backend.free_sequence(seq_id)

    def close(self) -> None:
        """Release the draft model's backend."""
        self._slots.clear()
        self.backend.close()

    def _catch_up(self, queries: Sequence[DraftQuery]) -> list[_Drafting]:
        """Bring each query's draft KV to all of its history but the tokens still to feed:
        a long catch-up is prefilled now, in one ``decode`` for all queries."""
        drafting: list[_Drafting] = []
        prefills: list[SequenceChunk] = []
        for query in queries:
            missing = self._missing(query)
            if len(missing) >= PREFILL_FROM:
                prefills.append(SequenceChunk(query.seq_id, missing[:-1], sample=False))
                missing = missing[-1:]
            drafting.append(_Drafting(query.seq_id, query.limit, missing))
        if prefills:
            self.backend.decode(prefills)
        return drafting

    def _missing(self, query: DraftQuery) -> list[int]:
        """The history tokens the draft KV of ``query`` lacks (at least its last token),
        after dropping the drafts it does not share; the slot then counts them as held."""
        seq_id = query.seq_id
        slot = self._slots.get(seq_id)
        if slot is not None and slot.owner != query.owner:
            self.release(seq_id)
            slot = None
        if slot is None:
            self.backend.open_sequence(seq_id, GREEDY)
            slot = self._slots[seq_id] = _DraftSlot(query.owner)
        n_history = len(query.prompt) + len(query.generated)
        base = slot.synced
        kept = 0
        if slot.drafts:
            for drafted, token in zip(slot.drafts, _history_from(query, base), strict=False):
                if drafted != token:
                    break
                kept += 1
        keep = min(base + kept, n_history - 1)
        if keep < base + len(slot.drafts):
            self._truncate(seq_id, keep)
        slot.synced = n_history
        slot.drafts = []
        return _history_from(query, keep)

    def _truncate(self, seq_id: int, n_tokens: int) -> None:
        """Keep the first ``n_tokens`` of ``seq_id``'s draft KV (the backend's prefix reuse)."""
        self.backend.free_sequence(seq_id, keep_kv=True)
        self.backend.open_sequence(seq_id, GREEDY, keep_tokens=n_tokens)

    def _draft(self, drafting: Sequence[_Drafting]) -> None:
        """Feed every sequence one token per ``decode``, sampling after its last one to
        feed; a sampled token is drafted and fed next, until the limit or an end token."""
        backend = self.backend
        active = list(drafting)
        while active:
            chunks = [SequenceChunk(d.seq_id, d.feed[:1], sample=len(d.feed) == 1) for d in active]
            sampled = backend.decode(chunks)
            still: list[_Drafting] = []
            for d in active:
                fed = d.feed.pop(0)
                if d.drafted:
                    self._slots[d.seq_id].drafts.append(fed)
                token = sampled.get(d.seq_id)
                if token is not None:
                    d.drafted.append(token)
                    if len(d.drafted) < d.limit and not backend.is_end_of_generation(token):
                        d.feed.append(token)
                if d.feed:
                    still.append(d)
            active = still


def _history_from(query: DraftQuery, start: int) -> list[int]:
    """``(prompt + generated)[start:]`` of ``query``, not copying what comes before."""
    prompt, generated = query.prompt, query.generated
    n_prompt = len(prompt)
    if start >= n_prompt:
        return list(generated[start - n_prompt :])
    return [*prompt[start:], *generated]


def check_same_vocabulary(
    target: StepBackend, draft: StepBackend, model_name: str, draft_source: str
) -> None:
    """Raise :class:`~inferflux_core.errors.ConfigError` naming both models unless the draft
    model's vocabulary is the model's: the same size, BOS and EOS, and the same bytes for a
    sample of :data:`VOCAB_SAMPLE` tokens spread over it."""
    ours, theirs = target.info, draft.info
    problem = None
    if ours.vocab_size != theirs.vocab_size:
        problem = f"{theirs.vocab_size} tokens, not {ours.vocab_size}"
    elif (ours.bos_token, ours.eos_token) != (theirs.bos_token, theirs.eos_token):
        problem = (
            f"BOS/EOS {theirs.bos_token!r}/{theirs.eos_token!r}, "
            f"not {ours.bos_token!r}/{ours.eos_token!r}"
        )
    else:
        n_vocab = ours.vocab_size
        step = max(1, n_vocab // VOCAB_SAMPLE)
        for token in [*range(0, n_vocab, step), n_vocab - 1]:
            if target.token_bytes(token) != draft.token_bytes(token):
                problem = (
                    f"token {token} is {draft.token_bytes(token)!r}, "
                    f"not {target.token_bytes(token)!r}"
                )
                break
    if problem is not None:
        raise ConfigError(
            f"models.{model_name}.speculative.draft_model: {draft_source} cannot draft for "
            f"model {model_name}: its vocabulary differs ({problem})",
            param=f"models.{model_name}.speculative.draft_model",
        )


def load_draft_model(
    config: ModelConfig,
    backend_cls: Callable[[BackendSpec], StepBackend],
    spec: BackendSpec,
    target: StepBackend,
    host: PluginHost,
    registry_path: Path | None = None,
) -> DraftModel | None:
    """The draft model of ``config``, whose ``backend_cls`` loaded it as ``target`` from
    ``spec``: a ``backend_cls`` of the draft source with the same spec; None when it has
    none or ``target`` cannot verify drafts here (``supports_speculation``)."""
    source = config.speculative.draft_model
    if source is None or config.speculative.method != "draft_model":
        return None
    if not target.supports_speculation:
        log.warning(
            "model %s: its backend cannot verify drafts on %s; draft model %s not loaded",
            config.name,
            spec.device.kind,
            source,
        )
        return None
    if not target.supports_prefix_reuse:
        raise ConfigError(
            f"models.{config.name}.speculative: a draft model needs a backend with prefix "
            f"reuse; {type(target).__name__} has none",
            param=f"models.{config.name}.speculative.draft_model",
        )
    path = resolve_model_source(source, host, registry_path=registry_path)
    draft_spec = dataclasses.replace(spec, model_name=f"{config.name}.draft", model_path=path)
    backend = backend_cls(draft_spec)
    try:
        check_same_vocabulary(target, backend, config.name, source)
    except BaseException:
        backend.close()
        raise
    log.info("model %s drafts with %s (%s)", config.name, source, path)
    return DraftModel(backend, source)
