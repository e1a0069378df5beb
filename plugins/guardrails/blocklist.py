"""A blocklist guardrail: refuse prompts, and stop outputs, that contain a listed phrase.

Options: ``terms`` (a list of phrases; surrounding spaces are ignored), ``terms_file`` (one
phrase per line; ``#`` starts a comment), ``case_sensitive`` (default false: phrases match
ignoring case, via ``casefold``), ``check_output`` (default true). Matching is by substring,
so a phrase is found anywhere, including across the chunks of a streamed output.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import Field

from inferflux_core.contracts import (
    ALLOW,
    Guardrail,
    GuardrailInput,
    GuardrailVerdict,
    OutputFilter,
    PluginOptions,
)
from inferflux_core.hookspecs import hookimpl
from inferflux_core.matching import partial_match_length

#: The version of inferflux's hook contract this plugin was written against.
INFERFLUX_HOOKSPEC_VERSION = 1


class PhraseFilter(OutputFilter):
    """Holds back the longest tail of the output that begins a phrase, like stop strings."""

    def __init__(self, phrases: Sequence[str], normalize: Any) -> None:
        self._phrases = phrases
        self._normalize = normalize
        self._held = ""

    def push(self, text: str) -> tuple[str, bool]:
        """Safe text now; blocked once a whole phrase has appeared."""
        buffer = self._held + text
        folded = self._normalize(buffer)
        if any(phrase in folded for phrase in self._phrases):
            self._held = ""
            return "", True
        # Each character folds to at least one, so the last k folded characters come from
        # at most the last k original ones: holding back k originals is always enough.
        hold = partial_match_length(folded, self._phrases)
        self._held = buffer[len(buffer) - hold :] if hold else ""
        return buffer[: len(buffer) - hold], False

    def flush(self) -> str:
        """What is still held (no phrase completed)."""
        held, self._held = self._held, ""
        return held


class BlocklistOptions(PluginOptions):
    """``guardrails[].options`` of ``blocklist`` (at least one term, listed or in the file)."""

    terms: list[str] = Field(
        default_factory=list, description="phrases to block (surrounding spaces ignored)"
    )
    terms_file: str | None = Field(
        None, description="a file of phrases, one per line; `#` starts a comment"
    )
    case_sensitive: bool = Field(False, description="match case exactly instead of with `casefold`")
    check_output: bool = Field(
        True, description="filter the model's output too, not only the prompt"
    )


class BlocklistGuardrail(Guardrail):
    """Blocks text containing any configured phrase; see the module docstring."""

    options_model = BlocklistOptions

    def __init__(
        self,
        *,
        terms: Sequence[str] = (),
        terms_file: str | None = None,
        case_sensitive: bool = False,
        check_output: bool = True,
    ) -> None:
        super().__init__(terms=terms, terms_file=terms_file)
        phrases = list(terms)
        if terms_file is not None:
            lines = Path(terms_file).read_text(encoding="utf-8").splitlines()
            phrases += [line.strip() for line in lines if not line.lstrip().startswith("#")]
        self._normalize = (lambda text: text) if case_sensitive else str.casefold
        self._phrases = tuple(sorted({self._normalize(p.strip()) for p in phrases if p.strip()}))
        if not self._phrases:
            raise ValueError("the blocklist has no terms (options.terms or options.terms_file)")
        self._check_output = check_output

    async def check_input(self, request: GuardrailInput) -> GuardrailVerdict:
        """Refuse a prompt that contains a phrase (without saying which)."""
        folded = self._normalize(request.text)
        if any(phrase in folded for phrase in self._phrases):
            return GuardrailVerdict(False, "the prompt contains a blocked phrase")
        return ALLOW

    def output_filter(self, request: GuardrailInput) -> OutputFilter | None:
        """A phrase filter per choice, unless ``check_output`` is off."""
        return PhraseFilter(self._phrases, self._normalize) if self._check_output else None


@hookimpl
def register_guardrails() -> dict[str, type[Guardrail]]:
    """The blocklist guardrail, as ``blocklist``."""
    return {"blocklist": BlocklistGuardrail}
