"""Which URLs a pull may fetch, checked for the first request and for every redirect.

- Schemes: ``https``; plain ``http`` only when every address of the host is a loopback one (a
  mirror or test server on this machine: nothing crosses a network unencrypted). ``file``,
  ``ftp`` and any other scheme are refused.
- No user name or password in the URL.
- The host is resolved once and every address checked: link-local (169.254.0.0/16,
  fe80::/10), cloud metadata (169.254.169.254, fd00:ec2::254, 100.100.100.200), unspecified
  and multicast addresses are refused, as are the metadata host names. IPv4-mapped IPv6
  addresses are checked as the IPv4 address they carry.
- The connection then goes to the checked address (the host name still in ``Host`` and in TLS's
  SNI and certificate check), so a second DNS answer cannot swap in another address.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass

import httpx

from inferflux_core.errors import PullError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

METADATA_HOSTS = frozenset(
    {"metadata.google.internal", "metadata.goog", "metadata", "instance-data", "metadata.azure"}
)
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200")
)


@dataclass(frozen=True, slots=True)
class CheckedURL:
    """A URL that passed the checks, and the address to connect to for it."""

    url: httpx.URL
    address: IPAddress

    @property
    def origin(self) -> tuple[str, str, int | None]:
        """Scheme, host and port: credentials are sent only while this stays the same."""
        return (self.url.scheme, self.url.host, self.url.port)

    def pinned(self) -> tuple[httpx.URL, dict[str, str], dict[str, str]]:
        """The URL to request (host replaced by the checked address), the ``Host`` header and
        the request extensions (TLS server name) that keep the original host's identity."""
        target = self.url.copy_with(host=self.address.compressed)
        host = f"[{self.url.host}]" if ":" in self.url.host else self.url.host
        host_header = host if self.url.port is None else f"{host}:{self.url.port}"
        extensions = {"sni_hostname": self.url.host} if self.url.scheme == "https" else {}
        return target, {"Host": host_header}, extensions


def check_url(url: str | httpx.URL) -> CheckedURL:
    """``url`` with the address to fetch it from, or a :class:`PullError` saying which rule
    it breaks."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise PullError(f"invalid URL {str(url)[:200]!r}: {exc}") from None
    scheme = parsed.scheme.lower()
    if scheme not in ("https", "http"):
        raise PullError(f"refused URL scheme {scheme or '(none)'!r}: only https:// is pulled")
    if parsed.userinfo:
        raise PullError("refused URL with a user name or password in it")
    host = parsed.host.lower().rstrip(".")
    if not host:
        raise PullError(f"refused URL without a host: {str(parsed)[:200]!r}")
    if host in METADATA_HOSTS:
        raise PullError(f"refused host {host!r}: a cloud metadata service")
    addresses = _resolve(host, parsed.port or (443 if scheme == "https" else 80))
    for address in addresses:
        _check_address(host, address)
    if scheme == "http" and not all(a.is_loopback for a in addresses):
        raise PullError(
            f"refused plain http:// to {host!r}: http is only pulled from a loopback address; "
            "use https://"
        )
    return CheckedURL(parsed, addresses[0])


def _resolve(host: str, port: int) -> list[IPAddress]:
    """Every address ``host`` names (an IP literal names itself)."""
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise PullError(f"cannot resolve host {host!r}: {exc}") from None
    addresses: list[IPAddress] = []
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise PullError(f"host {host!r} has no address")
    return addresses


def _check_address(host: str, address: IPAddress) -> None:
    """Refuse addresses a pull must never reach."""
    mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
    effective: IPAddress = mapped or address
    if effective in METADATA_ADDRESSES:
        reason = "a cloud metadata address"
    elif effective.is_link_local:
        reason = "a link-local address"
    elif effective.is_unspecified:
        reason = "the unspecified address"
    elif effective.is_multicast:
        reason = "a multicast address"
    else:
        return
    raise PullError(f"refused host {host!r}: {address} is {reason}")
