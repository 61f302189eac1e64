"""The PROXY protocol header (HAProxy's "PROXY protocol" versions 1 and 2), sans-IO.

A TCP load balancer that opens its own connection to us sends one header first, saying who the client is; then the
client's bytes follow unchanged.  :class:`ProxyHeaderParser` takes bytes as they arrive and answers, once the header
is complete, a :class:`ProxyHeader` and the bytes that followed it; anything else raises :class:`ProxyHeaderError`
as soon as the bytes so far cannot begin a valid header (a client speaking SMTP is refused at its first byte).

Limits (the specification's and ours, each tested one byte past):

* version 1 is one text line ``PROXY TCP4|TCP6|UNKNOWN ... CRLF`` of at most :data:`MAX_V1_LINE` bytes with the CRLF;
  addresses must be IPv4/IPv6 addresses of the named family (no host names, no stray bytes that could reach a log
  or a Received field), ports decimal 0-65535;
* version 2 is the 12-byte signature, version/command, family/protocol, a 16-bit length, then that many bytes of
  addresses and TLVs: we accept at most :data:`MAX_V2_LENGTH` of them (the 16-bit field allows 65535; a load
  balancer sends tens, a few hundred with TLS TLVs).

``LOCAL`` (version 2) and ``UNKNOWN`` (version 1), which a balancer uses for its own health checks, give a header
with ``source`` None: the connection is the balancer's own.  TLVs are skipped (nothing here needs them).
"""

from __future__ import annotations

import ipaddress
import re
import struct
from dataclasses import dataclass

#: Version 1: the longest header line, CRLF included (the specification's worst case, "PROXY UNKNOWN" + 2 IPv6).
MAX_V1_LINE = 107
#: Version 2: the signature that begins every header.
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
#: Version 2: the fixed part (signature, version/command, family/protocol, length).
V2_FIXED = 16
#: Version 2: the most bytes of addresses and TLVs we accept after the fixed part.
MAX_V2_LENGTH = 1024

V1_PREFIX = b"PROXY "

_PORT = re.compile(rb"0|[1-9][0-9]{0,4}")
_V2_ADDRESS_SIZES = {0x1: 12, 0x2: 36, 0x3: 216}  # family nibble -> bytes of the address block (INET, INET6, UNIX)


class ProxyHeaderError(Exception):
    """The bytes cannot be a PROXY header (or one we accept); the connection must be closed."""


@dataclass(frozen=True)
class ProxyHeader:
    version: int  # 1 or 2
    #: (address, port) of the client; None = the connection is the balancer's own (LOCAL, UNKNOWN, AF_UNSPEC/UNIX).
    source: tuple[str, int] | None
    #: (address, port) the client connected to on the balancer; None when ``source`` is None.
    destination: tuple[str, int] | None


class ProxyHeaderParser:
    """Feed bytes with :meth:`feed` until it returns a header; then :attr:`rest` holds what followed it."""

    def __init__(self) -> None:
        self._buf = b""
        self.rest = b""
        self.header: ProxyHeader | None = None

    def feed(self, data: bytes) -> ProxyHeader | None:
        """Add ``data``; returns the header once complete (None until then), raises ProxyHeaderError."""
        if self.header is not None:
            raise RuntimeError("the header is complete: its rest is .rest")
        self._buf += data
        buf = self._buf
        if not buf:
            return None
        if buf[:1] == V2_SIGNATURE[:1]:
            header, used = _v2(buf)
        elif buf[:1] == V1_PREFIX[:1]:
            header, used = _v1(buf)
        else:
            raise ProxyHeaderError("not a PROXY header")
        if header is None:
            return None
        self.header, self.rest, self._buf = header, buf[used:], b""
        return header


def _v1(buf: bytes) -> tuple[ProxyHeader | None, int]:
    if not (buf[:len(V1_PREFIX)] == V1_PREFIX[:len(buf)]):
        raise ProxyHeaderError("not a PROXY header")
    end = buf.find(b"\n", 0, MAX_V1_LINE)
    if end < 0:
        if len(buf) >= MAX_V1_LINE:
            raise ProxyHeaderError(f"PROXY v1 line longer than {MAX_V1_LINE} bytes")
        if b"\r" in buf[:-1]:
            raise ProxyHeaderError("PROXY v1 line: CR without LF")
        return None, 0
    line = buf[:end + 1]
    if not line.endswith(b"\r\n") or b"\r" in line[:-2]:
        raise ProxyHeaderError("PROXY v1 line must end with CRLF")
    return _v1_fields(line[:-2].split(b" ")), end + 1


def _v1_fields(fields: list[bytes]) -> ProxyHeader:
    # "PROXY" SP family SP source SP destination SP source-port SP destination-port
    if len(fields) < 2:
        raise ProxyHeaderError("PROXY v1: no protocol family")
    family = fields[1]
    if family == b"UNKNOWN":
        return ProxyHeader(1, None, None)  # the rest of the line is to be ignored
    if family not in (b"TCP4", b"TCP6"):
        raise ProxyHeaderError("PROXY v1: family must be TCP4, TCP6 or UNKNOWN")
    if len(fields) != 6:
        raise ProxyHeaderError("PROXY v1: expected two addresses and two ports")
    kind = ipaddress.IPv4Address if family == b"TCP4" else ipaddress.IPv6Address
    src, dst = (_v1_address(kind, f) for f in fields[2:4])
    sport, dport = (_v1_port(f) for f in fields[4:6])
    return ProxyHeader(1, (src, sport), (dst, dport))


