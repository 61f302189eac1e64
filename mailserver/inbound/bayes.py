"""The built-in spam classifier: message tokens and the per-account Bayesian probability (sans-IO, no Twisted).

:func:`tokenize` turns a message (at most :data:`MAX_INPUT` bytes of it: the caller reads no more) into a set of
tokens: words of the text parts (HTML with its tags taken out), word pairs (bigrams) of the body, and words of a few
header fields prefixed with the field's name (``subject:cheap``, ``from:example.com``), plus a few shape tokens
(a word longer than :data:`MAX_WORD` becomes ``long:N``).  A message gives at most :data:`MAX_TOKENS` distinct
tokens; each counts once per message.  Tokens are stored as 63-bit hashes (:func:`token_id`), so every row has the
same small size whatever the input.

:func:`probability` combines the account's counts of the message's tokens: each token's spam probability is the
ratio of its relative frequencies in trained spam and ham, smoothed towards 0.5 for rare tokens (Robinson's
estimate), then the :data:`MAX_CLUES` tokens farthest from 0.5 are combined with Fisher's method (the chi-square
test both ways, as in Gary Robinson's "A Statistical Approach to the Spam Problem").  The result is between 0 (ham)
and 1 (spam); 0.5 says nothing.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from email import policy as email_policy
from email.parser import BytesParser

#: The most bytes of a message tokenized (the stage reads no more from the blob).
MAX_INPUT = 256 * 1024
#: The most distinct tokens taken from one message.
MAX_TOKENS = 4000
#: The most MIME parts looked at.
MAX_PARTS = 50
#: Words shorter or longer than these are not tokens (a longer one becomes a "long:N" shape token).
MIN_WORD, MAX_WORD = 2, 32
#: The header fields whose words are tokens (prefixed with the field name).
HEADER_FIELDS = ("subject", "from", "to", "reply-to", "return-path", "message-id", "x-mailer", "user-agent",
                 "content-type", "list-id", "received")
#: The most tokens kept of one header field (Received fields can be long).
MAX_HEADER_TOKENS = 40

#: Tokens combined per message, and how far from 0.5 a token must be to count.
MAX_CLUES = 150
MIN_DEVIATION = 0.1
#: Robinson's smoothing: strength of the prior and the prior itself.
PRIOR_STRENGTH = 0.45
PRIOR = 0.5

_WORD = re.compile(r"[^\W_][\w'$.-]*", re.UNICODE)
_TAG = re.compile(r"<[^>]{0,2000}>")
_ENTITY = re.compile(r"&#?\w{1,10};")
_URL_HOST = re.compile(r"https?://([a-z0-9.-]{1,253})", re.IGNORECASE)


def token_id(token: str) -> int:
    """The stored form of a token: a positive 63-bit integer (blake2b)."""
    return int.from_bytes(hashlib.blake2b(token.encode("utf-8", "replace"), digest_size=8).digest(), "big") >> 1


def _words(text: str) -> list[str]:
    out = []
    for w in _WORD.findall(text.lower()):
        w = w.strip("'.-$")
        if len(w) > MAX_WORD:
            out.append(f"long:{min(len(w) // 10, 20)}")
        elif len(w) >= MIN_WORD:
            out.append(w)
    return out


class _Tokens:
    """A bounded set of tokens (insertion order kept)."""

    def __init__(self, limit: int):
        self.limit = limit
        self.items: dict[str, None] = {}

    @property
    def full(self) -> bool:
        return len(self.items) >= self.limit

    def add(self, token: str) -> None:
        if len(self.items) < self.limit:
            self.items.setdefault(token)

    def update(self, tokens) -> None:
        items = self.items
        room = self.limit - len(items)
        for t in tokens:
            if room <= 0:
                return
            if t not in items:
                items[t] = None
                room -= 1


def _text_of(part) -> str:
    try:
        payload = part.get_payload(decode=True) or b""
    except Exception:  # malformed transfer encoding: use what is there
        payload = b""
    charset = "utf-8"
    try:
        charset = part.get_content_charset() or "utf-8"
        return payload.decode(charset, "replace")
    except (LookupError, ValueError):
        return payload.decode("utf-8", "replace")


def tokenize(raw: bytes) -> list[str]:
    """The distinct tokens of a message (at most :data:`MAX_TOKENS`; only the first :data:`MAX_INPUT` bytes of
    ``raw`` are read).  Never raises on malformed input."""
    raw = raw[:MAX_INPUT]
    out = _Tokens(MAX_TOKENS)
    try:
        msg = BytesParser(policy=email_policy.compat32).parsebytes(raw)
    except Exception:  # the parser does not usually raise, but hostile input must not stop a delivery
        out.update(_words(raw.decode("utf-8", "replace")))
        return list(out.items)
    for name in HEADER_FIELDS:
        try:
            values = msg.get_all(name) or []
        except Exception:
            values = []
        words = [w for value in values[:5] for w in _words(str(value)[:4096])][:MAX_HEADER_TOKENS]
        out.update(f"{name}:{w}" for w in words)
    parts = 0
    for part in msg.walk():
        if out.full or parts >= MAX_PARTS:
            break
        parts += 1
        ctype = part.get_content_type()
        if part.is_multipart():
            continue
        out.add(f"ctype:{ctype}")
        if not ctype.startswith("text/"):
            name = part.get_filename() or ""
            if "." in name:
                out.add(f"attach:{name.rsplit('.', 1)[1].lower()[:10]}")
            continue
        text = _text_of(part)
        if ctype == "text/html":
            for host in _URL_HOST.findall(text):
                out.add(f"url:{host.lower()}")
            text = _ENTITY.sub(" ", _TAG.sub(" ", text))
        else:
            for host in _URL_HOST.findall(text):
                out.add(f"url:{host.lower()}")
        words = _words(text)
        out.update(words)
        out.update(f"{a} {b}" for a, b in zip(words, words[1:], strict=False))
    return list(out.items)


@dataclass(frozen=True)
class Counts:
    """An account's training: messages trained as spam and as ham, and per token id (spam, ham) counts."""

    spam: int
    ham: int
    tokens: dict[int, tuple[int, int]]


