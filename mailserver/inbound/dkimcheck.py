"""DKIM verification (RFC 6376) of every signature of a message, RSA and Ed25519 (RFC 8463), with dkimpy.

dkimpy parses the message and the signatures and canonicalizes; the key records come from our resolver (the
check's :class:`~mailserver.inbound.lookups.Lookups`), the signature itself is checked by OpenSSL (RSA, through
``cryptography``) or libsodium (Ed25519), and each signature gets one RFC 8601 result:

* ``pass``      - the signature verifies;
* ``fail``      - it does not (body hash or signature mismatch);
* ``neutral``   - it was not looked at: past :data:`MAX_SIGNATURES`, or the message is larger than the check
  verifies (``[senderauth] dkim_max_size``);
* ``temperror`` - the key could not be fetched now (DNS timeout, SERVFAIL, the check's time limit);
* ``permerror`` - the signature or its key is unusable: malformed tags, an unknown algorithm or rsa-sha1 (RFC 8301),
  no key record, a
  revoked (empty ``p=``) or unparsable key, an RSA key shorter than :data:`MIN_RSA_BITS` (RFC 8301) or longer
  than :data:`MAX_RSA_BITS` or with an exponent over :data:`MAX_RSA_EXPONENT_BITS` bits (bounded CPU per
  signature: the thread running it cannot be interrupted).

A message without DKIM-Signature fields has the single result ``none``.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils

from mailserver.dns import DnsError, DnsPermanentError
from mailserver.inbound.lookups import Lookups

if TYPE_CHECKING:
    import dkim

NONE, PASS, FAIL, NEUTRAL, TEMPERROR, PERMERROR = "none", "pass", "fail", "neutral", "temperror", "permerror"

#: Signatures verified per message; the others get ``neutral`` (each costs a lookup and a hash of the body).
MAX_SIGNATURES = 8
#: RFC 8301 3.2: RSA keys under 1024 bits are not valid.
MIN_RSA_BITS = 1024
#: Larger keys are refused (RFC 8301 allows up to 4096; verification cost grows with the square of the size).
MAX_RSA_BITS = 8192
MAX_RSA_EXPONENT_BITS = 64

#: Parsed key records kept (by key name and record text): parsing a record and building its public key is the
#: same work for every message of a sender; the record itself still comes from the DNS (cache) each time.
KEY_CACHE_SIZE = 1024

_log = logging.getLogger("mailserver.inbound.dkim")


def _dkim():
    """dkimpy, imported at the first check rather than with this module: a server without sender authentication
    does not load it (about 3 MiB)."""
    import dkim
    import dkim.canonicalization

    return dkim
_log.addHandler(logging.NullHandler())
_log.propagate = False


@dataclass(frozen=True)
class DkimResult:
    result: str
    domain: str = ""  # d=
    selector: str = ""  # s=
    algorithm: str = ""  # a=
    identity: str = ""  # i=
    b: str = ""  # the first characters of b= (RFC 6008 header.b)
    reason: str = ""


_UNPRINTABLE = re.compile(r"[^!-~]")
_UNPRINTABLE_OR_SPACE = re.compile(r"[^ -~]")
_WSP_RUN = re.compile(rb"\s+")
_REVOKED = re.compile(rb"(?:^|;)\s*p\s*=\s*(?:;|$)")


def _text(v, limit: int = 200) -> str:
    """A tag value as printable ASCII (at most ``limit`` characters)."""
    if isinstance(v, bytes):
        v = v[:limit].decode("ascii", "replace")
    return _UNPRINTABLE.sub("?", v[:limit])


def _reason(message: str) -> str:
    """An exception's message as a short reason: printable ASCII, without dkimpy's parenthesised data."""
    return _UNPRINTABLE_OR_SPACE.sub("?", message[:300]).split(" (")[0][:100]


def _key_record(lookups: Lookups, name: str) -> bytes | None:
    """The key TXT record at ``name`` (None: no record); DnsError for a temporary failure or a limit."""
    try:
        records = [t for t in lookups.txt(name) if t]
    except DnsPermanentError:
        return None
    # RFC 6376 3.6.2.2: several records at the name: the verifier may pick any; use the first DKIM one.
    for r in records:
        if r.lstrip().startswith(b"v=DKIM1") or b"p=" in r:
            return r
    return records[0] if records else None


class _KeyCache:
    """What :func:`_parse_key` made of a (name, record), least recently used dropped past ``size``
    (thread-safe: the ``dns`` pool has several threads)."""

    def __init__(self, size: int):
        self.size = size
        self._items: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key):
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
            return found

    def put(self, key, value) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)


_keys = _KeyCache(KEY_CACHE_SIZE)


def _parse_key(name: str, record: bytes):
    """(problem, pk, ktag, public key object or None) for a key record: ``problem`` is "" when usable (a revoked
    key, RFC 6376 3.6.1 empty ``p=``, is a problem found before any parse); cached."""
    key = (name, record)
    found = _keys.get(key)
    if found is not None:
        return found
    if _REVOKED.search(record):
        found = ("key revoked (empty p=)", None, None, None)
        _keys.put(key, found)
        return found
    try:
        pk, _keysize, ktag, _tlsrpt = _dkim().evaluate_pk(name.encode(), record)
    except Exception as e:  # noqa: BLE001 - any malformed key record
        found = (f"bad key record: {_reason(str(e))}", None, None, None)
    else:
        if pk is None:
            found = ("key not for email (s= tag)", None, None, None)
        else:
            problem = _check_key(pk, ktag)
            public = None
            if not problem and ktag == b"rsa":
                try:
                    public = rsa.RSAPublicNumbers(int(pk["publicExponent"]), int(pk["modulus"])).public_key()
                except Exception:  # noqa: BLE001 - made again (and its error reported) where it was before
                    public = None
            found = (problem, pk, ktag, public)
    _keys.put(key, found)
    return found


def _check_key(pk, ktag) -> str:
    """Why a parsed key is unusable ("" when fine)."""
    if ktag == b"rsa":
        bits = int(pk["modulus"]).bit_length()
        if bits < MIN_RSA_BITS:
            return f"RSA key of {bits} bits is too short (RFC 8301)"
        if bits > MAX_RSA_BITS:
            return f"RSA key of {bits} bits is too long"
        if int(pk["publicExponent"]).bit_length() > MAX_RSA_EXPONENT_BITS:
            return "RSA public exponent is too large"
    return ""


def _verify_one(d: "dkim.DKIM", idx: int, lookups: Lookups, fast: bool = True) -> DkimResult:
    try:
        sig, include_headers, sigheaders = _prep(d, idx) if fast else d.verify_headerprep(idx)
    except _dkim().DKIMException as e:
        return DkimResult(PERMERROR, reason=f"bad signature: {_reason(str(e))}")
    fields = sig
    base = dict(domain=_text(fields.get(b"d", b"")), selector=_text(fields.get(b"s", b"")),
                algorithm=_text(fields.get(b"a", b"")), identity=_text(fields.get(b"i", b"")),
                b=_text(_WSP_RUN.sub(b"", fields.get(b"b", b"")[:64]), 8))
    name = f"{base['selector']}._domainkey.{base['domain']}"
    try:
        record = _key_record(lookups, name)
    except DnsError as e:
        return DkimResult(PERMERROR if e.permanent else TEMPERROR, **base, reason=f"key lookup: {_reason(e.reason)}")
    if record is None:
        return DkimResult(PERMERROR, **base, reason="no key record")
    problem, pk, ktag, public = _parse_key(name, record)
    if problem:
        return DkimResult(PERMERROR, **base, reason=problem)
    algorithm = fields.get(b"a")
    if algorithm == b"rsa-sha1":
        return DkimResult(PERMERROR, **base, reason="rsa-sha1 is not accepted (RFC 8301)")
    if (ktag == b"ed25519") != (algorithm == b"ed25519-sha256"):
        return DkimResult(PERMERROR, **base, reason="key type does not match a=")
    try:
        verdict = _check_signature(d, sig, include_headers, sigheaders[idx], public or pk, ktag, fast=fast)
    except Exception as e:  # noqa: BLE001 - malformed c=, b=, l= ...: a verdict, never a crash
        return DkimResult(PERMERROR, **base, reason=_reason(str(e)) or type(e).__name__)
    return DkimResult(PASS if not verdict else FAIL, **base, reason=verdict)


def _check_signature(d: "dkim.DKIM", sig: dict, include_headers: list, sig_header, pk, ktag, *,
                     fast: bool = True) -> str:
    """RFC 6376 3.7 for one signature: "" when it verifies, else why not.  The header fields are selected and
    canonicalized, and the body canonicalized, by :func:`_canonical_body` and :func:`_hash_headers` (the same bytes
    as dkimpy's functions, ``tests/inbound/test_dkim_canonical.py``; ``fast=False``: dkimpy's own); the public-key
    step is OpenSSL's (``cryptography``) for RSA and libsodium's for Ed25519.
    ``pk``: the RSA public key object, or dkimpy's parsed Ed25519 key."""
    policy = _dkim().canonicalization.CanonicalizationPolicy.from_c_value(sig.get(b"c", b"simple/simple"))
    sha256 = hashlib.sha256
    body = _canonical_body(policy, d.body) if fast else policy.canonicalize_body(d.body)
    if b"l" in sig:
        body = body[:int(sig[b"l"])]
    if base64.b64decode(_WSP_RUN.sub(b"", sig[b"bh"])) != sha256(body).digest():
        return "body hash mismatch"
    if b"from" in include_headers:
        include_headers = include_headers + [b"from"]  # as dkimpy: a second From field breaks the signature
    h = sha256()
    if fast:
        _hash_headers(h, policy, d.headers, include_headers, sig_header)
    else:
        _dkim().hash_headers(h, policy, policy.canonicalize_headers(d.headers), include_headers, sig_header, sig)
    signature = base64.b64decode(_WSP_RUN.sub(b"", sig[b"b"]))
    if ktag == b"ed25519":
        try:
            pk.verify(h.digest(), signature)
            return ""
        except Exception:  # noqa: BLE001 - nacl's BadSignatureError (and a signature of the wrong length)
            return "signature did not verify"
    key = pk if isinstance(pk, rsa.RSAPublicKey) else rsa.RSAPublicNumbers(
        int(pk["publicExponent"]), int(pk["modulus"])).public_key()
    try:
        key.verify(signature, h.digest(), padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))
        return ""
    except InvalidSignature:
        return "signature did not verify"


