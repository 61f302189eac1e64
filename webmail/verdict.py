""""Why is this junk?": the verdict a delivered copy carries, in plain words (no I/O; the reader view calls it).

The verdict is what our delivery wrote on the copy: ``X-Spam-Score`` and ``X-Spam-Symbols`` (``inbound/policy.py``;
the first of each, ours being added on top of whatever came with the message) and the ``Authentication-Results``
field of our own host name (``inbound/senderauth.py``; incoming fields claiming our name are removed on arrival).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

#: Most header bytes read for the verdict.
MAX_HEADER = 64 * 1024
#: Most symbols listed.
MAX_SYMBOLS = 40

_METHODS = {
    "spf": ("SPF", {"pass": "the sending server may send for the sender's domain",
                    "fail": "the sender's domain says this server may not send for it",
                    "softfail": "the sender's domain doubts this server may send for it",
                    "neutral": "the sender's domain says nothing about this server",
                    "none": "the sender's domain publishes no SPF policy",
                    "temperror": "the check failed for a moment (DNS)", "permerror": "the domain's policy is broken"}),
    "dkim": ("DKIM", {"pass": "a valid signature of the sender's domain", "fail": "a signature did not verify",
                      "none": "the message is not signed", "neutral": "the signature could not be judged",
                      "temperror": "the check failed for a moment (DNS)",
                      "permerror": "the signature or its key is broken", "policy": "the signature is not accepted"}),
    "dmarc": ("DMARC", {"pass": "the From domain is aligned with a passing SPF or DKIM result",
                        "fail": "the From domain's own checks failed",
                        "none": "the From domain publishes no DMARC policy",
                        "temperror": "the check failed for a moment (DNS)",
                        "permerror": "the domain's policy is broken"}),
    "arc": ("ARC", {"pass": "the forwarding chain is intact", "fail": "the forwarding chain is broken",
                    "none": "the message was not forwarded with ARC"}),
    "iprev": ("Reverse DNS", {"pass": "the sending server's address and name match",
                              "fail": "the sending server's address and name do not match",
                              "temperror": "the check failed for a moment (DNS)",
                              "permerror": "the sending server has no name"}),
}
_RESULT = re.compile(r"(?:^|;)\s*([a-z][a-z0-9_-]*)\s*=\s*([a-z]+)", re.I)


@dataclass
class Explanation:
    score: str = ""
    symbols: list[str] = field(default_factory=list)
    checks: list[tuple[str, str, str]] = field(default_factory=list)  # (check, result, in words)

    @property
    def empty(self) -> bool:
        return not (self.score or self.symbols or self.checks)


def _fields(head: bytes) -> list[tuple[str, str]]:
    """(lower-cased name, unfolded value) of each field of a header block."""
    text = head[:MAX_HEADER].decode("utf-8", "replace").replace("\r\n", "\n")
    text = text.split("\n\n", 1)[0]
    out: list[tuple[str, str]] = []
    for line in text.split("\n"):
        if line[:1] in (" ", "\t") and out:
            out[-1] = (out[-1][0], out[-1][1] + " " + line.strip())
        elif ":" in line:
            name, _, value = line.partition(":")
            out.append((name.strip().lower(), value.strip()))
    return out


def explain(head: bytes, hostname: str) -> Explanation:
    """The stored verdict of the message whose header block is ``head``."""
    ex = Explanation()
    for name, value in _fields(head):
        if name == "x-spam-score" and not ex.score:
            ex.score = value[:20]
        elif name == "x-spam-symbols" and not ex.symbols:
            ex.symbols = value.split()[:MAX_SYMBOLS]
        elif name == "authentication-results" and not ex.checks:
            authserv = value.split(";", 1)[0].split()[0] if value.split(";", 1)[0].split() else ""
            if authserv.lower() != hostname.lower():
                continue
            for method, result in _RESULT.findall(value.split(";", 1)[1] if ";" in value else ""):
                label, words = _METHODS.get(method.lower(), (method, {}))
                result = result.lower()
                ex.checks.append((label, result, words.get(result, "")))
    return ex
