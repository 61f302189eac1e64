"""Shared set-up of the forwarding tests: our server (MX port, sender authentication over a loopback DNS server,
SRS on, its own queue runner) forwarding to a receiving SMTP server on loopback that is the MX of remote.test."""

from __future__ import annotations

import smtplib
from contextlib import ExitStack, contextmanager

import dns.resolver

from mailserver.delivery import dkim as outbound_dkim
from tests import harness
from tests.dnsserver import dns_server
from tests.inbound.senderauth_env import HELO, Keys, txt, zones
from tests.outbound.helpers import wait_for
from tests.outbound.receiver import receiver

ALIAS = "fwd@example.test"
TARGET = "carol@remote.test"


class Env:
    def __init__(self, srv, dns, rx):
        self.srv, self.dns, self.rx = srv, dns, rx

    @property
    def srs(self):
        return self.srv.services.router.srs

    def send(self, raw: bytes, sender: str, rcpts=(ALIAS,), helo: str = HELO):
        with smtplib.SMTP("127.0.0.1", self.srv.port("smtp"), local_hostname=helo, timeout=60) as c:
            return c.sendmail(sender, list(rcpts), raw)

    def rcpt(self, address: str, sender: str = "") -> tuple[int, bytes]:
        """RCPT's reply to ``address`` (MAIL FROM ``sender``)."""
        with smtplib.SMTP("127.0.0.1", self.srv.port("smtp"), local_hostname=HELO, timeout=60) as c:
            c.ehlo(HELO)
            code, _ = c.mail(sender)
            assert code == 250
            return c.rcpt(address)

    def received(self, n: int = 1):
        """The receiver's first ``n`` finished transactions (waits for them)."""
        wait_for(lambda: len([t for t in self.rx.transactions if t.data]) >= n, timeout=30)
        return [t for t in self.rx.transactions if t.data][:n]

    def dnsfunc(self):
        """dkimpy's DNS hook over the loopback DNS server (for arc_verify)."""
        host, port = self.dns.address.split(":")
        r = dns.resolver.Resolver(configure=False)
        r.nameservers, r.port = [host], int(port)

        def lookup(name, timeout=5):
            name = name.decode() if isinstance(name, bytes) else name
            try:
                answer = r.resolve(name.rstrip("."), "TXT", lifetime=timeout)
            except dns.exception.DNSException:
                return None
            return b"".join(answer[0].strings)

        return lookup


@contextmanager
def forwarding_server(tmp_path, keys: Keys, *, rcpt=None, senderauth=None, srs=None, arc_key: bool = True,
                      **config):
    data_dir = tmp_path / "server" / "data"
    ours = outbound_dkim.make_keys("example.test", "mail") if arc_key else []
    for k in ours:  # key files under data_dir/dkim go into the database when the server starts
        (data_dir / "dkim").mkdir(parents=True, exist_ok=True)
        (data_dir / "dkim" / f"{k.domain}.{k.selector}.{k.algorithm}.key").write_bytes(k.private)
    z = zones(keys, {
        "remote.test": {"": [("MX", 10, "mx.remote.test")], "mx": [("A", "127.0.0.1")]},
        "example.test": {f"{k.selector}._domainkey": [txt(k.txt_record())] for k in ours},
    })
    with ExitStack() as stack:
        dns = stack.enter_context(dns_server(z))
        rx = stack.enter_context(receiver(rcpt=rcpt))
        srv = stack.enter_context(harness.running_server(
            tmp_path / "server", listeners=("smtp",), dns={"nameservers": [dns.address], "timeout": 2.0},
            senderauth={"enabled": True, **(senderauth or {})}, srs={"enabled": True, **(srs or {})},
            queue={"run": True, "retry_first": 3600.0}, queue_options={"port_map": {"mx.remote.test": rx.port}},
            **config))
        srv.store.add_alias(ALIAS, TARGET)
        yield Env(srv, dns, rx)
