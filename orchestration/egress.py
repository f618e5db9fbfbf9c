"""Outbound HTTP that tenants can aim (webhook URLs, integration base URLs, executors).

A tenant-supplied URL must never reach loopback, private, link-local (cloud metadata),
multicast, reserved or unspecified addresses. The check resolves the host once, refuses
the URL if ANY of its addresses is internal (a DNS answer mixing a public and a private
address is refused), and the request then connects to that resolved address (Host header
and TLS SNI keep the name), so a second, different DNS answer cannot slip through.
Redirects are never followed: a 3xx is the caller's failure to report.

Numeric forms (``2130706433``, ``0177.0.0.1``, ``0x7f.1``, ``::ffff:127.0.0.1``) are
resolved by the C library exactly as a connect would, then checked as addresses.

``BATON_ALLOWED_PRIVATE_HOSTS`` (comma-separated) lets the operator open exceptions:
an entry with a ``/`` is a CIDR matched against the resolved address; any other entry is
a host name matched literally (case-insensitive) against the URL's host, so allowing
``127.0.0.1`` does not allow ``localhost`` or ``2130706433``.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

from baton.settings import get_settings
from orchestration.errors import field_error

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class EgressRefused(Exception):
    """The URL may not be called: ``reason`` says why (safe to show the tenant)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Allowlist:
    hosts: frozenset[str]
    networks: tuple[IPNetwork, ...]

    @classmethod
    def parse(cls, raw: str | Iterable[str]) -> Allowlist:
        entries = raw.split(",") if isinstance(raw, str) else list(raw)
        hosts: set[str] = set()
        networks: list[IPNetwork] = []
        for entry in (e.strip() for e in entries):
            if not entry:
                continue
            if "/" in entry:
                networks.append(ipaddress.ip_network(entry, strict=False))
            else:
                hosts.add(entry.strip("[]").lower())
        return cls(frozenset(hosts), tuple(networks))

    def allows(self, host: str, address: IPAddress) -> bool:
        return host.lower() in self.hosts or any(address in net for net in self.networks)


@dataclass(frozen=True)
class Target:
    """A checked URL: where to connect (``address``) and what to call it (``host``)."""

    url: str
    scheme: str
    host: str
    port: int
    address: str


def _allowlist() -> Allowlist:
    return Allowlist.parse(get_settings().allowed_private_hosts)


def is_internal(address: IPAddress) -> bool:
    if isinstance(address, ipaddress.IPv6Address):
        mapped = address.ipv4_mapped or address.sixtofour
        if mapped is not None:
            return is_internal(mapped)
    return (
        address.is_loopback
        or address.is_private
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        or not address.is_global
    )


def _resolve(host: str, port: int) -> list[IPAddress]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise EgressRefused(f"host '{host}' does not resolve") from exc
    # Scope ids (fe80::1%eth0) are dropped: the address is what is checked.
    return [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]


def check_url(url: str, *, allowlist: Allowlist | None = None) -> Target:
    """Resolve once and refuse internal destinations; the Target pins the address."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise EgressRefused(f"not a valid URL: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise EgressRefused("only http and https URLs may be called")
    host = (parts.hostname or "").lower()
    if not host:
        raise EgressRefused("the URL has no host")
    if parts.username or parts.password:
        raise EgressRefused("credentials in the URL are not accepted")
    port = port or (443 if scheme == "https" else 80)
    allow = allowlist if allowlist is not None else _allowlist()
    addresses = _resolve(host, port)
    if not addresses:
        raise EgressRefused(f"host '{host}' does not resolve")
    for address in addresses:
        if is_internal(address) and not allow.allows(host, address):
            raise EgressRefused(
                f"'{host}' resolves to {address}, an internal address "
                "(loopback, private, link-local, metadata or reserved)"
            )
    return Target(url=url, scheme=scheme, host=host, port=port, address=str(addresses[0]))


def check_url_field(url: str, *, field_name: str) -> Target:
    """For registration: a refusal is a 422 on ``field_name``."""
    try:
        return check_url(url)
    except EgressRefused as exc:
        raise field_error(field_name, f"refused: {exc.reason}") from None


class PinnedTransport(httpx.HTTPTransport):
    """Checks every request's URL, then connects to the address the check resolved.

    The request keeps the name in ``Host`` and in TLS SNI (and certificate verification),
    so virtual hosts and HTTPS work while DNS is consulted exactly once per request.
    """

    def __init__(self, *, allowlist: Allowlist | None = None, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self._allowlist = allowlist

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        try:
            target = check_url(str(request.url), allowlist=self._allowlist)
        except EgressRefused as exc:
            raise httpx.ConnectError(f"egress refused: {exc.reason}", request=request) from exc
        if target.address != target.host:
            if "host" not in request.headers:
                request.headers["Host"] = request.url.netloc.decode("ascii")
            if target.scheme == "https":
                request.extensions = {**request.extensions, "sni_hostname": target.host}
            request.url = request.url.copy_with(host=target.address)
        return super().handle_request(request)


def pinned_client(*, timeout: float, allowlist: Allowlist | None = None) -> httpx.Client:
    """An httpx client for tenant-aimed calls: pinned, checked, never following redirects."""
    return httpx.Client(
        transport=PinnedTransport(allowlist=allowlist),
        timeout=timeout,
        follow_redirects=False,
        trust_env=False,  # an environment proxy would connect by name, not by address
    )
