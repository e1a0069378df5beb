"""Structured output: JSON Schema and JSON mode enforced by a grammar during sampling."""

from inferflux_core.structured.gbnf import schema_grammar
from inferflux_core.structured.response_format import (
    check_backend_grammar,
    response_format_grammar,
)

__all__ = ["check_backend_grammar", "response_format_grammar", "schema_grammar"]
