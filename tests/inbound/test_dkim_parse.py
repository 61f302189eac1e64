"""Our reading of a DKIM signature gives what dkimpy's gives, over hand-picked and (seeded) random inputs, malformed
ones and limits one past included: the header fields (``dkimcheck._header_fields`` against ``dkim.rfc822_parse``),
the signature's tags and checks (``dkimcheck._prep`` against ``DKIM.verify_headerprep``: the same tags, h= names and
signature fields, or the same exception with the same message), and the signature field without its b= value
(``dkimcheck._without_b`` against ``dkim.RE_BTAG``)."""

from __future__ import annotations

import random
import time

import dkim

from mailserver.inbound import dkimcheck


def _outcome(f, *args):
    try:
        return ("ok", f(*args))
    except Exception as e:  # noqa: BLE001 - the same exception on both sides counts as the same outcome
        return ("raised", type(e).__name__, str(e))


# ------------------------------------------------------------------------------------------------ b= removal

B_PIECES = [b"b=", b"b =", b"b\r\n =", b" b=", b";b=", b"; b=", b"\tb=", b"bh=", b"ab=", b"abc", b"XYZ+/", b"==",
            b"=", b" ", b"\t", b"\r\n ", b"\r\n\t", b"\n ", b"\r\n", b"\n", b"\r", b";", b"-", b"\x00", b"\xff",
            b"Zm9vYmFy", b"a=rsa-sha256", b"x"]
B_CASES = [b"", b" b=", b" b=\r\n", b" b=abc\r\n", b" b=ab\r\n c=d; x\r\n", b"v=1; b=abc \r\n", b"v=1;b=abc\n",
           b" b=abc; b=def", b" bh=abc; b=def==\r\n", b"b=abc", b" b= \r\n abc \r\n", b" b=\r\n\r\n",
           b" b = abc ;bh=x", b" z=From:a b=c; b=d\r\n", b" b=abc\r\n\r\n", b" b=abc \r\n", b" b=;"]


def test_without_b_same_as_dkimpy():
    rnd = random.Random(11)
    cases = B_CASES + [b"".join(rnd.choice(B_PIECES) for _ in range(rnd.randint(0, 16))) for _ in range(30000)]
    for value in cases:
        assert dkimcheck._without_b(value) == dkim.RE_BTAG.sub(b"\\1", value), value


# -------------------------------------------------------------------------------------------- header fields

LINE_PIECES = [b"From", b"To", b":", b" ", b"\t", b"value", b"From ", b"::", b"a:b", b"\x7f", b"\x00", b"\xc3\xa9",
               b"X-Y", b";", b"\r", b"=", b"Dkim-Signature"]


def _random_head(rnd: random.Random) -> bytes:
    return b"\r\n".join(b"".join(rnd.choice(LINE_PIECES) for _ in range(rnd.randint(1, 5)))
                        for _ in range(rnd.randint(1, 8)))


def test_header_fields_same_as_rfc822_parse():
    rnd = random.Random(12)
    cases = [b"A: b", b"A:b", b"A:", b"A: b\r\n c", b"A: b\r\n\tc\r\n d", b" lead\r\nA: b", b"From x@y\r\nA: b",
             b"::x", b":a: b", b"A b: c", b"A\x7f: b", b"A:\rb", b"A: b\r\nB"] + [_random_head(rnd) for _ in range(20000)]
    for head in cases:
        ours = dkimcheck._header_fields(head)
        if ours is None:
            continue  # not a plain header: dkimpy's parse is used for it
        assert ours == dkim.rfc822_parse(head + b"\r\n\r\n")[0], head


def test_split_uses_the_plain_header_fields():
    message = b"From: a@b\r\nSubject: x\r\n y\r\n\r\nbody\r\n"
    headers, body = dkimcheck._split(message)
    assert headers == [[b"From", b" a@b\r\n"], [b"Subject", b" x\r\n y\r\n"]] and body == b"body\r\n"


# ------------------------------------------------------------------------------------------- signature tags

def _good_tags(now: int) -> dict[bytes, bytes]:
    return {b"v": b"1", b"a": b"rsa-sha256", b"c": b"relaxed/relaxed", b"d": b"example.net", b"s": b"sel",
            b"i": b"@example.net", b"q": b"dns/txt", b"t": str(now).encode(), b"x": str(now + 3600).encode(),
            b"l": b"100", b"h": b"from : to :\r\n subject", b"bh": b"smO5GD+ydq3qyAlSdggR/G5xyznpc3MzpkV2NrYgjC0=",
            b"b": b"h/N6A6QqWXen8od5NU4j2gA5TByX\r\n jZSScFhIzSL/3ki+71zxa56qAA=="}


def _field(tags: dict[bytes, bytes], sep: bytes = b"; ") -> bytes:
    return b" " + sep.join(k + b"=" + v for k, v in tags.items()) + b"\r\n"


