"""A reusable ``llama_batch`` whose arrays Python owns, filled with slice copies.

Owning the arrays (instead of ``llama_batch_init``) lets every token's ``seq_id`` pointer
point at one shared, constant cell per sequence, so filling a prefill chunk is four slice
assignments whatever its length, and nothing needs ``llama_batch_free``.
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from types import ModuleType

_INT32 = ctypes.sizeof(ctypes.c_int32)


class TokenBatch:
    """Up to ``capacity`` tokens, each for one sequence, ready to pass to ``llama_decode``."""

    def __init__(self, llama: ModuleType, capacity: int, n_sequences: int) -> None:
        self.capacity = capacity
        self.n_tokens = 0
        self._tokens = (ctypes.c_int32 * capacity)()
        self._positions = (ctypes.c_int32 * capacity)()
        self._n_seq_id = (ctypes.c_int32 * capacity)(*([1] * capacity))
        self._seq_ids = (ctypes.c_void_p * capacity)()
        self._logits = (ctypes.c_int8 * capacity)()
        self._seq_cells = (ctypes.c_int32 * n_sequences)(*range(n_sequences))
        base = ctypes.addressof(self._seq_cells)
        self._seq_addr = [base + _INT32 * seq_id for seq_id in range(n_sequences)]
        self.struct = llama.llama_batch(
            n_tokens=0,
            token=ctypes.cast(self._tokens, ctypes.POINTER(llama.llama_token)),
            embd=None,
            pos=ctypes.cast(self._positions, ctypes.POINTER(llama.llama_pos)),
            n_seq_id=ctypes.cast(self._n_seq_id, ctypes.POINTER(ctypes.c_int32)),
            seq_id=ctypes.cast(self._seq_ids, ctypes.POINTER(ctypes.POINTER(llama.llama_seq_id))),
            logits=ctypes.cast(self._logits, ctypes.POINTER(ctypes.c_int8)),
        )

    @property
    def room(self) -> int:
        """Tokens that still fit."""
        return self.capacity - self.n_tokens

    def add(
        self,
        seq_id: int,
        tokens: Sequence[int],
        start: int,
        count: int,
        position: int,
        want_logits: int,
    ) -> int:
        """Append ``tokens[start:start+count]`` at ``position``…; return the last one's index.

        ``want_logits`` asks for logits of that many of the last appended tokens (a bool:
        the last one's, or none); their indexes end at the one returned.
        """
        n = self.n_tokens
        last = n + count - 1
        if count == 1:
            self._tokens[n] = tokens[start]
            self._positions[n] = position
            self._seq_ids[n] = self._seq_addr[seq_id]
        else:
            end = n + count
            self._tokens[n:end] = (
                tokens if start == 0 and count == len(tokens) else (tokens[start : start + count])
            )
            self._positions[n:end] = range(position, position + count)
            self._seq_ids[n:end] = [self._seq_addr[seq_id]] * count
            self._logits[n:last] = bytes(count - 1)
        if want_logits > 1:
            self._logits[last - want_logits + 1 : last + 1] = b"\x01" * want_logits
        else:
            self._logits[last] = want_logits
        self.n_tokens = last + 1
        return last

    def seal(self) -> None:
        """Write the token count into the struct before ``llama_decode``."""
        self.struct.n_tokens = self.n_tokens

    def clear(self) -> None:
        """Empty the batch for the next call."""
        self.n_tokens = 0
