"""JSON Schema → an llguidance grammar, checked against every cap before it is compiled.

llguidance (``pip install llguidance``) enforces far more of JSON Schema than the GBNF
converter: ``pattern``, ``oneOf``, ``allOf``, most ``format`` s, local ``$ref``. Whatever it
cannot enforce (``not``, ``uniqueItems``, an unknown ``format``, a remote ``$ref``) makes its
grammar invalid, and that is a 400 quoting llguidance's reason (which names the keyword),
never a silent drop: the compile options forbid its ``lenient`` mode whatever a schema's
``x-guidance`` says. The caps of :mod:`.limits` apply first; llguidance's own per-grammar and
per-token limits (:data:`PARSER_LIMITS`) bound what is left. ``additionalProperties`` follows
OpenAI's strict rule: an object schema that does not state it allows no other properties.

Pure, synchronous functions: callers run them on a worker thread.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

from inferflux_core.contracts.generation import OutputConstraint
from inferflux_core.errors import InvalidRequestError
from inferflux_core.structured.cache import BoundedCache, digest
from inferflux_core.structured.gbnf import ANY_OBJECT
from inferflux_core.structured.limits import check_schema_limits, subschemas
from inferflux_core.structured.response_format import named
from inferflux_core.structured.schema_rules import PARAM as SCHEMA_PARAM
from inferflux_core.structured.schema_rules import check_valid_schema

#: llguidance's JSON compile options: no whitespace between tokens (as the GBNF grammar), no
#: ``lenient`` mode (it would ignore keywords it cannot enforce) and no coercing ``oneOf``.
COMPILE_OPTIONS: dict[str, Any] = {
    "whitespace_flexible": False,
    "lenient": False,
    "coerce_one_of": False,
}
#: llguidance's parser limits (its defaults, written out so they are ours): the branching
#: of one grammar row, the lexer fuel to build a grammar and to compute one token's mask, the
#: Earley items of one step, the lexer's states and the grammar's symbols.
PARSER_LIMITS: dict[str, Any] = {
    "max_items_in_row": 2000,
    "initial_lexer_fuel": 1_000_000,
    "step_lexer_fuel": 200_000,
    "step_max_items": 50_000,
    "max_lexer_states": 250_000,
    "max_grammar_size": 500_000,
    "verbose_errors": False,
}
CACHED_GRAMMARS = 256
CACHED_BYTES = 16 * 1024 * 1024
INSTALL_HINT = "pip install llguidance"


def parser_limits() -> Any:
    """:data:`PARSER_LIMITS` as llguidance's ``LLParserLimits``."""
    from llguidance import LLParserLimits

    return LLParserLimits(**PARSER_LIMITS)


def guidance_available() -> bool:
    """Whether the llguidance package can be imported."""
    try:
        import llguidance  # noqa: F401
    except ImportError:
        return False
    return True


def constraint_guidance(constraint: OutputConstraint) -> str:
    """The llguidance grammar (its JSON text) enforcing a ``json_object``/``json_schema``
    constraint; 400 naming where the schema is and what llguidance refuses in it."""
    if constraint.kind == "json_object":
        return schema_guidance(ANY_OBJECT, param=constraint.param)
    if constraint.kind != "json_schema":
        raise InvalidRequestError(
            f"{constraint.param}: llguidance here enforces JSON schemas only",
            param=constraint.param,
            code="unsupported",
        )
    return schema_guidance(dict(constraint.schema or {}), param=schema_param(constraint))


def schema_param(constraint: OutputConstraint) -> str:
    """Where the constraint's schema is in the client's request, for errors about it."""
    if constraint.kind == "json_schema" and constraint.param == "response_format":
        return SCHEMA_PARAM
    return constraint.param


def schema_guidance(schema: Any, *, param: str = SCHEMA_PARAM) -> str:
    """The llguidance grammar for ``schema`` (cached by the schema's canonical JSON)."""
    if not isinstance(schema, dict):
        raise InvalidRequestError(f"{param}: must be a JSON object", param=param)
    check_schema_limits(schema, param)
    # Keys keep their order: properties are generated in schema order.
    key = json.dumps(schema, separators=(",", ":"), ensure_ascii=False)
    cache_key = digest("llguidance", key)
    grammar = GUIDANCE_GRAMMARS.get(cache_key)
    if grammar is None:
        grammar = _compile(json.loads(key), param)
        GUIDANCE_GRAMMARS.put(cache_key, grammar, len(grammar))
    return grammar


#: Compiled grammars by schema, shared by every request.
GUIDANCE_GRAMMARS: BoundedCache[str] = BoundedCache(CACHED_GRAMMARS, CACHED_BYTES)


def _compile(schema: dict[str, Any], param: str) -> str:
    check_valid_schema(schema, param)
    try:
        from llguidance import LLMatcher
    except ImportError:
        raise InvalidRequestError(
            f"{param}: structured output on llguidance needs the llguidance package "
            f"({INSTALL_HINT})",
            param=param,
            code="unsupported",
        ) from None
    strict = strict_objects(schema)
    try:
        grammar = str(
            LLMatcher.grammar_from_json_schema(strict, overrides=COMPILE_OPTIONS)  # type: ignore[arg-type]
        )
    except (ValueError, TypeError) as exc:
        raise refused(param, str(exc)) from None
    failed, messages = LLMatcher.validate_grammar_with_warnings(
        grammar, None, limits=parser_limits()
    )
    if failed or messages:
        raise refused(param, "; ".join(messages) or "the schema was refused")
    return grammar


class GuidanceChecker(Protocol):
    """What an llguidance grammar check needs of a backend."""

    def check_llguidance(self, grammar: str) -> None:
        """Raise InvalidRequestError if the backend cannot run the llguidance ``grammar``."""


def check_backend_guidance(backend: GuidanceChecker, grammar: str, param: str) -> None:
    """400 naming ``param`` unless ``backend`` accepts the llguidance ``grammar``."""
    try:
        backend.check_llguidance(grammar)
    except InvalidRequestError as exc:
        raise named(exc, param) from None


def refused(param: str | None, reason: str) -> InvalidRequestError:
    """The 400 for a schema llguidance cannot enforce, with its reason (bounded); with no
    ``param`` the caller names the field (``check_backend_guidance`` does)."""
    reason = " ".join(reason.split())[:300]
    message = f"llguidance cannot enforce this schema ({reason})"
    return InvalidRequestError(
        f"{param}: {message}" if param else message, param=param, code="unsupported"
    )


def strict_objects(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with ``additionalProperties: false`` on every object subschema that lists
    ``properties`` and does not state it (OpenAI's strict rule; the GBNF converter does the
    same). ``schema`` is a private copy: it is changed in place and returned."""
    for _, node in subschemas(schema):
        if "properties" in node and "additionalProperties" not in node:
            node["additionalProperties"] = False
    return schema
