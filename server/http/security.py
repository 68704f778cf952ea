"""Who may connect: the Origin allow-list, the bearer token, and the real client address.

aiohttp does not check WebSocket origins itself; a browser page on any site could otherwise open
a socket to a server on the user's machine. Pure functions over header values.
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit

LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})


def _hostname(value: str) -> str:
    host = value.strip().lower()
    if host.startswith("["):
        return host[: host.index("]") + 1] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def origin_allowed(origin: str | None, host: str | None, allowed: Iterable[str]) -> bool:
    """No Origin (not a browser) is allowed; a browser page must come from a configured public
    origin (`*` allows any), from localhost, or from the very IP address and port it connects to.

    A page's own name is never trusted through `Host`: with DNS rebinding, an attacker's name
    resolves to this server and the browser sends `Host` and `Origin` that agree. An IP address
    cannot be rebound, so `Origin: http://192.168.1.20:8000` with that same `Host` is the demo
    page served by this server; a name must be listed in the allowed origins."""
    if origin is None:
        return True
    allowed = list(allowed)
    if "*" in allowed or origin.rstrip("/") in (a.rstrip("/") for a in allowed):
        return True
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return False
    origin_host = _hostname(parts.netloc)
    if origin_host in LOCAL_HOSTS or origin_host.strip("[]") in LOCAL_HOSTS:
        return True
    return (
        host is not None
        and _is_ip_literal(origin_host)
        and parts.netloc.lower() == host.strip().lower()
    )


def token_ok(expected: str | None, headers: Mapping[str, str], query: Mapping[str, str]) -> bool:
    if not expected:
        return True
    auth = headers.get("Authorization", "")
    given = auth[7:] if auth.startswith("Bearer ") else query.get("token", "")
    # Header values may carry any byte (aiohttp keeps undecodable ones as surrogates): compare
    # bytes as received, never raise on them.
    received = given.encode("utf-8", "surrogatepass")
    return hmac.compare_digest(received, expected.encode("utf-8", "surrogatepass"))


def _networks(trusted: Iterable[str]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    nets = []
    for item in trusted:
        with contextlib.suppress(ValueError):
            nets.append(ipaddress.ip_network(item.strip(), strict=False))
    return nets


def _is_trusted(address: str, nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address.strip("[]"))
    except ValueError:
        return False
    return any(ip in net for net in nets)


def client_address(peer: str | None, forwarded_for: str | None, trusted: Iterable[str]) -> str:
    """The first address, from the right, that is not one of our trusted proxies (addresses
    or networks such as 10.0.0.0/8)."""
    nets = _networks(trusted)
    address = peer or "?"
    if not nets or not _is_trusted(address, nets) or not forwarded_for:
        return address
    for hop in reversed([h.strip() for h in forwarded_for.split(",") if h.strip()]):
        if not _is_trusted(hop, nets):
            return hop
        address = hop
    return address
