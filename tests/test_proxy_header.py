"""The PROXY header parser (mailserver/proxywire.py), sans-IO: every split offset, one byte past each limit, garbage
refused at its first wrong byte, and the trusted-network and Forwarded rules."""

from __future__ import annotations

import struct

import pytest

from mailserver.auth import is_loopback
from mailserver.proxywire import (
    MAX_V1_LINE,
    MAX_V2_LENGTH,
    V2_SIGNATURE,
    Networks,
    ProxiedHost,
    ProxyHeader,
    ProxyHeaderError,
    ProxyHeaderParser,
    v1_header,
    v2_header,
)
from webmail.forwarded import client_address

AFTER = b"EHLO client.example\r\n"


def parse(data: bytes, chunks: list[int] | None = None) -> tuple[ProxyHeader | None, bytes]:
    p = ProxyHeaderParser()
    pieces = [data] if chunks is None else [data[a:b] for a, b in zip([0, *chunks], [*chunks, len(data)], strict=True)]
    for i, piece in enumerate(pieces):
        h = p.feed(piece)
        if h is not None:
            return h, p.rest + b"".join(pieces[i + 1:])  # later reads go to the protocol
    return None, b""


GOOD = [
    (b"PROXY TCP4 192.0.2.7 198.51.100.1 4711 25\r\n", ProxyHeader(1, ("192.0.2.7", 4711), ("198.51.100.1", 25))),
    (b"PROXY TCP6 2001:db8::7 2001:db8::1 65535 0\r\n", ProxyHeader(1, ("2001:db8::7", 65535), ("2001:db8::1", 0))),
    (b"PROXY UNKNOWN\r\n", ProxyHeader(1, None, None)),
    (b"PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n", ProxyHeader(1, None, None)),
    (v2_header(("192.0.2.7", 4711), ("198.51.100.1", 993)), ProxyHeader(2, ("192.0.2.7", 4711), ("198.51.100.1", 993))),
    (v2_header(("2001:db8::7", 1), ("2001:db8::1", 2)), ProxyHeader(2, ("2001:db8::7", 1), ("2001:db8::1", 2))),
    (v2_header(None), ProxyHeader(2, None, None)),  # LOCAL: the balancer's health check
    # TLVs after the addresses are skipped (here PP2_TYPE_ALPN "h2" and a NOOP).
    (v2_header(("192.0.2.7", 4711), tlvs=b"\x01\x00\x02h2" + b"\x04\x00\x03xyz"),
     ProxyHeader(2, ("192.0.2.7", 4711), ("0.0.0.0", 0))),
    # AF_UNSPEC and AF_UNIX with PROXY: no client address to account to; the balancer's connection is kept.
    (V2_SIGNATURE + b"\x21\x00\x00\x00", ProxyHeader(2, None, None)),
    (V2_SIGNATURE + b"\x21\x31" + struct.pack("!H", 216) + b"/x".ljust(216, b"\0"), ProxyHeader(2, None, None)),
]


@pytest.mark.parametrize("data, expected", GOOD)
def test_valid_headers_at_every_split_offset(data, expected):
    """Whatever the read boundaries (including one byte per read), the same header and the same rest."""
    whole = data + AFTER
    assert parse(whole) == (expected, AFTER)
    for cut in range(1, len(whole)):
        assert parse(whole, [cut]) == (expected, AFTER), cut
    assert parse(whole, list(range(1, len(whole)))) == (expected, AFTER)


def test_incomplete_header_waits():
    for data, _ in GOOD:
        for n in range(len(data)):
            assert parse(data[:n]) == (None, b""), (data, n)


def test_v1_line_of_exactly_107_bytes_is_accepted_and_108_refused():
    """The specification's limit, 107 bytes with the CRLF: at it accepted, one byte past refused (also without
    waiting for a line end that would come too late)."""
    base = b"PROXY UNKNOWN "
    line = base + b"x" * (MAX_V1_LINE - len(base) - 2) + b"\r\n"
    assert len(line) == MAX_V1_LINE
    assert parse(line) == (ProxyHeader(1, None, None), b"")
    longer = base + b"x" * (MAX_V1_LINE - len(base) - 1) + b"\r\n"
    assert len(longer) == MAX_V1_LINE + 1
    with pytest.raises(ProxyHeaderError, match="longer than 107"):
        parse(longer)
    with pytest.raises(ProxyHeaderError, match="longer than 107"):
        parse(longer[:MAX_V1_LINE])  # 107 bytes and no LF yet: it cannot end in time
    assert parse(longer[:MAX_V1_LINE - 1]) == (None, b"")


