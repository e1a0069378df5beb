"""Output constraints (OpenAI's ``response_format`` and the typed request's ``constraint``)
and the grammar that enforces them during sampling."""

from __future__ import annotations

from typing import Any, Protocol

from inferflux_core.contracts.generation import OutputConstraint
from inferflux_core.errors import InvalidRequestError
from inferflux_core.structured.gbnf import ANY_OBJECT, schema_grammar
from inferflux_core.structured.limits import check_grammar_size
from inferflux_core.structured.schema_rules import PARAM as SCHEMA_PARAM

PARAM = "response_format"


def response_format_constraint(response_format: dict[str, Any] | None) -> OutputConstraint | None:
    """OpenAI's ``response_format`` as the engine's output constraint (None for plain text);
    400 naming the field that is wrong."""
    schema = _schema(response_format)
    if schema is None:
        return None
    if schema is ANY_OBJECT:
        return OutputConstraint("json_object", param=PARAM)
    return OutputConstraint("json_schema", schema=schema, param=PARAM)


def constraint_grammar(
    constraint: OutputConstraint, *, ignore_eos: bool = False, min_tokens: int = 0
) -> str:
    """The GBNF grammar that enforces ``constraint``; 400 naming ``constraint.param``."""
    param = constraint.param
    check_ends_when_complete(param, ignore_eos=ignore_eos, min_tokens=min_tokens)
    if constraint.kind == "grammar":
        grammar = constraint.grammar or ""
        check_grammar_size(grammar, param)
        return grammar
    if constraint.kind == "json_object":
        return schema_grammar(ANY_OBJECT, param=param)
    # Problems inside the schema are named where the schema sits in the client's request.
    where = SCHEMA_PARAM if param == PARAM else param
    return schema_grammar(dict(constraint.schema or {}), param=where)


def check_ends_when_complete(param: str, *, ignore_eos: bool, min_tokens: int) -> None:
    """400 if ``ignore_eos`` or ``min_tokens`` is set: a constrained output ends when the
    JSON (or grammar) is complete."""
    if ignore_eos or min_tokens:
        raise InvalidRequestError(
            f"{param}: ignore_eos and min_tokens cannot be combined with structured "
            "output (the output ends when the JSON is complete)",
            param="ignore_eos" if ignore_eos else "min_tokens",
        )


class GrammarChecker(Protocol):
    """What a grammar check needs of a backend."""

    def check_grammar(self, grammar: str) -> None:
        """Raise InvalidRequestError if the backend cannot run ``grammar``."""


def check_backend_grammar(backend: GrammarChecker, grammar: str, param: str) -> None:
    """400 unless ``grammar`` is within the size caps and ``backend`` accepts it; the error
    names ``param``, the request field the grammar was built from."""
    check_grammar_size(grammar, param)
    try:
        backend.check_grammar(grammar)
    except InvalidRequestError as exc:
        raise named(exc, param) from None


def named(exc: InvalidRequestError, param: str) -> InvalidRequestError:
    """``exc`` as an error about ``param`` (its message prefixed with it, once)."""
    message = exc.message if exc.message.startswith(f"{param}:") else f"{param}: {exc.message}"
    return InvalidRequestError(message, param=param, code=exc.code)


def _schema(response_format: dict[str, Any] | None) -> dict[str, Any] | None:
    """The JSON Schema the output must follow; ``None`` for text."""
    if response_format is None:
        return None
    kind = response_format.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return ANY_OBJECT
    if kind != "json_schema":
        raise InvalidRequestError(
            f"response_format.type: {kind!r} is not one of 'text', 'json_object', 'json_schema'",
            param="response_format.type",
        )
    spec = response_format.get("json_schema")
    if not isinstance(spec, dict):
        raise InvalidRequestError(
            "response_format.json_schema: this field is required (an object with 'name' and "
            "'schema')",
            param="response_format.json_schema",
        )
    name = spec.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidRequestError(
            "response_format.json_schema.name: this field is required (a string)",
            param="response_format.json_schema.name",
        )
    if not isinstance(spec.get("strict", False), bool | None):
        raise InvalidRequestError(
            "response_format.json_schema.strict: must be a boolean",
            param="response_format.json_schema.strict",
        )
    schema = spec.get("schema")
    if not isinstance(schema, dict):
        problem = (
            "this field is required"
            if schema is None
            else f"must be an object, not {type(schema).__name__}"
        )
        raise InvalidRequestError(
            f"response_format.json_schema.schema: {problem} (a JSON Schema object; boolean "
            "schemas are not supported)",
            param="response_format.json_schema.schema",
        )
    return schema
