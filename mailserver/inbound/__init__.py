"""Inbound protection: checks of received mail (sender authentication, spam and virus scanning, policy).

Sender authentication (``senderauth.py``, one check stage and one body transform of the delivery pipeline), on mail
the MX listener (``smtp``) takes from clients neither authenticated nor in ``smtp.trusted_networks``:

* ``spf.py``       - SPF (RFC 7208) for the HELO and MAIL FROM identities (pyspf);
* ``dkimcheck.py`` - DKIM (RFC 6376) of every signature, RSA and Ed25519 (RFC 8463) (dkimpy);
* ``dmarc.py``     - DMARC (RFC 7489, DMARCbis tree walk): policy discovery, alignment, disposition;
* ``arc.py``       - ARC (RFC 8617) chain validation and the trusted-sealer override (dkimpy);
* ``iprev.py``     - the client's forward-confirmed reverse DNS (RFC 8601 iprev) and HELO facts;
* ``authresults.py`` - the Authentication-Results field (RFC 8601): written, read, stripped when it claims us;
* ``lookups.py``   - DNS through our resolver (``[dns]``) with a time limit, a query count and an answer size
  limit per check.

Content checks (``scanners.py`` registers them after sender authentication): ``clamd.py`` (viruses),
``dnsbl.py`` (DNS block and allow lists, RFC 5782) and ``rspamd.py`` (spam scores), ``policy.py`` (what a score
leads to); ``greylist.py`` (RFC 6647) defers new triplets at RCPT (``smtp/protocol.py``) or after DATA.
"""
