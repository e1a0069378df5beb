"""Validating bodies against OpenAI's OpenAPI document (``shared/reference/openai-openapi``).

The document is large (3 MB of YAML, about 2 s to load), so a test module loads it once
(:func:`load_spec`) and asks for validators by schema name; ``$ref``s resolve inside it.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

_SPEC = "shared/reference/openai-openapi/openapi.yaml"
#: In the checkout, or beside it (``../shared``, where the issues point).
_CANDIDATES = (
    Path(__file__).resolve().parents[2] / _SPEC,
    Path(__file__).resolve().parents[3] / _SPEC,
)
_BASE = "urn:openai-openapi"


class OpenAISpec:
    """Validators for the document's ``components.schemas``."""

    def __init__(self, document: dict[str, Any]) -> None:
        resource = Resource.from_contents(document, default_specification=DRAFT202012)
        self._registry: Registry[Any] = Registry().with_resource(_BASE, resource)
        self.schemas: dict[str, Any] = document["components"]["schemas"]

    @cache  # noqa: B019 - one spec object per module, kept for its life
    def validator(self, name: str) -> jsonschema.protocols.Validator:
        """A validator of ``#/components/schemas/{name}``."""
        assert name in self.schemas, name
        schema = {"$ref": f"{_BASE}#/components/schemas/{name}"}
        return jsonschema.Draft202012Validator(schema, registry=self._registry)

    def validate(self, name: str, body: Any) -> None:
        """Raise ``jsonschema.ValidationError`` (its best match) unless ``body`` is a ``name``."""
        error = jsonschema.exceptions.best_match(self.validator(name).iter_errors(body))
        if error is not None:
            raise error

    def validate_event(self, union: str, event: dict[str, Any]) -> None:
        """Validate a streamed ``event`` against the member of ``union`` (an ``anyOf`` of
        event schemas, ``ResponseStreamEvent``) whose ``type`` it names."""
        for member in self.schemas[union]["anyOf"]:
            name = member["$ref"].rsplit("/", 1)[1]
            kinds = self.schemas[name].get("properties", {}).get("type", {}).get("enum", [])
            if event.get("type") in kinds:
                self.validate(name, event)
                return
        raise AssertionError(f"{event.get('type')!r} is no member of {union}")


def load_spec() -> OpenAISpec:
    """The spec; a failure naming where it was looked for if it is in neither place."""
    for path in _CANDIDATES:
        if path.is_file():
            loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
            with path.open() as stream:
                return OpenAISpec(yaml.load(stream, Loader=loader))
    pytest.fail(f"OpenAI's OpenAPI document is not at {', '.join(map(str, _CANDIDATES))}")