def _v1_address(kind, raw: bytes) -> str:
    try:
        return str(kind(raw.decode("ascii")))
    except (UnicodeDecodeError, ValueError):
        raise ProxyHeaderError("PROXY v1: bad address") from None


def _v1_port(raw: bytes) -> int:
    if not _PORT.fullmatch(raw) or int(raw) > 65535:
        raise ProxyHeaderError("PROXY v1: bad port")
    return int(raw)


def _v2(buf: bytes) -> tuple[ProxyHeader | None, int]:
    n = min(len(buf), len(V2_SIGNATURE))
    if buf[:n] != V2_SIGNATURE[:n]:
        raise ProxyHeaderError("not a PROXY header")
    if len(buf) >= 13 and buf[12] >> 4 != 0x2:
        raise ProxyHeaderError("PROXY v2: unsupported version")
    if len(buf) >= 13 and buf[12] & 0x0F not in (0x0, 0x1):
        raise ProxyHeaderError("PROXY v2: unknown command")
    if len(buf) < V2_FIXED:
        return None, 0
    (length,) = struct.unpack("!H", buf[14:16])
    if length > MAX_V2_LENGTH:
        raise ProxyHeaderError(f"PROXY v2: {length} bytes of addresses and TLVs (at most {MAX_V2_LENGTH})")
    if len(buf) < V2_FIXED + length:
        return None, 0
    command, family, transport = buf[12] & 0x0F, buf[13] >> 4, buf[13] & 0x0F
    block = buf[V2_FIXED:V2_FIXED + length]
    used = V2_FIXED + length
    if command == 0x0:  # LOCAL: the balancer's own connection (health check); the block is to be ignored
        return ProxyHeader(2, None, None), used
    if family not in (0x0, 0x1, 0x2, 0x3):
        raise ProxyHeaderError("PROXY v2: unknown address family")
    if family == 0x0:  # AF_UNSPEC: the client is unknown; we take the balancer's connection as it is
        return ProxyHeader(2, None, None), used
    if transport != 0x1:
        raise ProxyHeaderError("PROXY v2: only STREAM connections are served")
    size = _V2_ADDRESS_SIZES[family]
    if length < size:
        raise ProxyHeaderError("PROXY v2: address block too short")
    if family == 0x3:  # AF_UNIX: a local socket client has no address to account to
        return ProxyHeader(2, None, None), used
    if family == 0x1:
        src, dst = ipaddress.IPv4Address(block[0:4]), ipaddress.IPv4Address(block[4:8])
        sport, dport = struct.unpack("!HH", block[8:12])
    else:
        src, dst = ipaddress.IPv6Address(block[0:16]), ipaddress.IPv6Address(block[16:32])
        sport, dport = struct.unpack("!HH", block[32:36])
    return ProxyHeader(2, (str(src), sport), (str(dst), dport)), used


# --------------------------------------------------------------------------------------------- writing (tests, tools)


def v1_header(source: tuple[str, int] | None, destination: tuple[str, int] | None = None) -> bytes:
    """A version 1 header for ``source`` -> ``destination`` (``UNKNOWN`` when ``source`` is None)."""
    if source is None:
        return b"PROXY UNKNOWN\r\n"
    destination = destination or (("0.0.0.0", 0) if ":" not in source[0] else ("::", 0))
    family = "TCP6" if ":" in source[0] else "TCP4"
    return f"PROXY {family} {source[0]} {destination[0]} {source[1]} {destination[1]}\r\n".encode("ascii")


def v2_header(source: tuple[str, int] | None, destination: tuple[str, int] | None = None, *,
              tlvs: bytes = b"") -> bytes:
    """A version 2 header (``LOCAL`` when ``source`` is None), with raw ``tlvs`` appended to the address block."""
    if source is None:
        return V2_SIGNATURE + bytes([0x20, 0x00]) + struct.pack("!H", len(tlvs)) + tlvs
    src = ipaddress.ip_address(source[0])
    destination = destination or (("0.0.0.0" if src.version == 4 else "::"), 0)
    dst = ipaddress.ip_address(destination[0])
    block = src.packed + dst.packed + struct.pack("!HH", source[1], destination[1]) + tlvs
    family = 0x11 if src.version == 4 else 0x21
    return V2_SIGNATURE + bytes([0x21, family]) + struct.pack("!H", len(block)) + block


# --------------------------------------------------------------------------------------------- trusted peers


class Networks:
    """A set of IP networks (``["127.0.0.1/32", "10.0.0.0/8", "::1"]``) and the question "is this address in it"."""

    def __init__(self, cidrs) -> None:
        self._nets = tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)

    def __bool__(self) -> bool:
        return bool(self._nets)

    def __contains__(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(str(address).split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip.version == n.version and ip in n for n in self._nets)


class ProxiedHost(str):
    """A client address learnt from a PROXY header (the string is the address).

    The hop from the balancer to us is a network, whatever the client's address: such a client is never "loopback"
    for the plaintext policy (``mailserver.auth.is_loopback``) even when the balancer says 127.0.0.1."""

    __slots__ = ()
