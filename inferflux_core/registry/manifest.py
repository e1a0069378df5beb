"""A registered model's ``manifest.json``: where it came from and what its GGUF header says."""

from __future__ import annotations

import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from inferflux_core.errors import InvalidRequestError
from inferflux_core.gguf_check import (
    GGUFHeader,
    architecture,
    chat_template,
    context_length,
    metadata_int,
    metadata_str,
)
from inferflux_core.gguf_format import FILE_TYPES
from inferflux_core.registry.names import validate_model_name, validate_sha256

#: The model file's name inside its registry folder (never taken from the source).
MODEL_FILE = "model.gguf"
MANIFEST_FILE = "manifest.json"


class Manifest(BaseModel):
    """What the registry knows of one pulled model (``manifest.json``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="the registry name: `registry:NAME` loads it")
    source: str = Field(description="the source it was pulled from, as given")
    file: str = Field(MODEL_FILE, description="the GGUF file in the model's folder")
    size: int = Field(ge=0, description="the file's size in bytes")
    sha256: str = Field(description="the file's SHA-256, lower-case hex")
    architecture: str | None = Field(None, description="`general.architecture`")
    quantization: str | None = Field(None, description="`general.file_type`, by name")
    context_length: int | None = Field(None, description="the training context length")
    license: str | None = Field(None, description="`general.license`")
    has_chat_template: bool = Field(description="`tokenizer.chat_template` is present")
    pulled_at: datetime.datetime = Field(description="when the pull finished (UTC)")

    @field_validator("name")
    @classmethod
    def _valid_name(cls, name: str) -> str:
        try:
            return validate_model_name(name)
        except InvalidRequestError as exc:
            raise ValueError(exc.message) from None

    @field_validator("sha256")
    @classmethod
    def _valid_digest(cls, digest: str) -> str:
        try:
            return validate_sha256(digest)
        except InvalidRequestError as exc:
            raise ValueError(exc.message) from None

    @field_validator("file")
    @classmethod
    def _fixed_file(cls, file: str) -> str:
        if file != MODEL_FILE:
            raise ValueError(f"must be {MODEL_FILE!r}")
        return file

    def to_dict(self) -> dict[str, Any]:
        """The manifest as JSON-ready values (``pulled_at`` as ISO 8601)."""
        return self.model_dump(mode="json")


def manifest_from_header(
    header: GGUFHeader, *, name: str, source: str, size: int, sha256: str
) -> Manifest:
    """The manifest of a checked GGUF file: identity from the pull, the rest from its header."""
    file_type = metadata_int(header, "general.file_type")
    quantization = None if file_type is None else FILE_TYPES.get(file_type, f"type {file_type}")
    return Manifest(
        name=name,
        source=source,
        size=size,
        sha256=sha256,
        architecture=architecture(header),
        quantization=quantization,
        context_length=context_length(header),
        license=metadata_str(header, "general.license"),
        has_chat_template=chat_template(header) is not None,
        pulled_at=datetime.datetime.now(datetime.UTC).replace(microsecond=0),
    )
