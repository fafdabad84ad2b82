"""The client's IP address, believing X-Forwarded-For only as far as trusted proxies wrote it.

Each proxy appends the address it received the request from, so the header reads
``client, proxy1, proxy2`` and the last proxy is the TCP peer. Walking it from the right
and skipping trusted hops stops at the first address that a trusted proxy vouched for
but that is not itself trusted: everything further left was written by the client and
may be forged.

Per-address limits then count :func:`client_network`: one IPv6 subscriber usually holds
a whole /64 (and can pick any of its 2**64 addresses per request), so IPv6 clients are
grouped by network; IPv4 clients are counted per address unless told otherwise.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

UNKNOWN = "unknown"
"""The client of a request whose peer address is not known."""


def client_ip(peer: str | None, forwarded_for: str | None, trusted_proxies: list[str]) -> str:
    """The address to rate-limit a request by.

    `peer` is the TCP peer (``request.client.host``); `forwarded_for` the X-Forwarded-For
    header, several occurrences joined with commas; `trusted_proxies` IPs or CIDRs. A peer
    that is not a trusted proxy is the client, whatever the header says. An unknown peer
    yields :data:`UNKNOWN`; a peer that is not an IP (a test client's name) is returned
    as it is. A hop that a trusted proxy wrote but that is not an address yields the
    proxy that wrote it.
    """
    if not peer:
        return UNKNOWN
    peer_ip = _parse(peer)
    if peer_ip is None:
        return peer
    networks = _networks(tuple(trusted_proxies))
    if not forwarded_for or not _trusted(peer_ip, networks):
        return str(peer_ip)
    nearest = peer_ip
    for hop in reversed(forwarded_for.split(",")):
        hop_ip = _parse(hop)
        if hop_ip is None:
            if not hop.strip():
                continue
            return str(nearest)
        if not _trusted(hop_ip, networks):
            return str(hop_ip)
        nearest = hop_ip
    # Every hop is a trusted proxy: the farthest one is the best we know.
    return str(nearest)


def _parse(text: str) -> IPAddress | None:
    """An address from ``1.2.3.4``, ``1.2.3.4:80``, ``::1`` or ``[::1]:80``; else None."""
    text = text.strip()
    if text.startswith("["):
        text = text[1 : text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


@lru_cache(maxsize=16)
def _networks(trusted_proxies: tuple[str, ...]) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(item.strip(), strict=False) for item in trusted_proxies)


def _trusted(address: IPAddress, networks: tuple[IPNetwork, ...]) -> bool:
    return any(address in network for network in networks)


@lru_cache(maxsize=4096)
def client_network(address: str, ipv4_prefix: int = 32, ipv6_prefix: int = 64) -> str:
    """The group of addresses that per-address limits count as one client.

    ``2001:db8:0:1::7`` becomes ``2001:db8:0:1::/64`` (with the default prefixes); an
    IPv4 address stays itself at /32, or becomes its network (``203.0.113.0/24``) with a
    shorter prefix. Anything that is not an address (:data:`UNKNOWN`, a test client's
    name) is returned as it is.
    """
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    prefix = ipv4_prefix if ip.version == 4 else ipv6_prefix
    if prefix >= ip.max_prefixlen:
        return str(ip)
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))