def test_v2_length_at_limit_accepted_and_one_past_refused():
    """At most MAX_V2_LENGTH bytes of addresses and TLVs; one more is refused as soon as the length field is read."""
    addresses = 12
    tlv_body = MAX_V2_LENGTH - addresses - 3
    at = v2_header(("192.0.2.7", 1), tlvs=b"\x04" + struct.pack("!H", tlv_body) + b"\0" * tlv_body)
    assert len(at) == 16 + MAX_V2_LENGTH
    assert parse(at)[0].source == ("192.0.2.7", 1)
    past = v2_header(("192.0.2.7", 1), tlvs=b"\x04" + struct.pack("!H", tlv_body + 1) + b"\0" * (tlv_body + 1))
    with pytest.raises(ProxyHeaderError, match="at most 1024"):
        parse(past[:16])  # the fixed part alone is enough to refuse


GARBAGE = [
    b"EHLO client.example\r\n",  # a client speaking its protocol directly
    b"GET / HTTP/1.1\r\n",
    b"\x16\x03\x01\x02\x00",  # a TLS ClientHello
    b"proxy TCP4 192.0.2.7 198.51.100.1 1 2\r\n",  # case matters
    b"PROXY  TCP4 192.0.2.7 198.51.100.1 1 2\r\n",
    b"PROXY TCP5 192.0.2.7 198.51.100.1 1 2\r\n",
    b"PROXY TCP4 192.0.2.7 198.51.100.1 1\r\n",
    b"PROXY TCP4 192.0.2.7 198.51.100.1 1 2 3\r\n",
    b"PROXY TCP4 2001:db8::7 198.51.100.1 1 2\r\n",  # an IPv6 address named TCP4
    b"PROXY TCP6 192.0.2.7 2001:db8::1 1 2\r\n",
    b"PROXY TCP4 192.0.2.007 198.51.100.1 1 2\r\n",  # leading zeros (octal in some parsers)
    b"PROXY TCP4 mail.example 198.51.100.1 1 2\r\n",  # a host name
    b"PROXY TCP4 192.0.2.7\nX-Injected:a 198.51.100.1 1 2\r\n",  # a bare LF (Received/log injection)
    b"PROXY TCP4 192.0.2.7 198.51.100.1 65536 2\r\n",
    b"PROXY TCP4 192.0.2.7 198.51.100.1 -1 2\r\n",
    b"PROXY TCP4 192.0.2.7 198.51.100.1 +1 2\r\n",
    b"PROXY TCP4 192.0.2.7 198.51.100.1 01 2\r\n",
    b"PROXY TCP4 192.0.2.7 198.51.100.1 1 2\n",  # LF without CR
    b"PROXY TCP4 192.0.2.7 198.51.100.1 1 2\rX\n",
    b"PROXY TCP4 19\xc3\xa92.0.2.7 198.51.100.1 1 2\r\n",
    b"PROXY\r\n",
    V2_SIGNATURE[:11] + b"X",
    V2_SIGNATURE + b"\x11\x11\x00\x0c" + b"\0" * 12,  # version 1 in a v2 header
    V2_SIGNATURE + b"\x22\x11\x00\x0c" + b"\0" * 12,  # command 2
    V2_SIGNATURE + b"\x21\x41\x00\x0c" + b"\0" * 12,  # family 4
    V2_SIGNATURE + b"\x21\x12\x00\x0c" + b"\0" * 12,  # DGRAM
    V2_SIGNATURE + b"\x21\x11\x00\x0b" + b"\0" * 11,  # an IPv4 block one byte short
    V2_SIGNATURE + b"\x21\x21\x00\x23" + b"\0" * 35,  # an IPv6 block one byte short
]


@pytest.mark.parametrize("data", GARBAGE)
def test_garbage_is_refused(data):
    with pytest.raises(ProxyHeaderError):
        parse(data)
    with pytest.raises(ProxyHeaderError):
        parse(data, list(range(1, len(data))))


@pytest.mark.parametrize("data", [b"E", b"G", b"\x16", b"\r\n\r\n\x01", b"PROXX"])
def test_garbage_is_refused_at_its_first_wrong_byte(data):
    """A client that is not a balancer is turned away at once, not after a timeout."""
    with pytest.raises(ProxyHeaderError):
        ProxyHeaderParser().feed(data)


