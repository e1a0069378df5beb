"""The bounded GGUF header check that runs before llama.cpp sees a model file."""

from __future__ import annotations

import struct
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inferflux_core.errors import ModelFileError
from inferflux_core.gguf_check import (
    ArrayInfo,
    architecture,
    chat_template,
    context_length,
    metadata_int,
    metadata_str,
    read_gguf_header,
)
from inferflux_core.sources import find_default_model_path

U32, U64 = struct.Struct("<I"), struct.Struct("<Q")
F32_TYPE = 0


def gguf_string(text: str | bytes) -> bytes:
    """A GGUF string: uint64 length, then the bytes."""
    data = text.encode() if isinstance(text, str) else text
    return U64.pack(len(data)) + data


def gguf_kv(key: str, value_type: int, payload: bytes) -> bytes:
    """One metadata pair with an already encoded value."""
    return gguf_string(key) + U32.pack(value_type) + payload


def gguf_file(
    *,
    magic: bytes = b"GGUF",
    version: int = 3,
    kvs: list[bytes] | None = None,
    tensors: list[tuple[str, list[int]]] | None = None,
    n_tensors: int | None = None,
    n_kv: int | None = None,
    data: bytes | None = None,
) -> bytes:
    """A small GGUF file with f32 tensors packed as llama.cpp expects (32-byte alignment)."""
    kvs = kvs if kvs is not None else [gguf_kv("general.architecture", 8, gguf_string("llama"))]
    tensors = tensors if tensors is not None else [("a", [8]), ("b", [4, 2])]
    infos, offset = b"", 0
    for name, dims in tensors:
        infos += gguf_string(name) + U32.pack(len(dims)) + b"".join(U64.pack(d) for d in dims)
        infos += U32.pack(F32_TYPE) + U64.pack(offset)
        size = 4
        for dim in dims:
            size *= dim
        offset += -(-size // 32) * 32
    head = magic + U32.pack(version)
    head += U64.pack(len(tensors) if n_tensors is None else n_tensors)
    head += U64.pack(len(kvs) if n_kv is None else n_kv)
    body = head + b"".join(kvs) + infos
    body += b"\0" * (-len(body) % 32)
    return body + (bytes(offset) if data is None else data)


def write(tmp_path: Path, content: bytes, name: str = "model.gguf") -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    return path


def assert_rejected(path: Path, *fragments: str) -> ModelFileError:
    """Reading ``path`` fails fast with a ModelFileError naming the file and the problem."""
    started = time.perf_counter()
    with pytest.raises(ModelFileError) as caught:
        read_gguf_header(path)
    assert time.perf_counter() - started < 0.5
    message = str(caught.value)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message
    return caught.value


# -- the real model --------------------------------------------------------------------------


def test_reads_the_real_model_header_quickly() -> None:
    path = find_default_model_path()
    started = time.perf_counter()
    header = read_gguf_header(path)
    elapsed = time.perf_counter() - started
    assert elapsed < 0.3
    assert header.version == 3
    assert header.n_tensors == 272
    assert architecture(header) == "llama"
    assert context_length(header) == 8192
    template = chat_template(header)
    assert template is not None and "<|im_start|>" in template
    assert metadata_str(header, "general.name")
    assert header.data_offset + header.data_size == path.stat().st_size


def test_long_arrays_are_kept_as_their_length_only() -> None:
    header = read_gguf_header(find_default_model_path())
    tokens = header.metadata["tokenizer.ggml.tokens"]
    assert tokens == ArrayInfo("string", 49152)
    assert header.metadata["general.languages"] == ["en"]


@pytest.mark.parametrize(
    ("size", "problem"),
    [(1024, "cannot fit in the 1000 bytes left"), (10 * 1024 * 1024, "the file size 10485760")],
)
def test_rejects_a_truncated_copy_of_the_real_model(
    tmp_path: Path, size: int, problem: str
) -> None:
    with find_default_model_path().open("rb") as source:
        path = write(tmp_path, source.read(size))
    assert_rejected(path, "not a valid GGUF file", problem)


# -- crafted files ---------------------------------------------------------------------------


def test_accepts_a_minimal_well_formed_file(tmp_path: Path) -> None:
    header = read_gguf_header(write(tmp_path, gguf_file()))
    assert header.n_tensors == 2
    assert header.tensor_names == ("a", "b")
    assert metadata_str(header, "general.architecture") == "llama"
    assert metadata_int(header, "general.architecture") is None


def test_rejects_bad_magic(tmp_path: Path) -> None:
    assert_rejected(write(tmp_path, gguf_file(magic=b"GGML")), "bad magic")


def test_rejects_an_empty_file(tmp_path: Path) -> None:
    assert_rejected(write(tmp_path, b""), "bad magic")


def test_rejects_an_unsupported_version(tmp_path: Path) -> None:
    assert_rejected(write(tmp_path, gguf_file(version=99)), "unsupported version 99")


def test_rejects_a_tensor_count_the_file_cannot_hold(tmp_path: Path) -> None:
    assert_rejected(write(tmp_path, gguf_file(n_tensors=2**62)), "tensor count 4611686018427387904")


def test_rejects_a_metadata_count_the_file_cannot_hold(tmp_path: Path) -> None:
    assert_rejected(write(tmp_path, gguf_file(n_kv=2**40)), "metadata count")


def test_rejects_a_huge_string_length(tmp_path: Path) -> None:
    kv = U64.pack(2**63 - 1) + b"general.name"
    path = write(tmp_path, gguf_file(kvs=[kv]))
    assert_rejected(path, "length 9223372036854775807 at offset 24 exceeds the file size")


def test_rejects_an_unknown_value_type(tmp_path: Path) -> None:
    path = write(tmp_path, gguf_file(kvs=[gguf_kv("general.name", 13, b"\0" * 8)]))
    assert_rejected(path, "unknown value type 13")


def test_rejects_a_huge_array_length(tmp_path: Path) -> None:
    kv = gguf_kv("tokenizer.ggml.scores", 9, U32.pack(6) + U64.pack(2**61))
    assert_rejected(write(tmp_path, gguf_file(kvs=[kv])), "array length 2305843009213693952")


def test_rejects_nested_arrays(tmp_path: Path) -> None:
    kv = gguf_kv("x", 9, U32.pack(9) + U64.pack(1) + U32.pack(0) + U64.pack(1) + b"\0")
    assert_rejected(write(tmp_path, gguf_file(kvs=[kv])), "nested array")


def test_rejects_duplicate_keys(tmp_path: Path) -> None:
    kv = gguf_kv("general.name", 8, gguf_string("x"))
    assert_rejected(write(tmp_path, gguf_file(kvs=[kv, kv])), "duplicate metadata key")


def test_rejects_a_bad_alignment(tmp_path: Path) -> None:
    kv = gguf_kv("general.alignment", 4, U32.pack(24))
    assert_rejected(write(tmp_path, gguf_file(kvs=[kv])), "not a power of 2")


def test_rejects_too_many_tensor_dimensions(tmp_path: Path) -> None:
    path = write(tmp_path, gguf_file(tensors=[("a", [1, 1, 1, 1, 1])]))
    assert_rejected(path, "5 dimensions")


def test_rejects_a_tensor_larger_than_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, gguf_file(tensors=[("a", [2**40])], data=b""))
    assert_rejected(path, "tensor 'a'")


