"""A bounded reader for GGUF headers, run before llama.cpp ever opens a model file.

llama.cpp's C parser has had overflow bugs on crafted files, so a file must pass this check
first. It reads the header, the key-value metadata and the tensor-info section with bounded
reads only: every length is compared with what is left of the file before anything is read or
allocated, so a hostile length is reported instead of trusted. Tensor data is never read; the
check ends by proving that every tensor's bytes lie inside the file, as llama.cpp lays them out.
"""

from __future__ import annotations

import os
import stat
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from inferflux_core.errors import ModelFileError
from inferflux_core.gguf_format import (
    ARRAY_TYPE,
    DEFAULT_ALIGNMENT,
    GGML_TYPES,
    INT64_MAX,
    MAGIC,
    MAX_DIMS,
    MAX_LAYERS,
    MAX_TENSOR_NAME,
    MIN_KV_BYTES,
    MIN_TENSOR_INFO_BYTES,
    PER_LAYER_KEY_SUFFIXES,
    SCALAR_FORMATS,
    SMALL_ARRAY,
    STRING_TYPE,
    SUPPORTED_VERSIONS,
    TYPE_NAMES,
)

Scalar = int | float | bool | str

_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class ArrayInfo:
    """A metadata array too long to keep: its element type and length."""

    item_type: str
    length: int


MetadataValue = Scalar | list[Scalar] | ArrayInfo


@dataclass(frozen=True, slots=True)
class GGUFHeader:
    """What the header of a valid GGUF file says.

    ``metadata`` holds scalars, strings and arrays shorter than :data:`SMALL_ARRAY` items, and
    per-layer numeric arrays (:data:`PER_LAYER_KEY_SUFFIXES`) of up to :data:`MAX_LAYERS`;
    longer arrays (the tokenizer's vocabulary) appear as :class:`ArrayInfo`.
    """

    path: Path
    version: int
    n_tensors: int
    metadata: dict[str, MetadataValue]
    alignment: int = DEFAULT_ALIGNMENT
    data_offset: int = 0
    data_size: int = 0
    tensor_names: tuple[str, ...] = field(default=(), repr=False)


