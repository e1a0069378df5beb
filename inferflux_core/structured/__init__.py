"""Structured output: JSON Schema and JSON mode enforced by a grammar during sampling."""

from inferflux_core.structured.gbnf import schema_grammar
from inferflux_core.structured.response_format import (
    GrammarChecker,
    check_backend_grammar,
    constraint_grammar,
    response_format_constraint,
)

__all__ = [
    "GrammarChecker",
    "check_backend_grammar",
    "constraint_grammar",
    "response_format_constraint",
    "schema_grammar",
]
