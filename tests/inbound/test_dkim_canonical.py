"""Our DKIM canonicalization and header hashing (``dkimcheck._canonical_body``, ``dkimcheck._hash_headers``) give
the very bytes dkimpy's functions give, over hand-picked and (seeded) random inputs, and DKIM verification with them
gives the result it gives with dkimpy's own (``verify(..., fast=False)``), for messages signed by dkimpy (RSA and
Ed25519, every c= pair, l=, random header lists) and by our own outbound signer, as they were signed and changed
afterwards (whitespace, case, added fields and lines), each key fetched from a DNS server on loopback."""

from __future__ import annotations

import random

import dkim
import pytest
from dkim.canonicalization import CanonicalizationPolicy

from mailserver.config import DnsConfig, parse_address
from mailserver.dns import DnsResolver
from mailserver.inbound import dkimcheck
from mailserver.inbound.lookups import Lookups
from tests.dnsserver import dns_server
from tests.inbound.senderauth_env import Keys, zones

C_VALUES = [b"simple/simple", b"simple/relaxed", b"relaxed/simple", b"relaxed/relaxed", b"relaxed", b"simple"]
BODY_PIECES = [b"text", b" ", b"  ", b"\t", b" \t ", b"\r\n", b"\n", b"\r", b"\r\n\r\n", b"x y", b"\t\r\n",
               b" \r\n", b"\x00", b"\xff", b"=", b"\r\r\n", b"\n\n", b"a\tb"]
BODIES = [b"", b"\r\n", b"\r\n\r\n", b" ", b" \r\n", b"\t\r\n\r\n", b"a", b"a\r\n", b"a \r\n\r\n\r\n", b"a\n",
          b"  lead\r\n", b"mid  \t dle\r\n", b"end \t", b"\r\n \r\n", b"a\r\n\t\r\n\r\n", b"x\r\r\n"]


def _body_inputs(seed: int, count: int) -> list[bytes]:
    rnd = random.Random(seed)
    return BODIES + [b"".join(rnd.choice(BODY_PIECES) for _ in range(rnd.randint(0, 20))) for _ in range(count)]


def _outcome(f, *args):
    try:
        return ("ok", f(*args))
    except Exception as e:  # noqa: BLE001 - the same exception on both sides counts as the same outcome
        return ("raised", type(e).__name__, str(e))


def test_canonical_body_same_as_dkimpy():
    for c in C_VALUES:
        policy = CanonicalizationPolicy.from_c_value(c)
        for body in _body_inputs(3, 10000):
            assert dkimcheck._canonical_body(policy, body) == policy.canonicalize_body(body), (c, body)


class _Recorder:
    """A hasher that keeps what it was given (the bytes both sides hash)."""

    def __init__(self):
        self.parts: list[bytes] = []

    def update(self, data: bytes) -> None:
        self.parts.append(bytes(data))

    def data(self) -> bytes:
        return b"".join(self.parts)


NAMES = [b"From", b"from", b"FROM", b"From ", b"from\t", b"To", b"Subject", b"subject ", b"X-A", b"Date",
         b"DKIM-Signature", b"Message-ID", b"Received"]
VALUE_PIECES = [b" ", b"", b"  ", b"\t", b"value", b"a@b.example", b"\r\n ", b"\r\n\t", b"\n ", b"x\r\n",
                b" y \t z ", b"\xc3\xa9", b"\r", b";", b"\r\n"]
INCLUDE = [b"from", b"to", b"subject", b"date", b"x-a", b"message-id", b"missing", b"received", b"from "]
SIG_VALUES = [b" v=1; a=rsa-sha256; d=example.org; s=sel; h=from:to; bh=AAAA; b=abc\r\n def==\r\n",
              b" v=1; b=; a=ed25519-sha256\r\n", b"v=1;b=Zm9v;bh=x\r\n", b" a=x; b = Zm9v Y mFy ; c=relaxed\r\n",
              b" b=abc", b"\tv=1;\r\n\tb=ab\r\n\tcd;\r\n\td=x\r\n", b" bh=abc; x=b=abc\r\n"]


def _headers(rnd: random.Random) -> list[list[bytes]]:
    return [[rnd.choice(NAMES), b"".join(rnd.choice(VALUE_PIECES) for _ in range(rnd.randint(0, 6)))]
            for _ in range(rnd.randint(0, 10))]


def test_hash_headers_same_as_dkimpy():
    rnd = random.Random(4)
    for _ in range(10000):
        headers = _headers(rnd)
        include = [rnd.choice(INCLUDE) for _ in range(rnd.randint(0, 8))]
        sig_header = (rnd.choice([b"DKIM-Signature", b"dkim-signature "]), rnd.choice(SIG_VALUES))
        policy = CanonicalizationPolicy.from_c_value(rnd.choice(C_VALUES))
        ours, theirs = _Recorder(), _Recorder()
        got = _outcome(dkimcheck._hash_headers, ours, policy, headers, include, sig_header)
        want = _outcome(dkim.hash_headers, theirs, policy, policy.canonicalize_headers(headers), include,
                        sig_header, {})
        assert (got[0], ours.data()) == (want[0], theirs.data()), (headers, include, sig_header)


# --------------------------------------------------------------------------------------------- whole messages

@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    return Keys(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="module")
def dns(keys):
    with dns_server(zones(keys)) as srv:
        yield srv


_resolvers: dict[str, DnsResolver] = {}


