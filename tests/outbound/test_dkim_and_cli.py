"""DKIM signing verified against the published record, the queue/dkim/dns commands, and safe claiming."""

from __future__ import annotations

import threading

import dkim

from mailserver.cli.main import main as cli_main
from mailserver.config import DnsConfig, parse_address
from mailserver.delivery import dkim as dk
from mailserver.dns import DnsResolver
from storage.queue import QueueStore
from storage.store import QueueRecipientSpec
from tests import harness
from tests.outbound.helpers import message, outbound, wait_for
from tests.outbound.receiver import receiver

ZONES = {"remote.test": {"": [("MX", 10, "mx.remote.test")], "mx": [("A", "127.0.0.1")]}}


def _write_config(tmp_path, database_url="") -> str:
    path = tmp_path / "mailserver.toml"
    db = f'database_url = "{database_url}"\n' if database_url else ""
    path.write_text(f'hostname = "mail.example.test"\ndata_dir = "{tmp_path / "data"}"\n{db}'
                    f'[listen]\nsubmissions = ["127.0.0.1:0"]\n[[domain]]\nname = "example.test"\n')
    return str(path)


def test_signed_message_verifies_against_the_published_key_record(tmp_path, capsys):
    """`dkim generate` + `dns` print the records; served by a real DNS server, both signatures verify."""
    cfg = _write_config(tmp_path)
    assert cli_main(["-c", cfg, "dkim", "generate", "example.test"]) == 0
    assert cli_main(["-c", cfg, "dkim", "generate", "example.test"]) == 1  # no silent overwrite
    capsys.readouterr()
    assert cli_main(["-c", cfg, "dns", "example.test", "--ip", "192.0.2.7"]) == 0
    out = capsys.readouterr().out
    assert "example.test. 3600 IN MX 10 mail.example.test." in out
    assert '"v=spf1 mx -all"' in out and "_dmarc.example.test." in out
    assert "_submissions._tcp.example.test. 3600 IN SRV 0 1 465 mail.example.test." in out
    assert "_imap._tcp.example.test. 3600 IN SRV 0 0 0 ." in out
    assert "_sieve._tcp.example.test. 3600 IN SRV 0 0 0 ." in out
    assert "autoconfig.example.test. 3600 IN CNAME mail.example.test." in out
    assert "7.2.0.192.in-addr.arpa. 3600 IN PTR mail.example.test." in out
    from mailserver.config import load
    from mailserver.service import open_store

    store = open_store(load(cfg))
    keys = dk.keys_for(store, "example.test")
    store.engine.dispose()
    assert [k.algorithm for k in keys] == ["rsa", "ed25519"]
    for k in keys:
        assert f"{k.record_name}." in out
    zone = {f"{k.selector}._domainkey": [("TXT", *[k.txt_record()[i:i + 255] for i in range(0, len(k.txt_record()),
                                                                                             255)])] for k in keys}
    with receiver() as rx, outbound(tmp_path, dict(ZONES, **{"example.test": zone})) as ob:
        # the server under test uses the same data_dir (tmp_path/data), so it signs with the generated keys
        ob.runner.port = rx.port
        ob.enqueue(message(body=b"Signed body.\r\n.leading dot\r\n"), ["bob@remote.test"])
        wait_for(lambda: rx.transactions and not ob.queue_rows())
        data = rx.transactions[0].data
        assert data.count(b"DKIM-Signature:") == 2
        resolver = DnsResolver(DnsConfig((parse_address(ob.dns.address, 53),), 1.0))

        def dnsfunc(name, timeout=5):
            return "".join(resolver.txt(name.decode().rstrip("."))).encode()

        d = dkim.DKIM(data)
        assert d.verify(idx=0, dnsfunc=dnsfunc) and d.verify(idx=1, dnsfunc=dnsfunc)
        # a changed body no longer verifies
        try:
            forged_ok = dkim.DKIM(data.replace(b"Signed body", b"Forged body")).verify(dnsfunc=dnsfunc)
        except dkim.ValidationError:  # dkimpy raises on a body hash mismatch
            forged_ok = False
        assert not forged_ok


