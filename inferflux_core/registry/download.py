"""Downloading one model file over HTTP(S) into the registry's ``.partial`` file, resumably.

Redirects are followed by hand, each target checked by :func:`~inferflux_core.registry.
netguard.check_url`, at most ``max_redirects`` of them; ``Authorization`` goes only to the
first URL's origin and is dropped for good once a redirect leaves it. A ``.partial`` file is
resumed with ``Range`` (and ``If-Range``, so a file that changed meanwhile starts over). The
body is read raw (``Accept-Encoding: identity``; another encoding is refused) and cut off with a
:class:`~inferflux_core.errors.PullError` as soon as it runs past its ``Content-Length`` or
``max_bytes``. Only a dropped connection or a cancel keeps the ``.partial`` for the next try;
any other failure deletes it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import httpx

from inferflux_core.errors import PullError
from inferflux_core.registry.netguard import CheckedURL, check_url

#: ``on_progress(completed_bytes, total_bytes_or_None)``, called from the pulling thread.
ProgressCallback = Callable[[int, int | None], None]
CHUNK = 1 << 20
PROGRESS_INTERVAL = 0.1
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


class PullCancelled(PullError):
    """The pull was cancelled (its client went away, or Ctrl-C); a ``.partial`` is kept."""

    code = "pull_cancelled"


@dataclass(frozen=True, slots=True)
class DownloadLimits:
    """Bounds on one download."""

    max_bytes: int
    max_redirects: int = 5
    timeout_seconds: float = 30.0


@dataclass(frozen=True, slots=True)
class Downloaded:
    """A finished download: its size and SHA-256, and whether it resumed an earlier one."""

    size: int
    sha256: str
    resumed_from: int


class _Progress:
    """Calls ``on_progress`` at the start, at most every :data:`PROGRESS_INTERVAL`, and at the
    end; checks ``cancel`` on every chunk."""

    def __init__(self, on_progress: ProgressCallback | None, cancel: threading.Event | None):
        self._on_progress = on_progress
        self._cancel = cancel
        self._last = 0.0

    def check_cancel(self) -> None:
        if self._cancel is not None and self._cancel.is_set():
            raise PullCancelled("the pull was cancelled")

    def report(self, completed: int, total: int | None, *, force: bool = False) -> None:
        self.check_cancel()
        now = time.monotonic()
        if self._on_progress is not None and (force or now - self._last >= PROGRESS_INTERVAL):
            self._last = now
            self._on_progress(completed, total)


def download(
    url: str,
    partial: Path,
    meta: Path,
    limits: DownloadLimits,
    *,
    authorization: str | None = None,
    on_progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
    verify: bool | ssl.SSLContext = True,
) -> Downloaded:
    """Fetch ``url`` into ``partial`` (resuming it if ``meta`` says it holds the start of this
    URL); the caller moves the finished file away. ``verify``: True (the system's CAs) or an
    SSL context."""
    progress = _Progress(on_progress, cancel)
    partial.parent.mkdir(parents=True, exist_ok=True)
    keep = False
    try:
        with httpx.Client(
            trust_env=False,
            follow_redirects=False,
            timeout=httpx.Timeout(limits.timeout_seconds),
            verify=verify,
        ) as client:
            result = _fetch(client, url, partial, meta, limits, authorization, progress)
        keep = True
        meta.unlink(missing_ok=True)
        return result
    except (PullCancelled, KeyboardInterrupt):
        keep = True
        raise
    except httpx.TransportError as exc:
        keep = True
        resume = "; pull again to resume it" if partial.exists() else ""
        detail = str(exc) or "connection lost"
        raise PullError(
            f"the download of {url} failed: {type(exc).__name__}: {detail}{resume}"
        ) from None
    finally:
        if not keep:
            partial.unlink(missing_ok=True)
            meta.unlink(missing_ok=True)


def _fetch(
    client: httpx.Client,
    url: str,
    partial: Path,
    meta: Path,
    limits: DownloadLimits,
    authorization: str | None,
    progress: _Progress,
) -> Downloaded:
    """One download (two requests if the server says a resume's range is unsatisfiable)."""
    offset, validator = _resumable(partial, meta, url)
    progress.check_cancel()
    while True:
        with _open(client, url, offset, validator, authorization, limits.max_redirects) as reply:
            if reply.status_code == 416 and offset:
                # The partial holds all there is, or is no use: start over, from nothing.
                partial.unlink(missing_ok=True)
                offset, validator = 0, None
                continue
            return _receive(reply, url, partial, meta, offset, limits, progress)


def _receive(
    response: httpx.Response,
    url: str,
    partial: Path,
    meta: Path,
    offset: int,
    limits: DownloadLimits,
    progress: _Progress,
) -> Downloaded:
    """Write ``response``'s body into ``partial`` at the offset it starts at."""
    start, total = _body_range(response, url, offset)
    if total is not None and total > limits.max_bytes:
        raise PullError(
            f"{url} is {total} bytes, more than registry.max_download_bytes ({limits.max_bytes})"
        )
    _write_meta(meta, url, response)
    hasher = hashlib.sha256()
    with partial.open("r+b" if start else "wb") as out:
        if start:
            _hash_prefix(out, start, hasher)
        out.truncate(start)
        out.seek(start)
        written = _stream_body(response, out, hasher, start, total, limits, url, progress)
    return Downloaded(size=written, sha256=hasher.hexdigest(), resumed_from=start)


def _resumable(partial: Path, meta: Path, url: str) -> tuple[int, str | None]:
    """The bytes already downloaded of ``url`` and its ``If-Range`` validator; a partial of
    another URL is discarded."""
    try:
        record = json.loads(meta.read_text(encoding="utf-8"))
        size = partial.stat().st_size
    except (OSError, ValueError):
        partial.unlink(missing_ok=True)
        return 0, None
    if not isinstance(record, dict) or record.get("url") != url:
        partial.unlink(missing_ok=True)
        return 0, None
    validator = record.get("validator")
    return size, validator if isinstance(validator, str) else None


def _write_meta(meta: Path, url: str, response: httpx.Response) -> None:
    """Record what the partial file is a download of, for a later resume."""
    etag = response.headers.get("etag")
    validator = etag if etag and not etag.startswith("W/") else None
    validator = validator or response.headers.get("last-modified")
    meta.write_text(json.dumps({"url": url, "validator": validator}), encoding="utf-8")


@contextlib.contextmanager
def _open(
    client: httpx.Client,
    url: str,
    offset: int,
    validator: str | None,
    authorization: str | None,
    max_redirects: int,
) -> Iterator[httpx.Response]:
    """The response for ``url`` after following at most ``max_redirects`` checked redirects."""
    current: str | httpx.URL = url
    first_origin: tuple[str, str, int | None] | None = None
    send_credentials = authorization is not None
    for _ in range(max_redirects + 1):
        checked = check_url(current)
        first_origin = first_origin or checked.origin
        if checked.origin != first_origin:
            send_credentials = False
        credentials = authorization if send_credentials else None
        request = _request(client, checked, offset, validator, credentials)
        response = client.send(request, stream=True)
        location = response.headers.get("location")
        if response.status_code in _REDIRECTS and location:
            response.close()
            current = checked.url.join(location)
            continue
        try:
            yield response
        finally:
            response.close()
        return
    raise PullError(f"{url} redirected more than {max_redirects} times")


def _request(
    client: httpx.Client,
    checked: CheckedURL,
    offset: int,
    validator: str | None,
    authorization: str | None,
) -> httpx.Request:
    target, headers, extensions = checked.pinned()
    headers.update({"Accept-Encoding": "identity", "User-Agent": "inferflux-pull"})
    if authorization is not None:
        headers["Authorization"] = authorization
    if offset:
        headers["Range"] = f"bytes={offset}-"
        if validator:
            headers["If-Range"] = validator
    return client.build_request("GET", target, headers=headers, extensions=extensions)


def _body_range(response: httpx.Response, url: str, offset: int) -> tuple[int, int | None]:
    """Where the body starts in the file, and the file's total size if known."""
    status = response.status_code
    encoding = response.headers.get("content-encoding", "identity").lower()
    if encoding not in ("identity", ""):
        raise PullError(f"{url} was sent with Content-Encoding {encoding!r}; only raw files")
    length = _int_header(response, "content-length")
    if status == 200:
        return 0, length
    if status == 206 and offset:
        unit, _, spec = response.headers.get("content-range", "").partition(" ")
        span, _, size = spec.partition("/")
        first, _, _last = span.partition("-")
        if unit == "bytes" and first.isdigit() and int(first) == offset:
            total = int(size) if size.isdigit() else None
            return offset, total
        raise PullError(f"{url} answered a resume with a range that does not fit")
    raise PullError(f"{url} answered HTTP {status}")


def _int_header(response: httpx.Response, name: str) -> int | None:
    value = response.headers.get(name)
    if value is None:
        return None
    if not value.isdigit():
        raise PullError(f"invalid {name} header {value[:40]!r}")
    return int(value)


def _hash_prefix(out: BinaryIO, size: int, hasher: Any) -> None:
    """Feed the first ``size`` bytes already in the file to ``hasher``."""
    out.seek(0)
    left = size
    while left:
        block = out.read(min(CHUNK, left))
        if not block:
            raise PullError("the partial download shrank while it was read")
        hasher.update(block)
        left -= len(block)


def _stream_body(
    response: httpx.Response,
    out: BinaryIO,
    hasher: Any,
    start: int,
    total: int | None,
    limits: DownloadLimits,
    url: str,
    progress: _Progress,
) -> int:
    """Copy the body to ``out`` until it ends or breaks a bound; return the file's size."""
    written = start
    progress.report(written, total, force=True)
    for block in response.iter_raw():  # as received: a cut loses nothing already read
        written += len(block)
        if total is not None and written > total:
            raise PullError(f"{url} sent more than the {total} bytes it announced; cut off")
        if written > limits.max_bytes:
            raise PullError(
                f"{url} sent more than registry.max_download_bytes ({limits.max_bytes}); cut off"
            )
        out.write(block)
        hasher.update(block)
        progress.report(written, total)
    if total is not None and written != total:
        raise PullError(f"{url} ended after {written} of {total} bytes")
    out.flush()
    progress.report(written, total, force=True)
    return written
