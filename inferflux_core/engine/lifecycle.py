"""A sequence's KV life on the step thread: open (restore, fork, prefix reuse, empty),
preempt, release."""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Sequence

from inferflux_core.contracts import SamplingParams, Scheduler, StepBackend
from inferflux_core.engine import supervision
from inferflux_core.engine.groups import copy_source, followers_to_fork
from inferflux_core.engine.row_classes import long_region_end
from inferflux_core.engine.runner_metrics import RunnerMetrics
from inferflux_core.engine.slots import KVSlots
from inferflux_core.engine.speculation import Speculation
from inferflux_core.engine.stream import EngineSequence, RequestState

log = logging.getLogger(__name__)


class SequenceLifecycle:
    """Gives admitted sequences KV ids and takes them back, keeping ``live`` (the requests
    submitted and not yet finished, by request id) and the KV slots in step."""

    def __init__(
        self,
        backend: StepBackend,
        scheduler: Scheduler,
        slots: KVSlots,
        metrics: RunnerMetrics,
        live: dict[str, EngineSequence],
        *,
        eog_tokens: Sequence[int] = (),
        speculation: Speculation | None = None,
    ) -> None:
        self.backend = backend
        self._speculation = speculation
        self.scheduler = scheduler
        self.slots = slots
        self.live = live
        self._m = metrics
        self._ignore_eos_bias = {t: -math.inf for t in eog_tokens}

    def open(self, sequence: EngineSequence) -> None:
        """Give an admitted sequence a KV id: restore it, copy its leader's prompt, reuse a
        cached prefix, or start empty."""
        if sequence.state.scheduled_at is None:
            sequence.state.scheduled_at = time.monotonic()
        if sequence.saved is not None:
            seq_id = self.allocate()
            self.backend.restore_sequence(seq_id, sequence.saved)
            sequence.saved = None
            sequence.seq_id = seq_id
            return
        params = self.sampling(sequence.state)
        slots = self.slots
        if slots.row_classes:
            sequence.long_end = long_region_end(
                len(sequence.prompt_tokens),
                sequence.state.request.first_turn_tokens,
                slots.independent_below,
            )
        leader = copy_source(sequence)
        if leader is not None:
            self._fork(sequence, leader, params)
            return
        hit = (
            slots.find_prefix(sequence.prompt_tokens, sequence.adapter, sequence.long_end)
            if slots.reuse
            else None
        )
        if slots.reuse:
            self._m.lookups.inc()
            self._m.prefix_lookup(len(sequence.prompt_tokens), hit.n_tokens if hit else 0)
        if hit is not None and hit.idle:
            seq_id = slots.take_idle(hit.source)
            self.backend.open_sequence(seq_id, params, keep_tokens=hit.n_tokens)
        else:
            seq_id = self.allocate()
            self.backend.open_sequence(seq_id, params)
            if hit is not None:
                self.backend.copy_prefix(hit.source, seq_id, hit.n_tokens)
        sequence.seq_id = seq_id
        if hit is not None:
            sequence.n_prefilled = hit.n_tokens

    def prompt_done(self, sequence: EngineSequence) -> None:
        """The sequence's prompt is in its KV: remember it for reuse, and let admitted
        followers copy it now, before the leader can finish and give its KV up."""
        assert sequence.seq_id is not None
        exact = self.exact_kv(sequence)
        self.slots.prompt_prefilled(sequence.seq_id, exact, sequence.adapter, sequence.long_end)
        for follower in followers_to_fork(sequence):
            self.open(follower)

    def sampling(self, state: RequestState) -> SamplingParams:
        """The request's sampling parameters, with end-of-generation tokens banned when it
        ignores EOS."""
        params = state.request.sampling
        if state.request.ignore_eos and self._ignore_eos_bias:
            bias = dict(params.logit_bias or {})
            bias.update(self._ignore_eos_bias)
            params = dataclasses.replace(params, logit_bias=bias)
        return params

    def _fork(
        self, sequence: EngineSequence, leader: EngineSequence, params: SamplingParams
    ) -> None:
        """Copy all but the last prompt token from the leader's KV; the sequence decodes the
        last one itself, for logits of its own to sample from."""
        assert leader.seq_id is not None
        seq_id = self.allocate()
        self.backend.open_sequence(seq_id, params)
        sequence.seq_id = seq_id
        n_copy = len(sequence.prompt_tokens) - 1
        self._m.prefix_lookup(len(sequence.prompt_tokens), max(0, n_copy))
        if n_copy > 0:
            self.backend.copy_prefix(leader.seq_id, seq_id, n_copy)
            sequence.n_prefilled = n_copy

    def exact_kv(self, sequence: EngineSequence, *, with_generated: bool = False) -> list[int]:
        """The tokens in the sequence's KV that a fresh prefill would compute the same way.

        The prompt tokens prefilled, except that with row classes a fork's last prompt token
        does not count: it decoded that one on its own, which a fresh prefill may compute in
        a long chunk. With ``reuse_generated`` and ``with_generated``, the generated tokens fed
        back follow (all but the last one sampled).
        """
        prompt = sequence.prompt_tokens
        n_prefilled = min(sequence.n_prefilled, len(prompt))
        slots = self.slots
        if with_generated and slots.reuse_generated and sequence.prefill_done:
            return [*prompt, *sequence.generated[:-1]]
        if slots.row_classes and sequence.state.leader is not None:
            return prompt[: min(n_prefilled, len(prompt) - 1)]
        return prompt[:n_prefilled]

    def allocate(self) -> int:
        """A free KV id; a scheduler error if the scheduler admitted more than fit."""
        seq_id = self.slots.allocate()
        if seq_id is None:
            raise supervision.scheduler_error(
                "no free KV sequence id (the scheduler admitted too many)"
            )
        return seq_id

    def preempt(self, sequence: EngineSequence) -> None:
        """Save a running sequence's state and give its KV id back; it waits to resume."""
        if sequence.seq_id is None:
            return
        sequence.saved = self.backend.save_sequence(sequence.seq_id)
        self._free_drafting(sequence.seq_id)
        self.slots.forget(sequence.seq_id)
        sequence.seq_id = None
        self._m.preemptions.inc()

    def release(self, sequence: EngineSequence, reason: str, *, keep_kv: bool = True) -> None:
        """Forget a sequence and free its KV id, even if the scheduler or backend raise."""
        self.live.pop(sequence.request_id, None)
        sequence.state.finished_at = time.monotonic()
        self._m.finished(sequence, reason)
        sequence.saved = None
        try:
            self.scheduler.finish(sequence)
        finally:
            seq_id = sequence.seq_id
            if seq_id is not None:
                sequence.seq_id = None
                self._free_drafting(seq_id)
                in_kv = self.exact_kv(sequence, with_generated=True) if keep_kv else []
                kept = self.slots.release(seq_id, in_kv, sequence.adapter, sequence.long_end)
                try:
                    self.backend.free_sequence(seq_id, keep_kv=kept)
                except Exception:
                    self.slots.forget(seq_id)
                    raise

    def _free_drafting(self, seq_id: int) -> None:
        """Free what drafting held for ``seq_id`` (a draft model's KV); a failure there is
        logged, never kept from freeing the sequence itself."""
        if self._speculation is None:
            return
        try:
            self._speculation.release(seq_id)
        except Exception:
            log.warning("could not free the draft KV of sequence %d", seq_id, exc_info=True)
