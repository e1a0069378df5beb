"""The contract a scheduler plugin implements, and the sequence state it schedules."""

from __future__ import annotations

import enum
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel


class SequenceStatus(enum.Enum):
    """Where a sequence is in its life."""

    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass(eq=False, slots=True)
class ScheduledSequence:
    """One request's sequence as the scheduler sees it.

    ``prompt_tokens[:n_prefilled]`` are in the KV already; once the prompt is prefilled, each
    step feeds the last generated token. Everything else about the request (its sampling,
    its stream, a preempted sequence's saved KV) is the engine's and stays on its side.
    """

    request_id: str
    prompt_tokens: list[int]
    priority: int = 0
    arrival: float = field(default_factory=time.monotonic)
    status: SequenceStatus = SequenceStatus.WAITING
    seq_id: int | None = None
    n_prefilled: int = 0
    generated: list[int] = field(default_factory=list)
    #: Tokens decoded since the sequence was last admitted (for timeslices).
    slice_tokens: int = 0
    #: How often the sequence was preempted.
    preemptions: int = 0
    #: The LoRA adapter it runs under (None: the base model). One step's chunks must all
    #: share one adapter: the backend applies adapters per step, not per sequence.
    adapter: str | None = None

    @property
    def prefill_done(self) -> bool:
        """True once every prompt token is in the KV cache."""
        return self.n_prefilled >= len(self.prompt_tokens)

    @property
    def kv_tokens(self) -> int:
        """KV cells this sequence will hold once its prompt is prefilled."""
        return len(self.prompt_tokens) + len(self.generated)

    @property
    def remaining_prompt(self) -> int:
        """Prompt tokens not yet prefilled."""
        return len(self.prompt_tokens) - self.n_prefilled


@dataclass(frozen=True, slots=True)
class ScheduledChunk:
    """``n_tokens`` of ``sequence`` to run this step (prompt tokens, or 1 to decode)."""

    sequence: ScheduledSequence
    n_tokens: int


@dataclass(frozen=True, slots=True)
class StepPlan:
    """What the next step does: take ``preempt`` out (their KV saved), then run ``chunks``."""

    chunks: Sequence[ScheduledChunk] = ()
    preempt: Sequence[ScheduledSequence] = ()

    def __bool__(self) -> bool:
        return bool(self.chunks or self.preempt)


@dataclass(frozen=True, slots=True)
class SchedulerLimits:
    """Bounds the engine gives a scheduler for one model, whatever the scheduler.

    ``kv_capacity`` is the number of KV cells all sequences share; a scheduler admits a
    sequence only while the prompts and generated tokens of running sequences fit in it.
    How a scheduler ranks, ages or preempts within these bounds is its own business, set by
    its options (see :attr:`Scheduler.options_model`).
    """

    max_sequences: int
    context_length: int
    kv_capacity: int
    #: Tokens all chunks of one step may hold together (``scheduler.token_budget``).
    token_budget: int
    #: Prompt tokens one sequence may feed in one step (``scheduler.prefill_chunk``).
    prefill_chunk: int
    #: Sequences that may wait for admission (``scheduler.max_queue``).
    max_queue: int
    #: Whether the engine can preempt running sequences (the backend saves and restores
    #: them); a plan may list sequences in ``preempt`` only when this is true.
    preemption: bool = False


class Scheduler(ABC):
    """Decides which sequences run in each step and how many tokens each feeds.

    The engine calls :meth:`add` when a request arrives (from the event loop thread),
    and :meth:`plan_step`, :meth:`finish` from its step thread; implementations guard shared
    state themselves. The engine assigns KV ``seq_id`` s to sequences the plan admits.

    The constructor takes the model's :class:`SchedulerLimits` and ``scheduler.options`` as
    keyword arguments: checked against :attr:`options_model` (defaults filled in) when the
    scheduler declares one, as they are otherwise (then raise ``TypeError`` for one it does
    not know).
    """

    #: The pydantic model of this scheduler's ``scheduler.options`` (a
    #: :class:`~inferflux_core.contracts.PluginOptions` subclass), or None to take them
    #: unchecked. The core validates the options against it and documents its fields.
    options_model: ClassVar[type[BaseModel] | None] = None
    #: True if every plan keeps to one ``ScheduledSequence.adapter``: only such a scheduler
    #: may run a model with LoRA adapters (others are refused when the model loads).
    groups_adapters: ClassVar[bool] = False

    def __init__(self, limits: SchedulerLimits, **options: Any) -> None:
        self.limits = limits

    @abstractmethod
    def add(self, sequence: ScheduledSequence) -> None:
        """Queue a new sequence; raise :class:`inferflux_core.errors.QueueFullError` if full."""

    @abstractmethod
    def plan_step(self) -> StepPlan:
        """Plan the next step.

        Running sequences that finished prefill decode one token; waiting sequences are
        admitted (status becomes RUNNING) while fewer than ``max_sequences`` run; prompt
        tokens fill the rest of ``token_budget`` in chunks of at most ``prefill_chunk``.
        Only with ``limits.preemption``, running sequences listed in ``preempt`` go back to
        WAITING; the engine saves their KV before the step and restores it on readmission.
        Every chunk of a plan must have the same ``adapter`` (running sequences of other
        adapters wait for a later step: take turns, so none starves). Returns an empty plan
        when there is nothing to do.
        """

    @abstractmethod
    def finish(self, sequence: ScheduledSequence) -> None:
        """Remove a sequence (finished, failed or cancelled) from waiting or running."""

    @property
    @abstractmethod
    def waiting_count(self) -> int:
        """Sequences queued and not yet admitted."""

    @property
    @abstractmethod
    def running_count(self) -> int:
        """Sequences admitted and not yet finished."""
