"""Registry names, digests and URL checks: hostile input is refused before it touches a path
or a socket, and nothing is ever written outside the registry."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from inferflux_core.errors import InvalidRequestError, ModelFileError, PullError
from inferflux_core.registry import ModelRegistry, validate_model_name, validate_sha256
from inferflux_core.registry.names import derive_model_name
from inferflux_core.registry.netguard import check_url
from inferflux_core.registry.pull import parse_source, pull_model
from tests.pull_server import small_gguf

#: Names that must never become a folder (CVE-2024-37032 / CVE-2024-45436 and friends).
HOSTILE_NAMES = [
    "",
    ".",
    "..",
    "../escape",
    "../../etc/passwd",
    "a/../../b",
    "/etc/passwd",
    "/tmp/x",
    "a/b",
    "a\\b",
    "..\\..\\windows",
    "a\0b",
    "model\0.gguf",
    "%2e%2e",
    "%2e%2e%2fescape",
    "..%2fescape",
    "a%2fb",
    "%252e%252e",
    "\uff0e\uff0e",  # full-width dots
    "\uff0e\uff0e\uff0fescape",  # full-width dots and slash
    "a\uff0fb",
    "a\uff3cb",  # full-width backslash
    "\u2024\u2024",  # one-dot leaders
    "C:",
    "c:\\windows",
    "C:model",
    "\\\\server\\share",
    "con",
    "nul.gguf",
    "com1",
    "lpt9.txt",
    "a" * 65,
    "x" * 1000,
    ".hidden",
    "-rf",
    "name.",
    "name-",
    "a..b",
    "Model",
    "name with space",
    "tab\tname",
    "new\nline",
    "~",
    "~root",
    "$HOME",
    "a:b",
    "a*b",
    "a?b",
    "a|b",
    "a<b>",
    'a"b',
    "caf\u00e9",
    "\u202eevil",
    "a\u200bb",
    "\u0430dmin",  # Cyrillic a
]


def test_there_are_at_least_thirty_hostile_names() -> None:
    assert len(HOSTILE_NAMES) >= 30


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_hostile_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidRequestError) as refused:
        validate_model_name(name)
    assert refused.value.status == 400 and refused.value.param == "name"


@pytest.mark.parametrize("name", ["a", "smollm2", "qwen2.5-0.5b-instruct", "m_1", "x" * 64])
def test_ordinary_names_are_kept(name: str) -> None:
    assert validate_model_name(name) == name


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under ``root`` with its size and modification time."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for entry in dirnames + filenames:
            path = Path(dirpath, entry)
            info = path.lstat()
            found[str(path.relative_to(root))] = (info.st_size, info.st_mtime_ns)
    return found


def test_no_hostile_name_writes_anything_anywhere(tmp_path: Path) -> None:
    source = tmp_path / "source" / "model.gguf"
    source.parent.mkdir()
    source.write_bytes(small_gguf(4096))
    registry = ModelRegistry(tmp_path / "home" / "registry")
    pull_model(registry, str(source), name="existing")  # the registry exists, with a model
    (tmp_path / "home" / "outside.txt").write_text("not yours")
    before = _tree(tmp_path)
    for name in HOSTILE_NAMES:
        with pytest.raises(InvalidRequestError):
            pull_model(registry, str(source), name=name)
        with pytest.raises(InvalidRequestError):
            registry.remove(name)
        with pytest.raises(InvalidRequestError):
            registry.get(name)
        with pytest.raises(InvalidRequestError):
            registry.partial_paths(name)
    assert _tree(tmp_path) == before
    assert [m.name for m in registry.list()] == ["existing"]


@pytest.mark.parametrize(
    ("stem", "derived"),
    [
        ("SmolLM2-135M-Instruct.Q4_1", "smollm2-135m-instruct.q4_1"),
        ("..%2F..%2Fetc%2Fpasswd", "2f.-2fetc-2fpasswd"),
        ("../../etc/passwd", "etc-passwd"),
        ("\uff0e\uff0e\uff0fx", "x"),
        ("...", None),
    ],
)
def test_names_derived_from_sources_are_sanitised(stem: str, derived: str | None) -> None:
    assert derive_model_name(stem) == derived


def test_a_derived_name_from_a_hostile_url_stays_inside(tmp_path: Path) -> None:
    spec = parse_source("https://example.com/..%2F..%2Fevil.gguf")
    assert spec.default_name is not None
    assert ModelRegistry(tmp_path).model_dir(spec.default_name).parent == tmp_path


@pytest.mark.parametrize(
    "digest",
    ["", "abc", "g" * 64, "a" * 63, "a" * 65, "sha512:" + "a" * 64, "../" + "a" * 61, "a\0" * 32],
)
def test_invalid_digests_are_refused(digest: str) -> None:
    with pytest.raises(InvalidRequestError, match="sha256"):
        validate_sha256(digest)


def test_digests_are_normalised() -> None:
    digest = hashlib.sha256(b"x").hexdigest()
    assert validate_sha256(f"sha256:{digest.upper()}") == digest


def test_a_tampered_manifest_is_not_trusted(tmp_path: Path) -> None:
    source = tmp_path / "m.gguf"
    source.write_bytes(small_gguf(4096))
    registry = ModelRegistry(tmp_path / "registry")
    pull_model(registry, str(source), name="good")
    manifest = registry.model_dir("good") / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"good"', '"../evil"'))
    with pytest.raises(ModelFileError):
        registry.get("good")
    assert registry.list() == []


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("file:///etc/passwd", "scheme"),
        ("ftp://127.0.0.1/model.gguf", "scheme"),
        ("gopher://127.0.0.1/", "scheme"),
        ("http://169.254.169.254/latest/meta-data/", "metadata"),
        ("https://169.254.169.254/latest/meta-data/", "metadata"),
        ("https://169.254.10.10/model.gguf", "link-local"),
        ("https://[fe80::1]/model.gguf", "link-local"),
        ("https://[fd00:ec2::254]/latest", "metadata"),
        ("https://[::ffff:169.254.169.254]/latest", "metadata"),
        ("https://100.100.100.200/latest", "metadata"),
        ("https://metadata.google.internal/computeMetadata/v1/", "metadata"),
        ("https://0.0.0.0/model.gguf", "unspecified"),
        ("https://224.0.0.1/model.gguf", "multicast"),
        ("http://10.0.0.1/model.gguf", "loopback"),
        ("http://192.168.1.1/model.gguf", "loopback"),
        ("https://user:secret@127.0.0.1/model.gguf", "password"),
    ],
)
def test_urls_a_pull_must_not_reach_are_refused(url: str, reason: str) -> None:
    with pytest.raises(PullError, match=reason):
        check_url(url)


def test_loopback_http_and_https_ip_literals_pass() -> None:
    assert str(check_url("http://127.0.0.1:9/x").address) == "127.0.0.1"
    ipv6 = check_url("http://[::1]:9/x")
    assert str(ipv6.address) == "::1" and ipv6.pinned()[1] == {"Host": "[::1]:9"}
    checked = check_url("https://10.1.2.3:8443/m.gguf")
    target, headers, extensions = checked.pinned()
    assert str(target) == "https://10.1.2.3:8443/m.gguf"
    assert headers == {"Host": "10.1.2.3:8443"} and extensions == {"sni_hostname": "10.1.2.3"}


def test_a_named_host_is_pinned_to_its_checked_address() -> None:
    checked = check_url("http://localhost:9/m.gguf")
    assert checked.address.is_loopback
    target, headers, _ = checked.pinned()
    assert target.host == checked.address.compressed and headers["Host"] == "localhost:9"


@pytest.mark.parametrize(
    "source",
    [
        "hf:org/repo",
        "hf:../repo/file.gguf",
        "hf:org/../file.gguf",
        "hf:org/repo/../../x.gguf",
        "hf:org/repo/a%2fb.gguf",
        "pypi:../x",
        "pypi:",
        "s3://bucket/model.gguf",
        "x" * 3000,
        "a\0b",
    ],
)
def test_malformed_sources_are_refused(source: str) -> None:
    with pytest.raises(PullError):
        parse_source(source)


def test_hf_sources_point_at_the_configured_endpoint() -> None:
    spec = parse_source("hf:Org/Repo-1/sub/Model.Q4_K_M.gguf", hf_endpoint="http://127.0.0.1:9/")
    assert spec.location == "http://127.0.0.1:9/Org/Repo-1/resolve/main/sub/Model.Q4_K_M.gguf"
    assert spec.default_name == "model.q4_k_m"
