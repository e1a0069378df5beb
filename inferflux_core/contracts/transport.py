"""The contract a KV-transport plugin implements (hands KV state between engines)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import BaseModel


@dataclass(frozen=True, slots=True)
class KVBlock:
    """A sequence's serialized KV state on its way from a prefill engine to a decode engine."""

    request_id: str
    model: str
    n_tokens: int
    data: bytes


class KVTransport(ABC):
    """Moves :class:`KVBlock` s between a sender and a receiver, in order, with back-pressure.

    Constructed with the transport's options as keyword arguments (an unknown one is a
    ``TypeError``). When either end goes away (:meth:`close`, or a lost peer), nothing hangs:
    sends, waiting ones included, raise
    :class:`~inferflux_core.errors.KVTransportClosedError`, and :meth:`receive` returns the
    blocks already delivered, then raises it too.
    """

    #: The pydantic model of this plugin's ``options`` (see
    #: :mod:`inferflux_core.contracts.options`), or None to take them unchecked.
    options_model: ClassVar[type[BaseModel] | None] = None

    def __init__(self, **options: Any) -> None:
        self.options = options

    @abstractmethod
    async def send(self, block: KVBlock) -> None:
        """Deliver a block; waits while the receiver is ``max_pending`` blocks behind."""

    @abstractmethod
    async def receive(self) -> KVBlock:
        """The next block, in the order sent. A cancelled call loses no block."""

    async def close(self) -> None:  # noqa: B027 - optional hook with a do-nothing default
        """Stop: wake waiting senders and receivers with ``KVTransportClosedError``."""