def test_every_prefix_of_hostile_input_is_refused_or_waits_then_refused():
    """Random bytes never give a header whose address is not an address (property over a seeded corpus)."""
    import random

    rng = random.Random(17)
    seeds = [d for d, _ in GOOD] + GARBAGE
    for _ in range(3000):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(len(data))
            data[i] = rng.randrange(256)
        try:
            h, _rest = parse(bytes(data), sorted({rng.randrange(1, len(data) + 1) for _ in range(3)}))
        except ProxyHeaderError:
            continue
        if h is not None and h.source is not None:
            import ipaddress

            ipaddress.ip_address(h.source[0])
            assert 0 <= h.source[1] <= 65535


def test_writers_round_trip():
    assert v1_header(("192.0.2.7", 1), ("198.51.100.1", 2)) == b"PROXY TCP4 192.0.2.7 198.51.100.1 1 2\r\n"
    assert parse(v1_header(None)) == (ProxyHeader(1, None, None), b"")


def test_feed_after_the_header_is_a_programming_error():
    p = ProxyHeaderParser()
    assert p.feed(v1_header(("192.0.2.7", 1))) is not None
    with pytest.raises(RuntimeError):
        p.feed(b"more")


# --------------------------------------------------------------------------------------------- trust, loopback


def test_networks():
    nets = Networks(["127.0.0.1/32", "10.0.0.0/8", "::1"])
    assert "127.0.0.1" in nets and "10.1.2.3" in nets and "::1" in nets and "::ffff:10.0.0.1" in nets
    assert "127.0.0.2" not in nets and "192.0.2.7" not in nets and "not an ip" not in nets and "" not in nets
    assert not Networks([]) and "127.0.0.1" not in Networks([])


def test_a_proxied_client_is_never_loopback():
    """The balancer's hop is a network: a client it names 127.0.0.1 gets no plaintext privilege."""
    assert is_loopback("127.0.0.1") and not is_loopback(ProxiedHost("127.0.0.1"))
    assert ProxiedHost("127.0.0.1") == "127.0.0.1"


# --------------------------------------------------------------------------------------------- webmail Forwarded

TRUSTED = Networks(["127.0.0.1/32", "10.0.0.0/8"])


@pytest.mark.parametrize("peer, forwarded, xff, client", [
    # An untrusted peer is the client whatever it claims.
    ("192.0.2.9", [], ["192.0.2.7"], "192.0.2.9"),
    ("192.0.2.9", ["for=192.0.2.7"], [], "192.0.2.9"),
    # A trusted proxy's claim is taken.
    ("127.0.0.1", [], ["192.0.2.7"], "192.0.2.7"),
    ("127.0.0.1", ['for="[2001:db8::7]:4711";proto=https'], [], "2001:db8::7"),
    ("127.0.0.1", ["for=192.0.2.7:80"], [], "192.0.2.7"),
    # Chains: trusted hops are walked from the right; the first untrusted one is the client (a spoofed left
    # part written by the client itself is not believed).
    ("127.0.0.1", [], ["198.51.100.66, 192.0.2.7, 10.0.0.5"], "192.0.2.7"),
    ("127.0.0.1", [], ["198.51.100.66", "192.0.2.7"], "192.0.2.7"),
    ("127.0.0.1", ["for=198.51.100.66, for=192.0.2.7;by=10.0.0.5"], [], "192.0.2.7"),
    # Forwarded wins over X-Forwarded-For.
    ("127.0.0.1", ["for=192.0.2.8"], ["192.0.2.7"], "192.0.2.8"),
    # Not an address: believe no further than the last hop that made sense.
    ("127.0.0.1", [], ["192.0.2.7, garbage"], "127.0.0.1"),
    ("127.0.0.1", ["for=unknown"], [], "127.0.0.1"),
    ("127.0.0.1", ["for=_hidden, for=10.0.0.5"], [], "10.0.0.5"),
    ("127.0.0.1", [], [], "127.0.0.1"),
])
def test_forwarded_client(peer, forwarded, xff, client):
    assert client_address(peer, TRUSTED, forwarded=forwarded, x_forwarded_for=xff) == client


def test_forwarded_ignored_without_trusted_proxies():
    assert client_address("127.0.0.1", Networks([]), forwarded=[], x_forwarded_for=["192.0.2.7"]) == "127.0.0.1"
