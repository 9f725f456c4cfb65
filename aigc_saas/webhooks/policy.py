"""Where a webhook may go: http(s), a real port, and an address outside every internal range.

The check resolves the host once and returns the exact address to connect to (`Target.ip`), so the delivery
connects where the check looked: no second lookup, no DNS-rebinding window. Every resolved address must pass.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.conf import settings

from aigc_saas.errors import InvalidInput

MAX_URL_LENGTH = 2000
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# Ranges a webhook never reaches. "private" ones are relaxed by AIGC_WEBHOOK_ALLOW_PRIVATE (development and
# tests with loopback receivers); the rest never carry a legitimate receiver and stay refused even then.
PRIVATE_RANGES: list[tuple[str, str]] = [
    ("127.0.0.0/8", "loopback"),
    ("::1/128", "loopback"),
    ("10.0.0.0/8", "private"),
    ("172.16.0.0/12", "private"),
    ("192.168.0.0/16", "private"),
    ("100.64.0.0/10", "carrier-grade NAT"),
    ("fc00::/7", "unique local"),
    ("fec0::/10", "site-local"),
]
ALWAYS_REFUSED: list[tuple[str, str]] = [
    ("0.0.0.0/8", "unspecified ('this network')"),
    ("::/128", "unspecified"),
    ("169.254.0.0/16", "link-local (cloud metadata)"),
    ("fe80::/10", "link-local"),
    ("224.0.0.0/4", "multicast"),
    ("ff00::/8", "multicast"),
    ("255.255.255.255/32", "broadcast"),
    ("240.0.0.0/4", "reserved"),
    ("192.0.0.0/24", "IETF protocol assignments"),
    ("192.0.2.0/24", "documentation"),
    ("198.51.100.0/24", "documentation"),
    ("203.0.113.0/24", "documentation"),
    ("198.18.0.0/15", "benchmarking"),
    ("2001:db8::/32", "documentation"),
    ("64:ff9b::/96", "NAT64 (embeds an IPv4 address)"),
    ("64:ff9b:1::/48", "local-use NAT64 (embeds an IPv4 address)"),
    ("2002::/16", "6to4 (embeds an IPv4 address)"),
    ("192.88.99.0/24", "6to4 relay anycast"),
    ("2001::/32", "Teredo (embeds an IPv4 address)"),
    ("::ffff:0:0/96", "IPv4-mapped"),
    ("::/96", "IPv4-compatible"),
    ("::ffff:0:0:0/96", "IPv4-translated"),
    ("100::/64", "discard-only"),
]
# Most specific first, so ::1 (loopback) is not taken for ::/96 (IPv4-compatible).
_RANGES = sorted(
    [(ipaddress.ip_network(n), label, True) for n, label in PRIVATE_RANGES]
    + [(ipaddress.ip_network(n), label, False) for n, label in ALWAYS_REFUSED],
    key=lambda entry: -entry[0].prefixlen,
)


class UrlRefused(InvalidInput):
    """The URL is refused for good: at submission a 400, at delivery a permanent failure."""

    def __init__(self, message: str, code: str = "invalid_webhook_url") -> None:
        full = f"`webhook_url`: {message}"
        super().__init__(full, code=code, fields=[{"field": "webhook_url", "code": code, "message": full}])


class ResolveFailed(Exception):
    """The host did not resolve; `transient` when the resolver said to try again (EAI_AGAIN and the like)."""

    def __init__(self, message: str, *, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


@dataclass(frozen=True)
class Target:
    scheme: str
    hostname: str  # for the Host header and TLS SNI / certificate check
    port: int
    ip: str  # the checked address the connection goes to
    path: str  # path and query

    @property
    def host_header(self) -> str:
        host = f"[{self.hostname}]" if ":" in self.hostname else self.hostname
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"


def address_refusal(address: Address, *, allow_private: bool) -> str | None:
    """Why `address` is refused (a range name), or None when a webhook may go there."""
    for network, label, private in _RANGES:
        if address.version == network.version and address in network:
            return None if (private and allow_private) else label
    if not address.is_global:  # anything the registries do not call global, named or not above
        return "not globally routable"
    return None


def split_url(url: str) -> tuple[str, str, int, str]:
    """(scheme, hostname, port, path) of an http(s) URL, or `UrlRefused` naming what is wrong."""
    if not isinstance(url, str) or len(url) > MAX_URL_LENGTH:
        raise UrlRefused(f"must be an http(s) URL of at most {MAX_URL_LENGTH} characters")
    if any(ch in url for ch in "\x00\r\n\t ") or not url.isprintable():
        raise UrlRefused("must not contain whitespace or control characters")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UrlRefused(f"must be an http(s) URL, got {url[:200]!r}")
    if parts.username is not None or parts.password is not None:
        raise UrlRefused("must not carry credentials (user:password@); use the signature header")
    try:
        port = parts.port
    except ValueError:
        raise UrlRefused(
            f"the port in {parts.netloc[:200]!r} is not a number from 1 to 65535", "invalid_webhook_port"
        ) from None
    if port == 0:
        raise UrlRefused("port 0 is not a port a receiver can listen on", "invalid_webhook_port")
    port = port or (443 if parts.scheme == "https" else 80)
    path = parts.path or "/"
    if parts.query:
        path += f"?{parts.query}"
    return parts.scheme, parts.hostname, port, path


def resolve(hostname: str, port: int) -> list[str]:
    """Every address the host resolves to (one lookup)."""
    try:
        ascii_host = hostname.encode("idna").decode("ascii")
    except UnicodeError:
        raise UrlRefused(f"host {hostname[:200]!r} is not a valid host name") from None
    try:
        infos = socket.getaddrinfo(ascii_host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        transient = exc.errno in (socket.EAI_AGAIN, getattr(socket, "EAI_SYSTEM", -11), socket.EAI_FAIL)
        raise ResolveFailed(f"host {hostname!r} does not resolve ({exc.strerror})", transient=transient) from None
    except (UnicodeError, ValueError):
        raise UrlRefused(f"host {hostname[:200]!r} is not a valid host name") from None
    return list(dict.fromkeys(str(info[4][0]).split("%")[0] for info in infos))


def check_target(url: str) -> Target:
    """Resolve once, check every address, and return where to connect. `UrlRefused` or `ResolveFailed`."""
    scheme, hostname, port, path = split_url(url)
    addresses = resolve(hostname, port)
    if not addresses:
        raise ResolveFailed(f"host {hostname!r} has no address", transient=True)
    allow_private = settings.AIGC_WEBHOOK_ALLOW_PRIVATE
    for text in addresses:
        reason = address_refusal(ipaddress.ip_address(text), allow_private=allow_private)
        if reason:
            hint = "; set AIGC_WEBHOOK_ALLOW_PRIVATE to allow it" if any(reason == n for _, n in PRIVATE_RANGES) else ""
            raise UrlRefused(f"{hostname!r} resolves to {text}, a {reason} address, which webhooks never reach{hint}")
    return Target(scheme=scheme, hostname=hostname, port=port, ip=addresses[0], path=path)


def check_webhook_url(url: str) -> str:
    """At submission: the URL back when a webhook may go there, else a 400 naming why (codes
    `invalid_webhook_url`, `invalid_webhook_port`)."""
    if not url:
        return ""
    try:
        check_target(url)
    except ResolveFailed as exc:
        raise UrlRefused(str(exc)) from None
    return url