def test_unprotected_from_domain_is_not_signed(tmp_path):
    with receiver() as rx, outbound(tmp_path, ZONES) as ob:
        dk.generate(ob.store, "example.test", "mail")
        ob.runner.port = rx.port
        ob.enqueue(message(sender="someone@elsewhere.test"), ["bob@remote.test"])
        wait_for(lambda: rx.transactions and not ob.queue_rows())
        assert b"DKIM-Signature" not in rx.transactions[0].data


def test_queue_commands(tmp_path, capsys, database_url):
    """list/show/retry/delete/bounce work on the database; bounce makes the runner report to the sender."""
    cfg = _write_config(tmp_path, database_url)
    with receiver(rcpt=lambda a: "451 4.3.0 later") as rx, outbound(tmp_path, ZONES, database_url=database_url,
                                                                     start=False) as ob:
        ob.runner.port = rx.port
        q1 = ob.enqueue(message(subject="one"), ["a@remote.test", "b@remote.test"])
        q2 = ob.enqueue(message(subject="two"), ["c@remote.test"])
        assert cli_main(["-c", cfg, "queue", "list"]) == 0
        out = capsys.readouterr().out
        assert "a@remote.test (pending)" in out and "2 message(s)" in out
        assert cli_main(["-c", cfg, "queue", "show", str(q1), "--body"]) == 0
        assert "Subject: one" in capsys.readouterr().out
        assert cli_main(["-c", cfg, "queue", "show", "999"]) == 1
        assert cli_main(["-c", cfg, "queue", "delete", str(q2)]) == 0
        assert cli_main(["-c", cfg, "queue", "delete", str(q2)]) == 1
        assert [e.message.public_id for e in ob.queue_rows()] == [q1]
        harness.call(ob.runner.start)
        wait_for(lambda: all(r.attempts == 1 for e in ob.queue_rows() for r in e.recipients))
        assert cli_main(["-c", cfg, "queue", "retry", str(q1)]) == 0
        assert "2 recipient(s) due now" in capsys.readouterr().out
        assert cli_main(["-c", cfg, "queue", "bounce", str(q1)]) == 0
        harness.call(ob.runner.kick)
        wait_for(lambda: not ob.queue_rows() and ob.inbox())
        report = ob.inbox()[0]
        assert b"Action: failed" in report and b"Status: 5.0.0" in report
        assert b"Final-Recipient: rfc822; a@remote.test" in report
        # the blob reference of the finished and the deleted message is gone
        with ob.store.engine.connect() as conn:
            refs = conn.exec_driver_sql("SELECT SUM(refcount) FROM blobs").scalar()
        assert refs == 1  # only the report in the INBOX


def test_concurrent_claims_never_share_a_recipient(tmp_path, database_url):
    """Several claimers at once (threads here; processes in production) get disjoint work (SKIP LOCKED / lease)."""
    from mailserver.service import open_store

    cfg = harness.make_config(tmp_path, (), database_url=database_url)
    store = open_store(cfg)
    try:
        ref = store.blobs.put(message())
        for i in range(40):
            store.enqueue("a@example.test", ref, [QueueRecipientSpec(f"u{i}@d{i % 4}.test")], next_attempt=0)
        qs = QueueStore(store)
        got: list[list[int]] = [[] for _ in range(4)]

        def work(k):
            while True:
                items = qs.claim(1000.0, 300.0, 3, 100)
                if not items:
                    return
                got[k].extend(r.id for item in items for r in item.recipients)

        threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        ids = [i for g in got for i in g]
        assert len(ids) == 40 and len(set(ids)) == 40
        assert qs.claim(1000.0, 300.0, 100) == []  # leased
        assert len([r for item in qs.claim(1301.0, 300.0, 100) for r in item.recipients]) == 40  # lease over
    finally:
        store.engine.dispose()