# The canonicalizations (RFC 6376 3.4) as dkimpy computes them, with less work: whitespace runs are replaced only
# where that changes something (a tab, or two or more characters: a single space stays as it is), and only the
# header fields a signature names are canonicalized.
_WSP_TO_COMPRESS = re.compile(rb"\t[\t ]*| [\t ]+")


def _compress(value: bytes) -> bytes:
    """dkimpy's ``compress_whitespace``: every run of spaces and tabs as one space."""
    return _WSP_TO_COMPRESS.sub(b" ", value) if b"\t" in value or b"  " in value else value


def _canonical_body(policy, body: bytes) -> bytes:
    """``policy.canonicalize_body(body)``: relaxed: whitespace at line ends removed, runs compressed, empty
    lines at the end removed (an empty body stays empty); simple: empty lines at the end removed, one CRLF kept."""
    if policy.body_algorithm is not _dkim().canonicalization.Relaxed:
        return policy.canonicalize_body(body)
    body = _compress(body)  # then " \r\n" is all that is left of the whitespace before a line end
    if b" \r\n" in body:
        body = body.replace(b" \r\n", b"\r\n")
    return _dkim().canonicalization.correct_empty_body(_dkim().canonicalization.strip_trailing_lines(body))


def _relaxed_field(name: bytes, value: bytes) -> tuple[bytes, bytes]:
    """dkimpy's relaxed form of one header field (RFC 6376 3.4.2)."""
    return name.lower().rstrip(), _compress(value.replace(b"\r\n", b"").replace(b"\n", b"")).strip() + b"\r\n"


