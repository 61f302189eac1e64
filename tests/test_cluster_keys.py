"""What every node sharing a database must use alike lives in it: DKIM keys, the self-signed TLS certificate, and a
heartbeat row per process that ``mailserver node list`` shows.  On SQLite and, with MAILSERVER_TEST_DATABASE_URL, on
PostgreSQL (two nodes on one schema)."""

from __future__ import annotations

import ssl

import dkim
import pytest

from mailserver.cli.main import main as cli_main
from mailserver.config import DnsConfig, parse_address
from mailserver.delivery import dkim as dk
from mailserver.dns import DnsResolver
from mailserver.tls import SELF_SIGNED_CERT, SELF_SIGNED_KEY, generate_self_signed
from tests import harness
from tests.harness import running_server
from tests.outbound.helpers import message, outbound, wait_for
from tests.outbound.receiver import receiver

ZONES = {"remote.test": {"": [("MX", 10, "mx.remote.test")], "mx": [("A", "127.0.0.1")]}}


def _write_config(base, database_url: str, node_name: str = "") -> str:
    path = base / "mailserver.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    db = f'database_url = "{database_url}"\n' if database_url else ""
    node = f'[server]\nnode_name = "{node_name}"\n' if node_name else ""
    path.write_text(f'hostname = "mail.example.test"\ndata_dir = "{base / "data"}"\n{db}{node}'
                    f'[[domain]]\nname = "example.test"\n')
    return str(path)


@pytest.fixture
def shared_pg():
    """A fresh PostgreSQL schema for two nodes (skipped without MAILSERVER_TEST_DATABASE_URL)."""
    base = harness.test_database_url()
    if not base:
        pytest.skip("MAILSERVER_TEST_DATABASE_URL not set")
    url = harness.fresh_pg_url(base)
    yield url
    harness.drop_pg_schema(base, url)


def _verify_all(data: bytes, dns_address: str) -> int:
    resolver = DnsResolver(DnsConfig((parse_address(dns_address, 53),), 1.0))

    def dnsfunc(name, timeout=5):
        return "".join(resolver.txt(name.decode().rstrip("."))).encode()

    d = dkim.DKIM(data)
    count = data.count(b"DKIM-Signature:")
    assert all(d.verify(idx=i, dnsfunc=dnsfunc) for i in range(count))
    return count


def _zone(keys) -> dict:
    return {"example.test": {f"{k.selector}._domainkey": [("TXT", *[k.txt_record()[i:i + 255]
                                                                   for i in range(0, len(k.txt_record()), 255)])]
                             for k in keys}}


def test_mail_relayed_by_node_two_is_signed_with_the_key_made_through_node_one(tmp_path, shared_pg, capsys):
    """`dkim generate` through node 1's configuration; node 2 (its own data_dir, same database) signs with it."""
    cfg1 = _write_config(tmp_path / "one", shared_pg)
    with running_server(tmp_path / "one", listeners=(), database_url=shared_pg):
        assert cli_main(["-c", cfg1, "dkim", "generate", "example.test", "--selector", "n1"]) == 0
        assert "stored in the database" in capsys.readouterr().out
        assert not (tmp_path / "one" / "data" / "dkim").exists()  # no key file on node 1 either
        from mailserver.config import load
        from mailserver.service import open_store

        store = open_store(load(cfg1))
        keys = dk.keys_for(store, "example.test")
        store.engine.dispose()
        assert [k.selector for k in keys] == ["n1", "n1-ed25519"]
        with receiver() as rx, outbound(tmp_path / "two", dict(ZONES, **_zone(keys)),
                                        database_url=shared_pg) as node2:
            node2.runner.port = rx.port
            node2.enqueue(message(body=b"Relayed by node two.\r\n"), ["bob@remote.test"])
            wait_for(lambda: rx.transactions and not node2.queue_rows())
            data = rx.transactions[0].data
            assert b"s=n1;" in data and b"s=n1-ed25519;" in data
            assert _verify_all(data, node2.dns.address) == 2


def test_key_files_of_an_earlier_version_are_imported_once(tmp_path, database_url):
    """Keys under data_dir/dkim go into the database at start; a later start imports nothing, and a key replaced
    in the database is not overwritten by its old file."""
    old = dk.make_keys("example.test", "old")
    kdir = tmp_path / "data" / "dkim"
    kdir.mkdir(parents=True)
    for k in old:
        (kdir / f"{k.domain}.{k.selector}.{k.algorithm}.key").write_bytes(k.private)
    (kdir / "example.test.junk.rsa.key").write_bytes(b"not a key")  # skipped, not fatal
    with running_server(tmp_path, listeners=(), database_url=database_url) as srv:
        got = dk.keys_for(srv.store, "example.test")
        assert [(k.selector, k.private) for k in got] == [(k.selector, k.private) for k in old]
        replaced = dk.generate(srv.store, "example.test", "old", overwrite=True)
        assert dk.import_key_files(srv.store, srv.config.data_dir) == []
        assert [k.private for k in dk.keys_for(srv.store, "example.test")] == [k.private for k in replaced]
        with pytest.raises(dk.DkimError):
            dk.generate(srv.store, "example.test", "old")


