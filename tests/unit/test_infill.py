"""Fill-in-the-middle prompts are laid out with the model's FIM tokens, or refused."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from inferflux_core.engine.infill import infill_tokens
from inferflux_core.errors import InvalidRequestError

BOS, PRE, SUF, MID = 1, 90, 91, 92


def model_with(fim_tokens: tuple[int, int, int] | None, add_bos: bool) -> SimpleNamespace:
    """A stand-in for a loaded model: a byte-level tokenizer and the FIM facts."""

    def tokenize(text: str, *, add_special: bool = True) -> list[int]:
        return ([BOS] if add_special and add_bos else []) + list(text.encode())

    info = SimpleNamespace(fim_tokens=fim_tokens, add_bos=add_bos)
    return SimpleNamespace(name="m", backend=SimpleNamespace(info=info, tokenize=tokenize))


def test_prefix_suffix_middle_order() -> None:
    model = model_with((PRE, SUF, MID), add_bos=True)
    tokens = infill_tokens(model, "ab", "c")  # type: ignore[arg-type]
    assert tokens == [BOS, PRE, *b"ab", SUF, *b"c", MID]


def test_token_id_prefix_is_used_as_is() -> None:
    model = model_with((PRE, SUF, MID), add_bos=False)
    assert infill_tokens(model, [7, 8], "z") == [PRE, 7, 8, SUF, *b"z", MID]  # type: ignore[arg-type]


def test_model_without_fim_tokens_is_refused_naming_suffix() -> None:
    with pytest.raises(InvalidRequestError) as caught:
        infill_tokens(model_with(None, add_bos=False), "a", "b")  # type: ignore[arg-type]
    assert caught.value.param == "suffix"
