"""Shared set-up of the sender authentication tests: the test zones, keys, a server whose DNS is a loopback server.

The SMTP client is 127.0.0.1, so the SPF records below say 127.0.0.1 (pass) or another address (fail).  The PTR of
127.0.0.1 is mx.sender.test, which resolves back to 127.0.0.1 (iprev pass); the HELO used is the same name.
"""

from __future__ import annotations

import base64
import smtplib
from contextlib import ExitStack, contextmanager

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from mailserver.delivery import dkim as outbound_dkim
from tests import harness
from tests.dnsserver import dns_server

HOST = harness.TEST_HOSTNAME  # our authserv-id
RCPT = "bob@example.test"
HELO = "mx.sender.test"
IPREV_PASS = "iprev=pass (mx.sender.test) policy.iprev=127.0.0.1"


def rsa_key(bits: int = 1024) -> tuple[bytes, str]:
    """(PEM private key, the p= of its DNS record)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                            serialization.NoEncryption())
    der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return pem, base64.b64encode(der).decode()


def ed25519_key() -> tuple[bytes, str]:
    key = ed25519.Ed25519PrivateKey.generate()
    seed = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    pub = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(seed), base64.b64encode(pub).decode()


def txt(value: str) -> tuple:
    """A TXT record of ``value`` split into 255-byte strings."""
    return ("TXT", *([value[i:i + 255] for i in range(0, len(value), 255)] or [""]))


class Keys:
    """Signing keys made once per test module: ours (outbound DkimSigner), dkimpy's, the forwarder's ARC key."""

    def __init__(self, tmp_path):
        self.ours = outbound_dkim.make_keys("sender.test", "ours")  # RSA "ours", Ed25519 "ours-ed25519"
        self.signer = outbound_dkim.DkimSigner(lambda domain: [k for k in self.ours if k.domain == domain])
        self.direct_pem, self.direct_p = rsa_key()
        self.ed_seed, self.ed_p = ed25519_key()
        self.arc_pem, self.arc_p = rsa_key()

    def records(self) -> dict:
        out = {f"{k.selector}._domainkey": [txt(k.txt_record())] for k in self.ours}
        out["direct._domainkey"] = [txt(f"v=DKIM1; k=rsa; p={self.direct_p}")]
        out["ed._domainkey"] = [txt(f"v=DKIM1; k=ed25519; p={self.ed_p}")]
        return out


def zones(keys: Keys, extra: dict | None = None) -> dict:
    sender = {
        "": [txt("v=spf1 ip4:127.0.0.1 -all"), ("A", "192.0.2.10")],
        "mx": [("A", "127.0.0.1"), txt("v=spf1 a -all")],
        "_dmarc": [txt("v=DMARC1; p=reject")],
        "fail": [txt("v=spf1 ip4:192.0.2.1 -all")],
        "soft": [txt("v=spf1 ip4:192.0.2.1 ~all")],
        "neutral": [txt("v=spf1 ?all")],
        "nospf": [("A", "192.0.2.11")],
        "perm": [txt("v=spf1 ip4:127.0.0.1 bogus:x -all")],
        "loop": [txt("v=spf1 include:loop2.sender.test -all")],
        "loop2": [txt("v=spf1 include:loop.sender.test -all")],
        "void": [txt("v=spf1 a:nx1.sender.test a:nx2.sender.test a:nx3.sender.test ip4:127.0.0.1 -all")],
        "many": [txt("v=spf1 " + " ".join(f"a:h{i}.sender.test" for i in range(11)) + " ip4:127.0.0.1 -all")],
        "big": [txt("v=spf1 ip4:127.0.0.1 -all"), *[txt(f"{i:03d}" + "x" * 247) for i in range(70)]],
        **{f"h{i}": [("A", "192.0.2.20")] for i in range(11)},
        **keys.records(),
    }
    z = {
        "sender.test": sender,
        "quar.test": {"": [txt("v=spf1 ip4:127.0.0.1 -all")], "_dmarc": [txt("v=DMARC1; p=quarantine")],
                      "out": [txt("v=spf1 -all")]},
        "other.test": {"": [txt("v=spf1 ip4:127.0.0.1 -all")]},
        "fwd.test": {"": [txt("v=spf1 ip4:127.0.0.1 -all")],
                     "arc._domainkey": [txt(f"v=DKIM1; k=rsa; p={keys.arc_p}")]},
        "127.in-addr.arpa": {"1.0.0": [("PTR", HELO)]},
    }
    for zone, names in (extra or {}).items():
        z.setdefault(zone, {}).update(names)
    return z


class Env:
    def __init__(self, srv, dns):
        self.srv, self.dns = srv, dns

    def send(self, raw: bytes, sender: str, rcpts=(RCPT,), helo: str = HELO):
        """Send over SMTP to the MX listener; returns sendmail's refused dict or raises its SMTP exception."""
        with smtplib.SMTP("127.0.0.1", self.srv.port("smtp"), local_hostname=helo, timeout=60) as c:
            return c.sendmail(sender, list(rcpts), raw)

    def messages(self, address: str = RCPT, mailbox: str = "INBOX") -> list[tuple[bytes, tuple]]:
        """(stored bytes, keywords) of every message in ``mailbox``."""
        store = self.srv.store
        acct = store.get_account(address)
        mb = store.get_mailbox(acct.id, mailbox)
        if mb is None:
            return []
        metas = store.list_messages(mb.id)
        msgs = store.get_messages(mb.id, [m.uid for m in metas])
        return [(store.read_blob(m.blob_id), tuple(m.keywords)) for m in msgs]

    def held(self) -> list[tuple[str, str, bytes]]:
        """(account, reason, held bytes) of every copy in the quarantine, oldest first."""
        store = self.srv.store
        _n, items = store.list_quarantined()
        return [(i.account, i.reason, store.read_blob(i.blob_id)) for i in reversed(items)]

    def only(self, address: str = RCPT, mailbox: str = "INBOX") -> bytes:
        msgs = self.messages(address, mailbox)
        assert len(msgs) == 1, msgs
        return msgs[0][0]


