"""Which addresses a fetch may connect to: public ones, unless the host is allowed.

A catalog is untrusted: an image URL such as ``http://169.254.169.254/latest/meta-data`` or
``http://localhost:5432/`` would make the fetcher a proxy into the network it runs in (SSRF).
The host is resolved once here, *every* address it resolves to must be public, and the
connection then goes to one of those checked addresses (never a second lookup, which a
rebinding DNS server could answer differently).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Collection

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class AddressRefused(ValueError):
    """The host resolves to an address the policy refuses, or does not resolve."""


def _is_public(ip: IPAddress) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return _is_public(ip.ipv4_mapped)
    return not (
        ip.is_loopback
        or ip.is_private
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or not ip.is_global
    )


def _norm(host: str) -> str:
    return host.strip("[]").lower().rstrip(".")


def _split_entry(entry: str) -> tuple[str, int | None]:
    """``host`` -> (host, None: every port); ``host:port`` / ``[v6]:port`` -> (host, port).
    A bare IPv6 address (more than one ":") is a host without a port."""
    text = entry.strip()
    if text.startswith("["):
        addr, _, rest = text[1:].partition("]")
        port = rest.removeprefix(":")
        if not port:
            return _norm(addr), None
        # A port that is not ASCII digits matches no port (as unbracketed), never all of them.
        return _norm(addr), int(port) if port.isascii() and port.isdigit() else -1
    if text.count(":") == 1:
        name, _, port = text.partition(":")
        return _norm(name), int(
            port
        ) if port.isascii() and port.isdigit() else -1  # -1: matches no port
    return _norm(text), None


def host_allowed(host: str, allow_hosts: Collection[str], port: int | None = None) -> bool:
    """``host`` (on ``port``) is in the allow-list: a ``host`` entry allows all its ports,
    a ``host:port`` entry that port only."""
    wanted = _norm(host)
    for entry in allow_hosts:
        name, only = _split_entry(entry)
        if name == wanted and (only is None or only == port):
            return True
    return False


def resolve_checked(host: str, port: int, allow_hosts: Collection[str]) -> list[str]:
    """The addresses of ``host`` to connect to; ``AddressRefused`` if any is not public
    (and the host is not in ``allow_hosts``) or the name does not resolve."""
    bare = host.strip("[]")
    try:
        infos = socket.getaddrinfo(bare, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise AddressRefused(f"host {host!r} does not resolve ({exc})") from None
    addresses: list[str] = []
    for *_, sockaddr in infos:
        addr = str(sockaddr[0]).split("%", 1)[0]
        if addr not in addresses:
            addresses.append(addr)
    if not addresses:
        raise AddressRefused(f"host {host!r} does not resolve")
    if host_allowed(host, allow_hosts, port):
        return addresses
    for addr in addresses:
        if not _is_public(ipaddress.ip_address(addr)):
            raise AddressRefused(
                f"host {host!r} resolves to the non-public address {addr} "
                "(loopback, private or link-local); add the host to "
                "SHOTLINE_SOURCE_ALLOW_HOSTS to allow it"
            )
    return addresses
