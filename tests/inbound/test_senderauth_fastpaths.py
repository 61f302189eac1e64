"""The sender-authentication shortcuts give exactly what the full parses give: the From domains read from a plain
header's From fields alone (``senderauth.from_domains``) against the stdlib parse of the whole header, and dkimpy's
(headers, body) split of the header section only (``dkimcheck._split``) against ``dkim.rfc822_parse`` of the whole
message, over hand-picked and (seeded) random inputs; and a cached DKIM key record gives the result it gave first."""

from __future__ import annotations

import random

import dkim

from mailserver.inbound import dkimcheck, senderauth

FROM_CASES = [
    b"From: a@b.example\r\nTo: x@y\r\n",
    b'From: "A, B" <a@B.example.>,\r\n c@d.example\r\nSubject: hi\r\n',
    b"Subject: x\r\nFROM: a@b.example\r\nfrom: c@b.example\r\n",
    b"From: nobody\r\n",
    b"To: x\r\n",
    b"From: a@b.example\r\n\r\nbody",
    b"From a@b Mon\r\nFrom: a@b.example\r\n",
    b" cont\r\nFrom: a@b.example\r\n",
    b"X: y\rFrom: a@b.example\r\n",
    b"X: y\nFrom: a@b.example\r\n",
    b"From: =?utf-8?q?x?= <a@\xc3\xa9.example>\r\n",
    b"From : a@b.example\r\n",
    b"bad line\r\nFrom: a@b.example\r\n",
    b"From: a@b.example\r\nbad line\r\nFrom: c@d.example\r\n",
    b"From: a@b.example\r\n\tc@d.example",
    b"From:a@b.example",
    b"",
    b"X-From: a@b.example\r\nFrom: <>\r\n",
    b"From: group: a@b.example, c@d.example;\r\n",
]
PIECES = [b"From:", b"from: ", b"a@b.example", b"<c@D.example>", b",", b"\r\n", b"\r", b"\n", b" ", b"\t", b"X: y",
          b"\r\n\r\n", b"\n\n", b"\r\r\n", b"\xff", b"From ", b":", b'"q@r" <s@t>', b"DKIM-Signature: v=1", b"body"]


def _random_inputs(seed: int, count: int) -> list[bytes]:
    rnd = random.Random(seed)
    return [b"".join(rnd.choice(PIECES) for _ in range(rnd.randint(0, 14))) for _ in range(count)]


def _outcome(f, arg):
    try:
        return ("ok", f(arg))
    except Exception as e:  # noqa: BLE001 - the same exception on both sides counts as the same outcome
        return ("raised", type(e).__name__, str(e))


def _full_from_parse(head: bytes):
    end = head.find(b"\r\n\r\n")
    return senderauth._parse_from_domains(head if end < 0 else head[:end + 4])


def test_from_domains_same_as_the_full_parse():
    for head in FROM_CASES + _random_inputs(1, 5000):
        for _ in range(2):  # the second time from the cache
            assert _outcome(senderauth.from_domains, head) == _outcome(_full_from_parse, head), head


def test_from_domains_cached_result_is_a_copy():
    head = b"From: a@copy.example\r\n"
    senderauth.from_domains(head).append("changed.example")
    assert senderauth.from_domains(head) == ["copy.example"]


def _as_tuples(parsed):
    headers, body = parsed
    return [tuple(h) for h in headers], body


def test_dkim_split_same_as_rfc822_parse():
    cases = [b"", b"\r\n\r\n", b"\r\n\r\nA: b\r\n", b"A: b\r\n\r\n", b"A: b\r\n\r\nx\r\n", b"A: b\r\n\r\nx\ny\r\n",
             b"A: b\n\r\n\r\nx\r\n", b"A: b\r\n\r\n\r\n\r\n"] + _random_inputs(2, 5000)
    for message in cases:
        assert (_outcome(lambda m: _as_tuples(dkimcheck._split(m)), message)
                == _outcome(lambda m: _as_tuples(dkim.rfc822_parse(m)), message)), message


def test_dkim_key_cache_gives_the_first_result():
    bad = (b"k.example", b"v=DKIM1; k=rsa; p=not-base64!")
    first = dkimcheck._parse_key(bad[0].decode(), bad[1])
    assert first[0].startswith("bad key record") and dkimcheck._parse_key(bad[0].decode(), bad[1]) is first