def read_gguf_header(path: str | os.PathLike[str]) -> GGUFHeader:
    """Validate ``path`` as a GGUF file and return its header; never reads tensor data.

    Raises :class:`~inferflux_core.errors.ModelFileError` naming the file and the problem when
    the file is missing, not a regular file, or not a well-formed GGUF file.
    """
    path = Path(path)
    try:
        info = path.stat()
    except OSError as exc:
        raise ModelFileError(f"model file {path} cannot be read: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise ModelFileError(f"model file {path} is not a regular file")
    try:
        with path.open("rb") as handle:
            return _HeaderParser(path, handle, info.st_size).parse()
    except OSError as exc:
        raise ModelFileError(f"model file {path} cannot be read: {exc.strerror}") from None


def metadata_str(header: GGUFHeader, key: str) -> str | None:
    """The string value of ``key``, or None when it is absent or not a string."""
    value = header.metadata.get(key)
    return value if isinstance(value, str) else None


def metadata_int(header: GGUFHeader, key: str) -> int | None:
    """The integer value of ``key``, or None when it is absent or not an integer."""
    value = header.metadata.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value


#: The sampling settings a model file recommends, as llama.cpp reads them
#: (``general.sampling.*``, llama-arch.cpp): request field -> GGUF key.
SAMPLING_METADATA_KEYS = {
    "temperature": "general.sampling.temp",
    "top_p": "general.sampling.top_p",
    "top_k": "general.sampling.top_k",
    "min_p": "general.sampling.min_p",
    "repeat_penalty": "general.sampling.penalty_repeat",
}


def sampling_metadata(header: GGUFHeader) -> dict[str, str]:
    """The file's numeric ``general.sampling.*`` values that inferflux uses, as text
    (``ModelInfo.metadata`` holds strings); the engine bounds them before use."""
    found = {}
    for key in SAMPLING_METADATA_KEYS.values():
        value = header.metadata.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            found[key] = repr(value)
    return found


def architecture(header: GGUFHeader) -> str | None:
    """``general.architecture``, e.g. ``llama``."""
    return metadata_str(header, "general.architecture")


def context_length(header: GGUFHeader) -> int | None:
    """The training context length, ``<architecture>.context_length``."""
    arch = architecture(header)
    return metadata_int(header, f"{arch}.context_length") if arch else None


def chat_template(header: GGUFHeader) -> str | None:
    """The default chat template, ``tokenizer.chat_template``."""
    return metadata_str(header, "tokenizer.chat_template")


class _HeaderParser:
    """Walks a GGUF file front to back through a window buffer, checking every length."""

    def __init__(self, path: Path, handle: BinaryIO, size: int) -> None:
        self.path = path
        self.handle = handle
        self.size = size
        self.pos = 0
        self._buf = b""
        self._buf_start = 0

    def fail(self, problem: str) -> ModelFileError:
        """The error for ``problem``, naming the file."""
        return ModelFileError(f"{self.path} is not a valid GGUF file: {problem}")

    # -- bounded reads ---------------------------------------------------------------------

    def _window(self, n: int, what: str) -> int:
        """Make ``n`` bytes at ``pos`` available; return their index into the buffer."""
        if n > self.size - self.pos:
            raise self.fail(
                f"{what} of {n} bytes at offset {self.pos} exceeds the file size {self.size}"
            )
        start = self.pos - self._buf_start
        if start < 0 or start + n > len(self._buf):
            self.handle.seek(self.pos)
            self._buf = self.handle.read(max(n, _CHUNK))
            self._buf_start = self.pos
            start = 0
            if len(self._buf) < n:
                raise self.fail(f"file ended while reading {what} at offset {self.pos}")
        return start

    def unpack(self, fmt: struct.Struct, what: str) -> Any:
        """Read one fixed-size value."""
        start = self._window(fmt.size, what)
        self.pos += fmt.size
        return fmt.unpack_from(self._buf, start)[0]

    def read_bytes(self, n: int, what: str) -> bytes:
        """Read ``n`` bytes, after checking that the file holds them."""
        start = self._window(n, what)
        self.pos += n
        return self._buf[start : start + n]

    def skip(self, n: int, what: str) -> None:
        """Move past ``n`` bytes without reading them."""
        if n > self.size - self.pos:
            raise self.fail(
                f"{what} of {n} bytes at offset {self.pos} exceeds the file size {self.size}"
            )
        self.pos += n

    def read_string(self, what: str) -> str:
        """Read a length-prefixed string."""
        offset = self.pos
        length = self.unpack(_U64, f"{what} length")
        if length > self.size - self.pos:
            raise self.fail(
                f"{what} length {length} at offset {offset} exceeds the file size {self.size}"
            )
        return self.read_bytes(length, what).decode("utf-8", errors="replace")

    def skip_string(self, what: str) -> None:
        """Move past a length-prefixed string, checking its length."""
        offset = self.pos
        length = self.unpack(_U64, f"{what} length")
        if length > self.size - self.pos:
            raise self.fail(
                f"{what} length {length} at offset {offset} exceeds the file size {self.size}"
            )
        self.pos += length

    # -- sections --------------------------------------------------------------------------

    def parse(self) -> GGUFHeader:
        """Check the whole header and return what it says."""
        magic = self.read_bytes(4, "magic") if self.size >= 4 else b""
        if magic != MAGIC:
            raise self.fail(f"bad magic {magic!r} (expected {MAGIC!r})")
        version = self.unpack(_U32, "version")
        if version not in SUPPORTED_VERSIONS:
            raise self.fail(f"unsupported version {version} (supported: 2, 3)")
        n_tensors = self.unpack(_U64, "tensor count")
        n_kv = self.unpack(_U64, "metadata count")
        room = self.size - self.pos
        if n_tensors > room // MIN_TENSOR_INFO_BYTES:
            raise self.fail(
                f"tensor count {n_tensors} cannot fit in the {room} bytes left of the file"
            )
        if n_kv > (room - n_tensors * MIN_TENSOR_INFO_BYTES) // MIN_KV_BYTES:
            raise self.fail(
                f"metadata count {n_kv} cannot fit in the {room} bytes left of the file"
            )
        metadata = self.read_metadata(n_kv)
        alignment = self.read_alignment(metadata)
        names, data_size = self.read_tensor_infos(n_tensors, alignment)
        data_offset = self.pos
        if n_tensors:
            data_offset = -(-self.pos // alignment) * alignment
        if data_offset + data_size > self.size:
            raise self.fail(
                f"tensor data ends at offset {data_offset + data_size}, "
                f"beyond the file size {self.size} (truncated file?)"
            )
        return GGUFHeader(
            path=self.path,
            version=version,
            n_tensors=n_tensors,
            metadata=metadata,
            alignment=alignment,
            data_offset=data_offset,
            data_size=data_size,
            tensor_names=names,
        )

    def read_metadata(self, n_kv: int) -> dict[str, MetadataValue]:
        """Read ``n_kv`` key-value pairs; keys must be non-empty and unique."""
        metadata: dict[str, MetadataValue] = {}
        for index in range(n_kv):
            offset = self.pos
            key = self.read_string(f"metadata key {index}")
            if not key:
                raise self.fail(f"metadata key {index} at offset {offset} is empty")
            if key in metadata:
                raise self.fail(f"duplicate metadata key {key!r} at offset {offset}")
            value_type = self.unpack(_U32, f"type of {key!r}")
            metadata[key] = self.read_value(key, value_type)
        return metadata

    def read_value(self, key: str, value_type: int) -> MetadataValue:
        """Read one value of ``value_type``."""
        if value_type == STRING_TYPE:
            return self.read_string(f"value of {key!r}")
        if value_type == ARRAY_TYPE:
            return self.read_array(key)
        fmt = SCALAR_FORMATS.get(value_type)
        if fmt is None:
            raise self.fail(f"unknown value type {value_type} for key {key!r} at offset {self.pos}")
        value: Scalar = self.unpack(fmt, f"value of {key!r}")
        return value

    def read_array(self, key: str) -> list[Scalar] | ArrayInfo:
        """Read an array: small ones are returned, long ones only checked and measured.

        Nested arrays are rejected, as llama.cpp's parser rejects them.
        """
        offset = self.pos
        item_type = self.unpack(_U32, f"array type of {key!r}")
        length = self.unpack(_U64, f"array length of {key!r}")
        if item_type == ARRAY_TYPE:
            raise self.fail(f"nested array in key {key!r} at offset {offset} is not supported")
        if item_type == STRING_TYPE:
            # each string takes at least its 8-byte length
            if length > (self.size - self.pos) // 8:
                raise self.fail(
                    f"array length {length} of {key!r} at offset {offset} exceeds "
                    f"the file size {self.size}"
                )
            if length < SMALL_ARRAY:
                return [self.read_string(f"item {i} of {key!r}") for i in range(length)]
            for i in range(length):
                self.skip_string(f"item {i} of {key!r}")
            return ArrayInfo("string", length)
        item = SCALAR_FORMATS.get(item_type)
        if item is None:
            raise self.fail(
                f"unknown array item type {item_type} for key {key!r} at offset {offset}"
            )
        if length > (self.size - self.pos) // item.size:
            raise self.fail(
                f"array length {length} of {key!r} at offset {offset} exceeds "
                f"the file size {self.size}"
            )
        if length < SMALL_ARRAY or (key.endswith(PER_LAYER_KEY_SUFFIXES) and length <= MAX_LAYERS):
            raw = self.read_bytes(length * item.size, f"items of {key!r}")
            return [value[0] for value in item.iter_unpack(raw)]
        self.skip(length * item.size, f"items of {key!r}")
        return ArrayInfo(TYPE_NAMES[item_type], length)

    def read_alignment(self, metadata: dict[str, MetadataValue]) -> int:
        """``general.alignment``: a uint32 power of two, 32 when absent."""
        if "general.alignment" not in metadata:
            return DEFAULT_ALIGNMENT
        value = metadata["general.alignment"]
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(f"general.alignment must be an integer, not {value!r}")
        if value <= 0 or value & (value - 1) or value > 2**31:
            raise self.fail(f"general.alignment {value} is not a power of 2")
        return value

    def read_tensor_infos(self, n_tensors: int, alignment: int) -> tuple[tuple[str, ...], int]:
        """Check every tensor info; return the names and the size of the data section.

        llama.cpp packs tensors back to back, each padded to ``alignment``, so each offset must
        equal the running total; the total is the data section's size.
        """
        names: list[str] = []
        seen: set[str] = set()
        expected_offset = 0
        for index in range(n_tensors):
            start = self.pos
            name = self.read_string(f"tensor name {index}")
            if len(name.encode("utf-8")) > MAX_TENSOR_NAME:
                raise self.fail(f"tensor name {index} at offset {start} is too long ({name!r})")
            if name in seen:
                raise self.fail(f"duplicate tensor name {name!r} at offset {start}")
            seen.add(name)
            nbytes = self.read_tensor_shape(name)
            offset = self.unpack(_U64, f"offset of tensor {name!r}")
            if offset != expected_offset:
                raise self.fail(
                    f"tensor {name!r} has data offset {offset}, expected {expected_offset}"
                )
            expected_offset += -(-nbytes // alignment) * alignment
            if expected_offset > self.size:
                raise self.fail(
                    f"tensor {name!r} ({nbytes} bytes at data offset {offset}) exceeds "
                    f"the file size {self.size}"
                )
            names.append(name)
        return tuple(names), expected_offset

    def read_tensor_shape(self, name: str) -> int:
        """Read a tensor's dimensions and type; return its size in bytes."""
        n_dims = self.unpack(_U32, f"dimension count of tensor {name!r}")
        if n_dims > MAX_DIMS:
            raise self.fail(f"tensor {name!r} has {n_dims} dimensions (at most {MAX_DIMS})")
        n_elements = 1
        dims = []
        for _ in range(n_dims):
            dim = self.unpack(_U64, f"dimension of tensor {name!r}")
            if dim > INT64_MAX:
                raise self.fail(f"tensor {name!r} has a negative dimension")
            dims.append(dim)
            n_elements *= dim
            if n_elements > INT64_MAX:
                raise self.fail(f"tensor {name!r} with shape {dims} has too many elements")
        type_id = self.unpack(_U32, f"type of tensor {name!r}")
        traits = GGML_TYPES.get(type_id)
        if traits is None:
            raise self.fail(f"tensor {name!r} has unknown ggml type {type_id}")
        block, block_bytes = traits
        row = dims[0] if dims else 1
        if row % block:
            raise self.fail(
                f"tensor {name!r} has {row} elements per row, "
                f"not a multiple of its block size {block}"
            )
        nbytes = n_elements // block * block_bytes
        if nbytes > self.size:
            raise self.fail(
                f"tensor {name!r} with shape {dims} needs {nbytes} bytes, "
                f"more than the file size {self.size}"
            )
        return nbytes