def _limits(now: int) -> list[bytes]:
    """Fields one past each limit of dkimpy's checks, and just within it."""
    out = []
    for name, values in {
        b"l": [b"7" * 76, b"7" * 77, b"", b"12a", b"-1"],
        b"t": [str(now + dkimcheck.CLOCK_SLOP - 5).encode(), str(now + dkimcheck.CLOCK_SLOP + 5).encode(), b"0",
               b"1" * dkimcheck.MAX_TIME_DIGITS, b"1" * (dkimcheck.MAX_TIME_DIGITS + 1), b"9" * 5000, b"x1"],
        b"x": [str(now - dkimcheck.CLOCK_SLOP + 5).encode(), str(now - dkimcheck.CLOCK_SLOP - 5).encode(),
               str(now - 1).encode(), b"9" * (dkimcheck.MAX_TIME_DIGITS + 1), b"1.5"],
        b"i": [b"@example.net", b"example.net", b"xexample.net", b"a@sub.example.net", b"@EXAMPLE.NET", b"a@other",
               b"", b"@", b".example.net"],
        b"d": [b"", b"example.net", b"exa;mple", b"ex@mple", b"\xc3\xa9.example", b"(x)", b"a,b"],
        b"v": [b"1", b"2", b"", b"01"],
        b"a": [b"rsa-sha256", b"rsa-sha1", b"ed25519-sha256", b"RSA-SHA256", b"hmac"],
        b"b": [b"", b"abc", b"abcd", b"ab cd", b"ab=", b"a===", b"ab$d", b"====", b"ab\r\n cd=="],
        b"bh": [b"", b"abc", b"abcd", b"a b c d", b"!!!!"],
        b"q": [b"dns/txt", b"dns", b""],
        b"cv": [b"pass", b"fail", b"none", b"maybe"],
        b"h": [b"", b"from", b"From:TO", b" from : to ", b":"],
    }.items():
        for value in values:
            tags = _good_tags(now)
            tags[name] = value
            out.append(_field(tags))
        tags = _good_tags(now)
        tags.pop(name, None)
        out.append(_field(tags))  # the tag missing
    return out


TAG_PIECES = [b"v=1", b"a=rsa-sha256", b"d=example.net", b"s=sel", b"h=from:to", b"bh=abcd", b"b=abcd", b";", b"; ",
              b" ", b"\r\n ", b"=", b"1x=y", b"_a=b", b"a-b=c", b"v=1", b"b=", b"t=5", b"x=4", b"i=@example.net",
              b"l=3", b"q=dns/txt", b"z=a=b", b"novalue", b"\t", b"\xff=1"]


def _sig_header(value: bytes) -> "dkim.DKIM":
    d = dkim.DKIM(None, logger=dkimcheck._log, minkey=dkimcheck.MIN_RSA_BITS)
    d.headers = [[b"From", b" a@example.net\r\n"], [b"DKIM-Signature", value], [b"dkim-signature", value]]
    return d


def test_prep_same_as_dkimpy():
    now = int(time.time())
    rnd = random.Random(13)
    good = _good_tags(now)
    cases = [_field(good), _field(good, b";"), _field(good, b";\r\n\t") + b";", b"", b";", b" ;;", b"v"]
    cases += _limits(now)
    for _ in range(20000):
        if rnd.random() < 0.5:
            cases.append(b"".join(rnd.choice(TAG_PIECES) for _ in range(rnd.randint(0, 14))))
        else:  # a good signature with one or two tags changed, dropped or doubled
            tags = list(_good_tags(now).items())
            for _ in range(rnd.randint(1, 2)):
                k = rnd.randrange(len(tags))
                change = rnd.randrange(4)
                if change == 0:
                    tags[k] = (tags[k][0], rnd.choice(TAG_PIECES))
                elif change == 1:
                    del tags[k]
                elif change == 2:
                    tags.append(tags[k])
                else:
                    tags[k] = (tags[k][0] + rnd.choice([b" ", b"\r\n ", b"x"]), tags[k][1])
            cases.append(b" " + b"; ".join(k + b"=" + v for k, v in tags) + b"\r\n")
    accepted = 0
    for value in cases:
        for idx in (0, 1):
            ours = _outcome(dkimcheck._prep, _sig_header(value), idx)
            theirs = _outcome(_sig_header(value).verify_headerprep, idx)
            assert ours == theirs, (value, idx)
        accepted += ours[0] == "ok"
    # Not vacuous: many signatures are accepted, many refused.
    assert accepted > 2000 and len(cases) - accepted > 2000, accepted


def test_prep_does_not_call_dkimpy_for_a_plain_signature(monkeypatch):
    now = int(time.time())
    d = _sig_header(_field(_good_tags(now)))

    def refuse(idx):
        raise AssertionError("dkimpy's verify_headerprep called")

    monkeypatch.setattr(d, "verify_headerprep", refuse)
    sig, include, sigheaders = dkimcheck._prep(d, 0)
    assert include == [b"from", b"to", b"subject"] and sig[b"d"] == b"example.net" and len(sigheaders) == 2


def test_revoked_key_is_cached_and_reported():
    record = b"v=DKIM1; k=rsa; p="
    first = dkimcheck._parse_key("revoked._domainkey.example.net", record)
    assert first[0] == "key revoked (empty p=)" and dkimcheck._parse_key("revoked._domainkey.example.net",
                                                                        record) is first
