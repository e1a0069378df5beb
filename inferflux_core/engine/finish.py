"""Finish rules: each sampled token becomes text, and the sequence ends on an
end-of-generation token (EOS, or a grammar the backend finished), a stop string,
``max_tokens`` or the context length."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from inferflux_core.contracts import StepBackend, TokenLogprob
from inferflux_core.engine.requests import GenerationEvent
from inferflux_core.engine.runner_metrics import RunnerMetrics
from inferflux_core.engine.stream import EngineSequence, Outbox
from inferflux_core.errors import BackendError

#: Ends a sequence with its finish reason (the runner's release).
Release = Callable[[EngineSequence, str], None]


class TokenAcceptor:
    """Turns sampled tokens into events in ``outbox`` and releases finished sequences."""

    def __init__(
        self,
        backend: StepBackend,
        outbox: Outbox,
        metrics: RunnerMetrics,
        release: Release,
        *,
        context_length: int,
    ) -> None:
        self._is_end = backend.is_end_of_generation
        self._outbox = outbox
        self._m = metrics
        self._release = release
        self.context_length = context_length

    def accept(
        self, sequence: EngineSequence, token: int, logprobs: Mapping[int, TokenLogprob]
    ) -> None:
        """Append ``token``, emit its text, and release the sequence if it is done."""
        state = sequence.state
        request = state.request
        assert sequence.seq_id is not None
        logprob = logprobs.get(sequence.seq_id)
        if request.sampling.logprobs is not None and logprob is None:
            raise BackendError(f"the backend gave no logprobs for sequence {sequence.seq_id}")
        sequence.generated.append(token)
        n_generated = len(sequence.generated)
        self._m.token(sequence, n_generated)
        finish: str | None = None
        if self._is_end(token):
            text = ""
            if not request.ignore_eos and n_generated > request.min_tokens:
                finish = "stop"
                text = state.assembler.flush()
        else:
            if logprob is not None:
                state.pending_logprobs.append(logprob)
            text, stopped = state.assembler.push(token)
            if stopped:
                finish = "stop"
        if finish is None and (
            n_generated >= request.max_tokens or sequence.kv_tokens >= self.context_length
        ):
            finish = "length"
            text += state.assembler.flush()
        released = state.release_logprobs(finished=finish is not None)
        stop_sequence = state.assembler.matched if finish == "stop" else None
        self.emit(sequence, text, (token,), finish, logprobs=released, stop_sequence=stop_sequence)
        if finish is not None:
            self._release(sequence, finish)

    def emit(
        self,
        sequence: EngineSequence,
        text: str,
        tokens: tuple[int, ...],
        finish: str | None,
        error: Exception | None = None,
        *,
        logprobs: tuple[TokenLogprob, ...] = (),
        stop_sequence: str | None = None,
    ) -> None:
        """Queue one event for the sequence's consumer (delivered at the step's flush)."""
        event = GenerationEvent(
            text=text,
            token_ids=tokens,
            n_prompt_tokens=len(sequence.prompt_tokens),
            n_generated_tokens=len(sequence.generated),
            finish_reason=finish,
            error=error,
            logprobs=logprobs,
            stop_sequence=stop_sequence,
        )
        self._outbox.put(sequence.state, event)