def token_probability(spam_count: int, ham_count: int, spam_total: int, ham_total: int) -> float:
    """One token's spam probability, smoothed towards :data:`PRIOR` by how often it was seen."""
    spam_ratio = min(spam_count / spam_total, 1.0) if spam_total else 0.0
    ham_ratio = min(ham_count / ham_total, 1.0) if ham_total else 0.0
    seen = spam_count + ham_count
    if spam_ratio + ham_ratio == 0:
        return PRIOR
    p = spam_ratio / (spam_ratio + ham_ratio)
    return (PRIOR_STRENGTH * PRIOR + seen * p) / (PRIOR_STRENGTH + seen)


def _chi2q(x2: float, dof: int) -> float:
    """P(chi-square with ``dof`` (even) degrees of freedom >= x2)."""
    m = x2 / 2.0
    term = math.exp(-m)
    total = term
    for i in range(1, dof // 2):
        term *= m / i
        total += term
    return min(total, 1.0)


def probability(token_ids, counts: Counts) -> float:
    """The message's spam probability given the account's ``counts`` (0.5 when nothing is known)."""
    clues = []
    for t in token_ids:
        c = counts.tokens.get(t)
        if c is None:
            continue
        p = token_probability(c[0], c[1], counts.spam, counts.ham)
        if abs(p - 0.5) >= MIN_DEVIATION:
            clues.append(p)
    if not clues:
        return 0.5
    clues.sort(key=lambda p: -abs(p - 0.5))
    clues = clues[:MAX_CLUES]
    n = len(clues)
    eps = 1e-6
    ln_ham = sum(math.log(max(1.0 - p, eps)) for p in clues)
    ln_spam = sum(math.log(max(p, eps)) for p in clues)
    spamminess = 1.0 - _chi2q(-2.0 * ln_ham, 2 * n)
    hamminess = 1.0 - _chi2q(-2.0 * ln_spam, 2 * n)
    return (1.0 + spamminess - hamminess) / 2.0
