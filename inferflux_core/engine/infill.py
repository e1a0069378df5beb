"""Fill-in-the-middle prompts for ``suffix``, built from the model's own FIM tokens."""

from __future__ import annotations

from typing import TYPE_CHECKING

from inferflux_core.errors import InvalidRequestError

if TYPE_CHECKING:
    from inferflux_core.engine.model import LoadedModel


def infill_tokens(model: LoadedModel, prefix: str | list[int], suffix: str) -> list[int]:
    """``[BOS] <fim_pre> prefix <fim_suf> suffix <fim_mid>``, as llama.cpp's server lays out
    an infill prompt (prefix-suffix-middle); 400 naming ``suffix`` if the model has no FIM
    tokens."""
    info = model.backend.info
    if info.fim_tokens is None:
        raise InvalidRequestError(
            f"suffix: model {model.name!r} has no fill-in-the-middle tokens, so it cannot "
            "complete between a prompt and a suffix",
            param="suffix",
            code="unsupported",
        )
    pre, suf, mid = info.fim_tokens
    backend = model.backend
    head = backend.tokenize(prefix, add_special=False) if isinstance(prefix, str) else prefix
    tail = backend.tokenize(suffix, add_special=False)
    bos = backend.tokenize("", add_special=True) if info.add_bos else []
    return [*bos, pre, *head, suf, *tail, mid]