def test_dkim_show_and_dns_read_the_database(tmp_path, database_url, capsys):
    cfg = _write_config(tmp_path, database_url)
    assert cli_main(["-c", cfg, "dkim", "show", "example.test"]) == 1
    assert cli_main(["-c", cfg, "dkim", "generate", "example.test"]) == 0
    assert cli_main(["-c", cfg, "dkim", "generate", "example.test"]) == 1  # no silent overwrite
    capsys.readouterr()
    assert cli_main(["-c", cfg, "dkim", "show", "example.test"]) == 0
    shown = capsys.readouterr().out
    assert "mail._domainkey.example.test." in shown and "mail-ed25519._domainkey.example.test." in shown
    assert cli_main(["-c", cfg, "dns", "example.test"]) == 0
    assert "mail._domainkey.example.test." in capsys.readouterr().out


def _served_certificate(port: int) -> str:
    return ssl.get_server_certificate(("127.0.0.1", port))


def test_two_nodes_serve_one_self_signed_certificate(tmp_path, shared_pg):
    """The first node makes it; the second (another data_dir) serves the same one and writes its public copy."""
    with running_server(tmp_path / "one", listeners=("imaps",), database_url=shared_pg) as one, \
            running_server(tmp_path / "two", listeners=("imaps",), database_url=shared_pg) as two:
        pem_one, pem_two = _served_certificate(one.port("imaps")), _served_certificate(two.port("imaps"))
        assert ssl.PEM_cert_to_DER_cert(pem_one) == ssl.PEM_cert_to_DER_cert(pem_two)
        copy = (tmp_path / "two" / "data" / SELF_SIGNED_CERT).read_text()
        assert ssl.PEM_cert_to_DER_cert(copy) == ssl.PEM_cert_to_DER_cert(pem_two)
        assert not (tmp_path / "two" / "data" / SELF_SIGNED_KEY).exists()  # the key stays in the database


def test_a_self_signed_pair_left_in_data_dir_is_imported(tmp_path, database_url):
    """An upgrade keeps serving the certificate clients already trust."""
    cert = tmp_path / "data" / SELF_SIGNED_CERT
    generate_self_signed("mail.example.test", cert, tmp_path / "data" / SELF_SIGNED_KEY)
    before = cert.read_text()
    with running_server(tmp_path, listeners=("imaps",), database_url=database_url) as srv:
        served = _served_certificate(srv.port("imaps"))
    assert ssl.PEM_cert_to_DER_cert(served) == ssl.PEM_cert_to_DER_cert(before)


def test_node_list_shows_each_live_process_and_forgets_a_stopped_one(tmp_path, database_url, capsys):
    """A heartbeat row per server process: `node list` names the node, its role and listeners; gone after stop."""
    cfg = _write_config(tmp_path / "cli", database_url)
    data_dir = tmp_path / "cli" / "data"  # SQLite: the CLI and the server must open the same file
    with running_server(tmp_path / "cli", listeners=("imap",), database_url=database_url,
                        server={"node_name": "node-a"}) as srv:
        srv.wait_for(lambda: srv.server.heartbeat.beats >= 1)
        assert cli_main(["-c", cfg, "node", "list"]) == 0
        out = capsys.readouterr().out
        line = next(ln for ln in out.splitlines() if ln.startswith("node-a\t"))
        assert "\tserve\t" in line and "\talive\t" in line and f"imap=127.0.0.1:{srv.port('imap')}" in line
        assert "1 node(s), 1 live process(es)" in out
    assert data_dir.exists()
    assert cli_main(["-c", cfg, "node", "list", "--all"]) == 0
    assert "0 node(s), 0 live process(es)" in capsys.readouterr().out


def test_a_process_that_stopped_beating_is_dead(tmp_path, database_url):
    """Rows expire after three missed heartbeats and are forgotten a day later (times are the beater's clock)."""
    from mailserver.nodes import FORGET_AFTER, beat_blocking, list_nodes

    with running_server(tmp_path, listeners=(), database_url=database_url) as srv:
        srv.wait_for(lambda: srv.server.heartbeat.beats >= 1)
        beat_blocking(srv.store, holder="gone:1", node="node-b", role="serve", started=1000.0, now=1000.0, ttl=30.0,
                      listeners=("smtp=127.0.0.1:25",))
        rows = {r.holder: r for r in list_nodes(srv.store)}
        assert not rows["gone:1"].alive(1030.0) and rows["gone:1"].alive(1029.0)
        assert rows["gone:1"].listeners == ("smtp=127.0.0.1:25",)
        me = rows[srv.server.heartbeat.holder]
        assert me.node and me.role == "serve"
        beat_blocking(srv.store, holder="late:1", node="node-c", role="serve", started=0.0,
                      now=1031.0 + FORGET_AFTER, ttl=30.0, listeners=())
        holders = {r.holder for r in list_nodes(srv.store)}
        assert "gone:1" not in holders and "late:1" in holders