def auth_results(stored: bytes) -> list[str]:
    """The Authentication-Results fields of a stored message, unfolded to one line each (CRLF TAB -> TAB)."""
    head = stored.split(b"\r\n\r\n", 1)[0].decode()
    fields, cur = [], None
    for line in head.split("\r\n"):
        if line[:1] in (" ", "\t") and cur is not None:
            cur += "\r\n" + line
            continue
        if cur is not None:
            fields.append(cur)
        cur = line
    if cur is not None:
        fields.append(cur)
    return [f.split(":", 1)[1].lstrip(" ") for f in fields if f.lower().startswith("authentication-results:")]


@contextmanager
def senderauth_server(tmp_path, keys: Keys, *, extra_zones=None, servfail=(), hang=(), database_url="",
                      rcpts=(RCPT,), **config):
    with ExitStack() as stack:
        dns = stack.enter_context(dns_server(zones(keys, extra_zones), hang=set(hang), servfail=set(servfail)))
        config.setdefault("dns", {"nameservers": [dns.address], "timeout": 2.0})
        config["senderauth"] = {"enabled": True, **config.get("senderauth", {})}
        srv = stack.enter_context(harness.running_server(tmp_path / "server", listeners=("smtp",),
                                                         database_url=database_url, **config))
        for r in rcpts:
            if srv.store.get_account(r) is None:
                srv.add_user(r, "pw")
        yield Env(srv, dns)


def message(sender: str = "alice@sender.test", subject: str = "hello", body: bytes = b"Hello there.\r\n",
            extra: str = "") -> bytes:
    return (f"From: Alice <{sender}>\r\nTo: <{RCPT}>\r\nSubject: {subject}\r\n"
            f"Date: Mon, 01 Jan 2024 00:00:00 +0000\r\nMessage-ID: <{subject.replace(' ', '.')}@sender.test>\r\n"
            f"{extra}\r\n").encode() + body
