"""Mail we forward to another domain: SRS for its envelope sender, an ARC set (RFC 8617) on its header.

A *forward* is a copy queued for an outside address because one of ours said so: an alias (or catch-all) of a local
domain with an external target, or a Sieve redirect (``Request.forwarded_by``).  The pipeline asks this module for
both things when it queues such a copy (``Ingest._enqueue``), so a redirect to a local address gets neither.

* :meth:`Forwarder.sender_for` rewrites the envelope sender with SRS (``delivery/srs.py``) so the destination's SPF
  check sees our domain; the null sender and senders in our own domains are kept.
* :meth:`Forwarder.seal` makes the ARC set with dkimpy's ``arc_sign``: ARC-Authentication-Results from our own
  Authentication-Results field (the one sender authentication wrote, authserv-id = our host name), cv= from the
  ``arc=`` result in it (our verification of the incoming chain), i= one above the chain's newest instance.  Sealed
  with the RSA key in ``data_dir/dkim`` of ``[arc] domain``, else of the forwarding address's domain, else of the
  SRS domain.  A message without our Authentication-Results (submission, trusted networks: nothing was verified)
  or whose chain dkimpy would not continue gets no set; no key, no set.  Blocking: ``sender_for`` reads the store
  (``db_read`` pool), ``seal`` is CPU work (``cpu`` pool).
"""

from __future__ import annotations

import logging
import time

from twisted.logger import Logger

from mailserver.delivery.dkim import DkimSigner
from mailserver.delivery.router import Router, split_address
from mailserver.delivery.srs import SrsError

log = Logger()
_dkim_log = logging.getLogger("mailserver.delivery.forward.dkim")
_dkim_log.addHandler(logging.NullHandler())
_dkim_log.propagate = False


class Forwarder:
    def __init__(self, config, router: Router, signer: DkimSigner | None = None, *, clock=time.time):
        self.hostname = config.hostname
        self.cfg = config.arc
        self.router = router
        self.srs = router.srs
        self.signer = signer if signer is not None else DkimSigner.for_store(router.store)
        self.clock = clock

    @property
    def sealing(self) -> bool:
        return self.cfg.seal

    def sender_for(self, sender: str) -> str:
        """The envelope sender of a forwarded copy (blocking: the domain lookup)."""
        if self.srs is None or not sender:
            return sender  # RFC 5321 4.5.5: the null reverse-path stays null
        _local, domain = split_address(sender)
        if not domain or self.router.is_ours(domain):
            return sender
        try:
            return self.srs.forward(sender, self.clock())
        except SrsError as e:
            log.warn("srs: <{sender}> kept: {why}", sender=sender, why=str(e))
            return sender

    def _key(self, forwarded_by: str):
        """(domain, selector, PEM) of the sealing key, or None."""
        candidates = [self.cfg.domain] if self.cfg.domain else [
            split_address(forwarded_by)[1], self.srs.domain if self.srs is not None else ""]
        for domain in candidates:
            if not domain:
                continue
            for key, private in self.signer.keys(domain):
                if key.algorithm == "rsa":  # RFC 8617 has rsa-sha256 only
                    return domain.lower(), key.selector, private
        return None

    def seal(self, message: bytes, forwarded_by: str) -> bytes:
        """The ARC header fields (CRLF-terminated) to put in front of ``message``; b"" when it gets none."""
        if not self.cfg.seal or len(message) > self.cfg.max_size:
            return b""
        key = self._key(forwarded_by)
        if key is None:
            return b""
        domain, selector, private = key
        import dkim

        try:
            fields = dkim.arc_sign(message, selector.encode("ascii"), domain.encode("ascii"), private,
                                   self.hostname.encode("ascii"), timestamp=int(self.clock()), logger=_dkim_log,
                                   linesep=b"\r\n")
        except Exception as e:  # noqa: BLE001 - a hostile chain or header: forwarded unsealed, never lost
            log.warn("arc: not sealed ({kind}: {why})", kind=type(e).__name__, why=str(e)[:120])
            return b""
        return b"".join(fields)
