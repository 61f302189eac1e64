"""Fuzzing the PROXY header parser (``mailserver/proxywire.py``).

Input: a valid v1 or v2 header (TCP4/TCP6/UNKNOWN/LOCAL, with TLVs), often mutated (fuzzlib.mutated, lines padded
around the 107-byte v1 limit), followed by protocol bytes, cut at random read boundaries.

Properties: the parser raises nothing but ProxyHeaderError; the result (header and rest, or the refusal) is the same
whatever the read boundaries; a header's addresses are real IP addresses of its family and its ports 0-65535; a v1
header never used more than 107 bytes, a v2 one never more than 16 + MAX_V2_LENGTH; the rest is the input after the
header, byte for byte.
"""

from __future__ import annotations

import ipaddress

from hypothesis import strategies as st

from mailserver.proxywire import (
    MAX_V1_LINE,
    MAX_V2_LENGTH,
    ProxyHeaderError,
    ProxyHeaderParser,
    v1_header,
    v2_header,
)
from tests.fuzz.fuzzlib import chunks_at, fuzz, mutated, split_points

ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(str)
ports = st.integers(0, 65535)


@st.composite
def headers(draw) -> bytes:
    v6 = draw(st.booleans())
    addr = ipv6 if v6 else ipv4
    src, dst = (draw(addr), draw(ports)), (draw(addr), draw(ports))
    kind = draw(st.sampled_from(("v1", "v1-unknown", "v2", "v2-local")))
    if kind == "v1":
        return v1_header(src, dst)
    if kind == "v1-unknown":
        return v1_header(None)
    tlvs = draw(st.binary(max_size=40))
    return v2_header(src, dst, tlvs=tlvs) if kind == "v2" else v2_header(None, tlvs=tlvs)


@st.composite
def inputs(draw) -> bytes:
    h = draw(headers())
    if draw(st.integers(0, 99)) < 60:
        h = draw(mutated(h, (MAX_V1_LINE,)))
    return h + draw(st.sampled_from((b"", b"EHLO x\r\n", b"\x16\x03\x01\x00\x05hello", b"a001 CAPABILITY\r\n")))


def run(chunks: list[bytes]):
    p = ProxyHeaderParser()
    for i, c in enumerate(chunks):
        try:
            h = p.feed(c)
        except ProxyHeaderError:
            return "refused"
        if h is not None:
            return h, p.rest + b"".join(chunks[i + 1:])
    return "waiting"


@fuzz(inputs(), st.data())
def test_proxy_header_parser(data, draws):
    whole = run([data])
    cut = run(chunks_at(data, draws.draw(split_points(len(data)))))
    bytewise = run([data[i:i + 1] for i in range(len(data))])
    assert whole == cut == bytewise
    if isinstance(whole, tuple):
        h, rest = whole
        used = len(data) - len(rest)
        assert data[used:] == rest
        assert used <= (MAX_V1_LINE if h.version == 1 else 16 + MAX_V2_LENGTH)
        for endpoint in (h.source, h.destination):
            if endpoint is not None:
                ipaddress.ip_address(endpoint[0])
                assert 0 <= endpoint[1] <= 65535
                assert str(ipaddress.ip_address(endpoint[0])) == endpoint[0]