def _lookups(dns) -> Lookups:
    """Lookups through one resolver with an answer cache (both sides of a comparison get the same key record;
    generous time limits: a loaded machine must not turn one side into a temperror)."""
    resolver = _resolvers.get(dns.address)
    if resolver is None:
        resolver = _resolvers[dns.address] = DnsResolver(DnsConfig((parse_address(dns.address, 53),), 20.0),
                                                         cache_size=100)
    return Lookups(resolver, timeout=60.0, max_queries=50)


FIELD_NAMES = [b"From", b"To", b"Subject", b"Date", b"Message-ID", b"Cc", b"X-Extra", b"Reply-To"]
BODY_LINES = [b"Hello there.", b"  two  spaces  ", b"tab\there", b"trailing \t", b"", b"=?utf-8?q?x?=",
              b"a much longer line of text that goes on and on " * 3]


def _random_message(rnd: random.Random) -> bytes:
    fields = [b"From: Alice <alice@sender.test>"]
    for _ in range(rnd.randint(1, 6)):
        name = rnd.choice(FIELD_NAMES)
        value = rnd.choice([b"x", b" spaced  value ", b"folded\r\n\tvalue", b"<id@sender.test>", b"\tTab"])
        fields.append(name + rnd.choice([b": ", b":", b":\t", b":  "]) + value)
    rnd.shuffle(fields)
    body = b"".join(rnd.choice(BODY_LINES) + b"\r\n" for _ in range(rnd.randint(0, 12)))
    return b"\r\n".join(fields) + b"\r\n\r\n" + body + b"\r\n" * rnd.randint(0, 3)


def _changed(rnd: random.Random, message: bytes) -> bytes:
    """The message as some relay might pass it on (or a forger change it)."""
    head, _, body = message.partition(b"\r\n\r\n")
    change = rnd.randrange(9)
    if change == 0:
        body = body.replace(b" ", b"  ")
    elif change == 1:
        body = body.replace(b"\r\n", b" \r\n")
    elif change == 2:
        body += b"\r\n\r\n"
    elif change == 3:
        head = head.replace(b"Subject:", b"SUBJECT:")
    elif change == 4:
        head = head.replace(b": ", b":  \t")
    elif change == 5:
        head += b"\r\nFrom: Mallory <m@evil.test>"
    elif change == 6:
        body += b"appended\r\n"
    elif change == 7:
        head += b"\r\nX-Added: later"
    else:
        body = body.replace(b"e", b"E", 1)
    return head + b"\r\n\r\n" + body


def _signed_by_dkimpy(rnd: random.Random, keys: Keys, message: bytes) -> bytes:
    c = rnd.choice([(b"simple", b"simple"), (b"simple", b"relaxed"), (b"relaxed", b"simple"),
                    (b"relaxed", b"relaxed")])
    include = rnd.sample([b"from", b"to", b"subject", b"date", b"message-id", b"cc", b"x-extra", b"reply-to"],
                         rnd.randint(1, 6))
    if b"from" not in include:
        include.append(b"from")
    if rnd.random() < 0.2:
        include.append(b"subject")  # a name twice: the second instance (absent: hashed as nothing)
    length = rnd.random() < 0.2
    if rnd.random() < 0.5:
        sig = dkim.sign(message, b"direct", b"sender.test", keys.direct_pem, canonicalize=c,
                        include_headers=include, length=length)
    else:
        sig = dkim.sign(message, b"ed", b"sender.test", keys.ed_seed, canonicalize=c, include_headers=include,
                        length=length, signature_algorithm=b"ed25519-sha256")
    return sig + message


def test_verify_same_as_dkimpy_for_signed_and_changed_messages(keys, dns):
    rnd = random.Random(5)
    results: dict[str, int] = {}
    for n in range(300):
        message = _random_message(rnd)
        signed = keys.signer.signature_headers(message) + message if n % 3 == 0 else \
            _signed_by_dkimpy(rnd, keys, message)
        if n % 4 == 3:  # two signatures, the outer over the inner
            signed = _signed_by_dkimpy(rnd, keys, signed)
        for candidate in (signed, _changed(rnd, signed), _changed(rnd, _changed(rnd, signed))):
            fast = dkimcheck.verify(_lookups(dns), candidate)
            assert fast == dkimcheck.verify(_lookups(dns), candidate, fast=False), candidate
            for r in fast:
                results[r.result] = results.get(r.result, 0) + 1
    # Not a vacuous comparison: most untouched signatures pass, many changed ones fail.
    assert results.get("pass", 0) > 300 and results.get("fail", 0) > 100, results


def test_verify_same_as_dkimpy_hand_picked(keys, dns):
    base = b"From: Alice <alice@sender.test>\r\nSubject:  Hi \t there\r\nTo: b@x\r\n\r\n"
    bodies = [b"", b"\r\n", b"line\r\n", b"line  with \t runs \r\n\r\n\r\n", b"no final newline",
              b"\r\n\r\n\r\nafter blank lines\r\n"]
    for body in bodies:
        for c in ((b"simple", b"simple"), (b"relaxed", b"relaxed"), (b"relaxed", b"simple"), (b"simple", b"relaxed")):
            message = base + body
            sig = dkim.sign(message, b"direct", b"sender.test", keys.direct_pem, canonicalize=c)
            for candidate in (sig + message, sig + message + b"\r\n\r\n", sig + message.replace(b"Hi", b"hi"),
                              sig.replace(b"DKIM-Signature", b"dkim-signature") + message,
                              sig + message.replace(b" \t ", b" ")):
                fast = dkimcheck.verify(_lookups(dns), candidate)
                assert fast == dkimcheck.verify(_lookups(dns), candidate, fast=False), candidate
            assert dkimcheck.verify(_lookups(dns), sig + message)[0].result == "pass", (body, c)