def _hash_headers(h, policy, headers: list, include_headers: list, sig_header) -> None:
    """``dkim.hash_headers`` over the canonicalized ``headers``: the fields ``include_headers`` names, each
    taken from the bottom up (RFC 6376 5.4.2), then the signature field without its b= value and final CRLF."""
    relaxed = policy.header_algorithm is _dkim().canonicalization.Relaxed
    keys = [n.lower().rstrip() for n, _v in headers] if relaxed else [n.lower() for n, _v in headers]
    last: dict[bytes, int] = {}
    for name in include_headers:
        i = last.get(name, len(headers))
        while i > 0:
            i -= 1
            if keys[i] == name:
                n, v = _relaxed_field(*headers[i]) if relaxed else headers[i]
                h.update(n)
                h.update(b":")
                h.update(v)
                break
        last[name] = i
    n, v = sig_header[0], _without_b(sig_header[1])
    if relaxed:
        n, v = _relaxed_field(n, v)
    h.update(n)
    h.update(b":")
    h.update(v.rstrip())


#: dkimpy's b= value removal (``dkim.RE_BTAG``: the tag name, then base64 characters each after optional folding
#: whitespace, then a final line break at the very end), written so that the value is one character-class run:
#: dkimpy's optional FWS before each character, ``((\s*\r?\n)?\s+)?``, matches exactly the runs ``\s*`` matches,
#: so its repeated group matches the longest run of whitespace and base64 characters that ends with a base64
#: character (or nothing), the same end this pattern finds; dkimpy's nested groups cost ~40 us per signature.
_BTAG = re.compile(rb"([;\s]b\s*=)(?:[\sa-zA-Z0-9+/=]*[a-zA-Z0-9+/=])?(?:\r?\n\Z)?")


