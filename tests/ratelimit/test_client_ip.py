"""Client IP resolution: X-Forwarded-For is believed only as far as trusted proxies wrote it."""

from __future__ import annotations

import pytest

from mlgate.ratelimit import client_ip, client_network

PROXIES = ["10.0.0.0/8", "192.168.1.1", "2001:db8::/32"]


@pytest.mark.parametrize(
    ("peer", "forwarded_for", "expected"),
    [
        # No proxy in front: the peer is the client, whatever it claims.
        ("203.0.113.7", None, "203.0.113.7"),
        ("203.0.113.7", "1.1.1.1", "203.0.113.7"),
        ("203.0.113.7", "10.0.0.1", "203.0.113.7"),
        # One trusted proxy (an exact IP or inside a CIDR): the address it appended.
        ("192.168.1.1", "198.51.100.4", "198.51.100.4"),
        ("10.1.2.3", "198.51.100.4", "198.51.100.4"),
        # Forged entries left of the real client are ignored.
        ("10.1.2.3", "6.6.6.6, 198.51.100.4", "198.51.100.4"),
        ("10.1.2.3", "10.9.9.9, 198.51.100.4", "198.51.100.4"),
        # A chain of trusted proxies is skipped right to left.
        ("10.1.2.3", "198.51.100.4, 10.0.0.9, 192.168.1.1", "198.51.100.4"),
        # Every hop trusted: the farthest one.
        ("10.1.2.3", "10.0.0.8, 10.0.0.9", "10.0.0.8"),
        # A trusted proxy without a header: the proxy itself.
        ("10.1.2.3", None, "10.1.2.3"),
        ("10.1.2.3", "", "10.1.2.3"),
        # Ports and brackets are dropped; blanks between commas skipped.
        ("10.1.2.3", "198.51.100.4:5555", "198.51.100.4"),
        ("10.1.2.3", "[2001:db9::1]:443", "2001:db9::1"),
        ("10.1.2.3", "198.51.100.4, ,", "198.51.100.4"),
        # IPv6: CIDR trust, and IPv4-mapped peers read as IPv4.
        ("2001:db8::5", "2001:db9::1", "2001:db9::1"),
        ("::ffff:10.1.2.3", "198.51.100.4", "198.51.100.4"),
        ("::ffff:203.0.113.7", "198.51.100.4", "203.0.113.7"),
        # Garbage written by a trusted proxy: the proxy that wrote it.
        ("10.1.2.3", "unknown", "10.1.2.3"),
        ("10.1.2.3", "198.51.100.4, unknown, 10.0.0.9", "10.0.0.9"),
        # No usable peer.
        (None, "198.51.100.4", "unknown"),
        ("", None, "unknown"),
        ("testclient", "198.51.100.4", "testclient"),
    ],
)
def test_client_ip(peer: str | None, forwarded_for: str | None, expected: str) -> None:
    assert client_ip(peer, forwarded_for, PROXIES) == expected


def test_no_trusted_proxies_means_the_header_is_ignored() -> None:
    assert client_ip("10.1.2.3", "198.51.100.4", []) == "10.1.2.3"


@pytest.mark.parametrize(
    ("address", "ipv4_prefix", "ipv6_prefix", "expected"),
    [
        ("203.0.113.7", 32, 64, "203.0.113.7"),
        ("203.0.113.7", 24, 64, "203.0.113.0/24"),
        ("2001:db8:0:1::7", 32, 64, "2001:db8:0:1::/64"),
        ("2001:db8:0:1:ffff:ffff:ffff:ffff", 32, 64, "2001:db8:0:1::/64"),
        ("2001:db8:0:1::7", 32, 48, "2001:db8::/48"),
        ("2001:db8:0:1::7", 32, 128, "2001:db8:0:1::7"),
        ("unknown", 32, 64, "unknown"),
        ("testclient", 24, 56, "testclient"),
    ],
)
def test_client_network(address: str, ipv4_prefix: int, ipv6_prefix: int, expected: str) -> None:
    assert client_network(address, ipv4_prefix, ipv6_prefix) == expected