def test_rejects_missing_tensor_data(tmp_path: Path) -> None:
    path = write(tmp_path, gguf_file(data=b"\0" * 40))
    assert_rejected(path, "truncated")


def test_rejects_a_missing_file(tmp_path: Path) -> None:
    assert_rejected(tmp_path / "absent.gguf", "cannot be read")


def test_rejects_a_directory(tmp_path: Path) -> None:
    assert_rejected(tmp_path, "not a regular file")


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    cut=st.integers(min_value=0, max_value=400),
    patches=st.lists(
        st.tuples(st.integers(min_value=0, max_value=400), st.integers(0, 255)), max_size=6
    ),
)
def test_damaged_files_only_ever_raise_model_file_error(
    tmp_path: Path, cut: int, patches: list[tuple[int, int]]
) -> None:
    content = bytearray(
        gguf_file(
            kvs=[
                gguf_kv("general.architecture", 8, gguf_string("llama")),
                gguf_kv("llama.context_length", 4, U32.pack(2048)),
                gguf_kv("tokenizer.ggml.scores", 9, U32.pack(6) + U64.pack(3) + b"\0" * 12),
            ]
        )
    )
    for offset, value in patches:
        if offset < len(content):
            content[offset] = value
    path = write(tmp_path, bytes(content[: len(content) - cut]), "fuzz.gguf")
    try:
        read_gguf_header(path)
    except ModelFileError as exc:
        assert str(path) in str(exc)