def _without_b(value: bytes) -> bytes:
    """``dkim.RE_BTAG.sub(b"\\1", value)``: the signature field with its b= value removed (RFC 6376 3.7)."""
    return _BTAG.sub(rb"\1", value)


#: A header line that starts a field: its name (printable ASCII up to the first colon, RFC 5322 2.2) and colon.
_FIELD_START = re.compile(rb"[\x21-\x39\x3b-\x7e]+:")


def _header_fields(head: bytes) -> list | None:
    """``dkim.rfc822_parse``'s [name, value] list of ``head``, a header section whose every line break is CRLF,
    without its final CRLF and empty line; None when a line is neither a field (a name, then a colon) nor the
    continuation of one (dkimpy's parse then decides: it skips "From " lines, raises for others).  A field's
    value is what follows its colon, with its continuation lines, each line ending in CRLF."""
    headers: list[list[bytes]] = []
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t"):
            if not headers:
                return None
            headers[-1][1] += line + b"\r\n"
            continue
        m = _FIELD_START.match(line)
        if m is None:
            return None
        headers.append([line[:m.end() - 1], line[m.end():] + b"\r\n"])
    return headers


def _split(message: bytes):
    """dkimpy's (headers, body) of ``message``, as ``dkim.rfc822_parse`` makes them: when every line break is
    CRLF its body is the message's body as it is, and its header fields are :func:`_header_fields`."""
    end = message.find(b"\r\n\r\n")
    if end > 0 and not message.startswith(b"\r\n"):
        body = message[end + 4:]
        if (message.count(b"\n", 0, end + 2) == message.count(b"\r\n", 0, end + 2)
                and body.count(b"\n") == body.count(b"\r\n")):
            headers = _header_fields(message[:end])
            if headers is None:
                headers = _dkim().rfc822_parse(message[:end + 4])[0]
            return headers, body
    return _dkim().rfc822_parse(message)


# The signature's tag list (RFC 6376 3.2, 3.5) as dkimpy's ``verify_headerprep`` reads and checks it, without its
# per-call regular expressions.  These say only "dkimpy accepts this signature, with these tags"; anything they do
# not accept goes to dkimpy's own function, which raises its own error (the reason then written is dkimpy's).
_MANDATORY = (b"v", b"a", b"b", b"bh", b"d", b"h", b"s")
_BASE64 = re.compile(rb"[\s0-9A-Za-z+/]+[\s=]*$")
_DOMAIN_SPECIALS = re.compile(rb"[\(\)<>\[\]:;@\\,]")
_LENGTH = re.compile(rb"\d{,76}$")
_DIGITS = re.compile(rb"\d+$")
_H_SPLIT = re.compile(rb"\s*:\s*")
#: dkimpy's leeway (seconds) for t= in the future and x= in the past.
CLOCK_SLOP = 36000
#: Longest t= or x= read here (longer ones go to dkimpy's checks).
MAX_TIME_DIGITS = 20


