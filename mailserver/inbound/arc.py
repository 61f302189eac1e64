"""ARC (RFC 8617): the chain of a forwarded message validated with dkimpy over our resolver.

The result is the chain validation status (``none``, ``pass``, ``fail``) with, per instance, the sealing domain and
the ``ARC-Authentication-Results`` it recorded.  :func:`trusted_pass` is our local policy on top (RFC 8617 7.2): a
message whose DMARC failed is let through when its chain passes and the newest sealer is one of
``[senderauth] arc_trusted_sealers`` and recorded ``dmarc=pass`` for the same From domain when it received it.

dkimpy swallows key lookup errors into "did not validate", so a DNS failure makes the chain ``fail`` (RFC 8617 has
no temporary result for the chain); every exception is a ``fail`` with its reason, never a crash.  Chains longer
than :data:`MAX_INSTANCES` (RFC 8617 4.2.1: i= is at most 50) are not validated.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from mailserver.dns import DnsError, DnsPermanentError
from mailserver.inbound import authresults
from mailserver.inbound.lookups import Lookups

NONE, PASS, FAIL = "none", "pass", "fail"
MAX_INSTANCES = 50

_log = logging.getLogger("mailserver.inbound.arc")


def _dkim():
    """dkimpy, imported at the first check (see ``dkimcheck._dkim``)."""
    import dkim

    return dkim
_log.addHandler(logging.NullHandler())
_log.propagate = False
_INSTANCE = re.compile(rb"(?im)^arc-(?:seal|message-signature|authentication-results)[ \t]*:[ \t\r\n]*i[ \t]*=[ \t]*(\d+)")


@dataclass(frozen=True)
class ArcSet:
    instance: int
    sealer: str  # d= of the ARC-Seal
    aar: str  # the ARC-Authentication-Results value


@dataclass(frozen=True)
class ArcResult:
    result: str
    sets: tuple[ArcSet, ...] = ()  # newest first
    reason: str = ""

    @property
    def sealer(self) -> str:
        """The newest sealing domain ("" when none)."""
        return self.sets[0].sealer if self.sets else ""


def _text(v) -> str:
    if isinstance(v, bytes):
        v = v.decode("ascii", "replace")
    return "".join(c if 32 <= ord(c) < 127 else " " if c in "\r\n\t" else "?" for c in v).strip()


def verify(lookups: Lookups, message: bytes, header: bytes) -> ArcResult:
    """The chain of ``message`` (``header``: its header section, to count the instances).  Never raises."""
    instances = [int(m) if len(m) < 6 else 10 ** 6 for m in _INSTANCE.findall(header)]
    if not instances:
        return ArcResult(NONE)
    if max(instances) > MAX_INSTANCES:
        return ArcResult(FAIL, reason=f"instance above {MAX_INSTANCES}")

    def dnsfunc(name, timeout=5):
        try:
            name = name.decode("ascii") if isinstance(name, bytes) else name
            records = [t for t in lookups.txt(name.rstrip(".")) if t]
        except DnsPermanentError:
            return None
        except (DnsError, UnicodeDecodeError) as e:
            raise _dkim().DnsTimeoutError(str(e)) from None
        return records[0] if records else None

    try:
        cv, results, reason = _dkim().ARC(message, logger=_log, minkey=1024).verify(dnsfunc=dnsfunc)
    except Exception as e:  # noqa: BLE001 - dkimpy on a hostile chain: a verdict, never a crash
        return ArcResult(FAIL, reason=f"{type(e).__name__}: {_text(str(e))[:80]}")
    sets = tuple(ArcSet(int(r.get("instance", 0)), _text(r.get("as-domain", b"")).lower(),
                        _text(r.get("aar-value", b"")))
                 for r in results if "as-domain" in r)
    status = {_dkim().CV_Pass: PASS, _dkim().CV_None: NONE}.get(cv, FAIL)
    return ArcResult(status, sets, "" if status == PASS else _text(reason)[:120])


def trusted_pass(arc: ArcResult, trusted_sealers: frozenset[str], from_domain: str) -> str:
    """The trusted sealer that vouches for a DMARC pass of ``from_domain`` ("" when none does)."""
    if arc.result != PASS or not arc.sets:
        return ""
    newest = arc.sets[0]
    if newest.sealer not in trusted_sealers:
        return ""
    _id, results = authresults.parse(newest.aar, arc=True)
    for r in results:
        if r.method == "dmarc" and r.result == "pass":
            said = r.properties.get("header.from", "").lower().rstrip(".")
            if said and said == from_domain.lower().rstrip("."):
                return newest.sealer
    return ""