def _tags(value: bytes) -> dict | None:
    """``dkim.util.parse_tag_value(value)``, or None where it raises (no "=", a name not starting with a letter,
    a name twice)."""
    tags: dict[bytes, bytes] = {}
    specs = value.strip().split(b";")
    if not specs[-1]:
        specs.pop()  # a trailing semicolon
    for spec in specs:
        key, eq, v = spec.partition(b"=")
        key = key.strip()
        if not eq or not key[:1].isalpha() or key in tags:
            return None
        tags[key] = v.strip()
    return tags


def _acceptable(sig: dict, now: int) -> bool:
    """Whether ``dkim.validate_signature_fields(sig)`` passes (False also for the odd cases left to it)."""
    for name in _MANDATORY:
        if name not in sig:
            return False
    if sig[b"a"] not in _dkim().HASH_ALGORITHMS or sig[b"v"] != b"1":
        return False
    b, d = sig[b"b"], sig[b"d"]
    # (dkimpy's bh= check matches the b= value against the pattern again: done here once.)
    if _BASE64.match(b) is None or len(_WSP_RUN.sub(b"", b)) % 4 or len(_WSP_RUN.sub(b"", sig[b"bh"])) % 4:
        return False
    if b"cv" in sig and sig[b"cv"] not in (_dkim().CV_Pass, _dkim().CV_Fail, _dkim().CV_None):
        return False
    if d.isascii() and _DOMAIN_SPECIALS.search(d):
        return False
    i = sig.get(b"i")
    if i is not None and not (d and len(i) > len(d) and i.lower().endswith(d.lower()) and i[-len(d) - 1] in b"@."):
        return False
    if b"l" in sig and _LENGTH.match(sig[b"l"]) is None:
        return False
    if b"q" in sig and sig[b"q"] != b"dns/txt":
        return False
    t = sig.get(b"t")
    if t is not None and (len(t) > MAX_TIME_DIGITS or _DIGITS.match(t) is None or int(t) > now + CLOCK_SLOP):
        return False
    x = sig.get(b"x")
    if x is not None:
        if len(x) > MAX_TIME_DIGITS or _DIGITS.match(x) is None or int(x) < now - CLOCK_SLOP:
            return False
        if t is not None and int(t) and int(x) < int(t):
            return False
    return True


def _prep(d: "dkim.DKIM", idx: int):
    """``d.verify_headerprep(idx)``: (tags, the lower-cased h= names, the signature fields) of signature ``idx``;
    raises dkimpy's error for a signature it does not accept (its function is called then)."""
    sigheaders = [(x, y) for x, y in d.headers if x.lower() == b"dkim-signature"]
    sig = _tags(sigheaders[idx][1]) if idx < len(sigheaders) else None
    if sig is None or not _acceptable(sig, int(time.time())):
        return d.verify_headerprep(idx)
    return sig, [x.lower() for x in _H_SPLIT.split(sig[b"h"])], sigheaders


def _parsed(message: bytes) -> "dkim.DKIM":
    """A dkimpy verifier of ``message`` (raises what dkimpy's parse raises)."""
    d = _dkim().DKIM(None, logger=_log, minkey=MIN_RSA_BITS)
    d.headers, d.body = _split(message)
    return d


def verify(lookups: Lookups, message: bytes, *, fast: bool = True) -> list[DkimResult]:
    """One result per DKIM-Signature field, in header order; [none] when there is none.  Never raises.
    ``fast=False``: canonicalized and hashed by dkimpy's own functions (what the tests compare with)."""
    try:
        d = _parsed(message)
    except Exception as e:  # noqa: BLE001 - a header dkimpy cannot parse
        return [DkimResult(PERMERROR, reason=f"message header not parsable: {_reason(str(e))[:60]}")]
    count = sum(1 for name, _ in d.headers if name.lower() == b"dkim-signature")
    if not count:
        return [DkimResult(NONE)]
    out = []
    for idx in range(count):
        if idx >= MAX_SIGNATURES:
            out.append(DkimResult(NEUTRAL, reason=f"more than {MAX_SIGNATURES} signatures"))
            continue
        out.append(_verify_one(d, idx, lookups, fast))
    return out


def too_large(message_size: int) -> list[DkimResult]:
    """The result for a signed message larger than the check verifies."""
    return [DkimResult(NEUTRAL, reason=f"message of {message_size} bytes not verified")]
