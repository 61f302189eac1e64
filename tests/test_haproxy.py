"""HAProxy (the Debian package) in TCP mode with ``send-proxy-v2`` in front of two `mailserver serve` nodes on one
PostgreSQL database, all on 127.0.0.1: SMTP, IMAP (STARTTLS), POP3 (STLS) and the webmail (HTTPS, TLS passed
through) work through it; HAProxy checks each node's /healthz on its metrics listener; a hand-written PROXY header
naming 192.0.2.7 shows that the nodes' logs, Received fields and login throttling use the client's address; a PROXY
header from an untrusted peer is refused; and a node SIGKILLed under load loses no acknowledged message: every
message answered 250 is in the mailbox, and its queued copy for a relay domain is delivered by the other node once the
dead node's lease on it has expired.

Waits are bounded polls for an outcome, never measured durations.
"""

from __future__ import annotations

import email
import http.client
import imaplib
import poplib
import re
import shutil
import smtplib
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path

import pytest

from mailserver.proxywire import v2_header
from tests import harness
from tests import proxyclients as pc
from tests.outbound.receiver import receiver
from tests.processes import popen
from tests.test_cluster_nodes import _Lines, wait_for

pytestmark = [pytest.mark.postgres,
              pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed")]

ROOT = Path(__file__).resolve().parents[1]
ALICE, PW = "alice@example.test", "alice-secret"
LIMIT = 4
PROTOCOLS = ("smtp", "imap", "pop3", "https")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Node:
    """One `mailserver serve` process: smtp, imap, pop3 and https behind the balancer, metrics direct."""

    def __init__(self, tmp_path: Path, name: str, url: str, relay_port: int):
        data = tmp_path / name
        data.mkdir()
        conf = data / "mailserver.toml"
        proxied = "".join(f'{p} = ["127.0.0.1:0"]\n' for p in PROTOCOLS)
        conf.write_text(
            f'hostname = "{name}.example.test"\ndata_dir = "{data}"\ndatabase_url = "{url}"\n'
            "[server]\nworkers = 1\n"  # one process per node: the test SIGKILLs a node
            f'[listen]\nmetrics = ["127.0.0.1:0"]\n[listen_proxied]\n{proxied}'
            '[proxy]\ntrusted = ["127.0.0.1/32"]\n'
            '[store]\nblobs = "database"\n'
            f"[limits]\nauth_max_failures_per_ip = {LIMIT}\nauth_max_failures_per_account = 1000\n"
            "auth_max_delay = 0.0\n"
            "[queue]\nrun = true\nretry_first = 1.0\nretry_max = 2.0\nlease = 6.0\n"
            '[dns]\nnameservers = ["127.0.0.1:9"]\ntimeout = 2.0\n'
            '[[domain]]\nname = "example.test"\n'
            f'[[domain]]\nname = "relay.test"\nmode = "relay"\nrelay_to = "127.0.0.1:{relay_port}"\n')
        self.proc = popen([sys.executable, "-m", "mailserver", "--config", str(conf), "serve"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
        try:
            self.out, self.err = _Lines(self.proc.stdout), _Lines(self.proc.stderr)
            assert self.out.wait_for("Stop with Ctrl-C"), self.out.text() + self.err.text()
            assert self.err.wait_for("listening https on"), self.err.text()  # the last listener named
            text = self.err.text()
            self.ports = {m.group(1): int(m.group(2))
                          for m in re.finditer(r"listening (\w+) on 127\.0\.0\.1:(\d+) \(PROXY protocol\)", text)}
            assert set(self.ports) == set(PROTOCOLS), text
            self.metrics = int(re.search(r"listening metrics on 127\.0\.0\.1:(\d+)\n", text).group(1))
        except BaseException:
            self.stop()  # a start-up that failed leaves nothing running
            raise

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()


class Balancer:
    """HAProxy on 127.0.0.1, one frontend per protocol, round robin over the nodes, /healthz checks."""

    def __init__(self, tmp_path: Path, nodes: list[Node]):
        self.ports = {p: free_port() for p in PROTOCOLS}
        lines = ["global", "    maxconn 2000",
                 "defaults", "    mode tcp", "    timeout connect 5s", "    timeout client 120s",
                 "    timeout server 120s", "    timeout check 5s", "    retries 3", "    option redispatch",
                 "    default-server inter 500ms fastinter 250ms downinter 500ms fall 2 rise 2"]
        for p in PROTOCOLS:
            lines += [f"frontend f_{p}", f"    bind 127.0.0.1:{self.ports[p]}", f"    default_backend b_{p}",
                      f"backend b_{p}", "    balance roundrobin", "    option httpchk GET /healthz",
                      "    http-check expect status 200"]
            lines += [f"    server n{i} 127.0.0.1:{n.ports[p]} send-proxy-v2 check port {n.metrics}"
                      for i, n in enumerate(nodes, 1)]
        cfg = tmp_path / "haproxy.cfg"
        cfg.write_text("\n".join(lines) + "\n")
        check = subprocess.run(["haproxy", "-c", "-f", str(cfg)], capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
        self.proc = popen(["haproxy", "-db", "-f", str(cfg)], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
        self.log = _Lines(self.proc.stdout)
        for port in self.ports.values():
            wait_for(lambda port=port: _accepts(port), what=f"haproxy listening on {port}")

    def port(self, protocol: str) -> int:
        return self.ports[protocol]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        return True
    except OSError:
        return False


@pytest.fixture
def setup(tmp_path):
    """(nodes, balancer, receiver, receiver_open): the relay receiver answers 451 until receiver_open is set."""
    base = harness.test_database_url()
    if not base:
        pytest.skip("MAILSERVER_TEST_DATABASE_URL not set")
    url = harness.fresh_pg_url(base)
    _prepare_database(url)
    opened = threading.Event()
    nodes: list[Node] = []
    balancer = None
    with receiver(rcpt=lambda a: "250 2.1.5 OK" if opened.is_set() else "451 4.3.0 not yet") as rx:
        try:
            for i in (1, 2):
                nodes.append(Node(tmp_path, f"n{i}", url, rx.port))  # each one started is stopped below
            balancer = Balancer(tmp_path, nodes)
            # Both nodes healthy in HAProxy's eyes before the test begins.
            wait_for(lambda: all(_smtp_banner(balancer) for _ in range(4)), what="both nodes answer")
            yield nodes, balancer, rx, opened
        finally:
            if balancer is not None:
                balancer.stop()
            for n in nodes:
                n.stop()
            harness.drop_pg_schema(base, url)


def _prepare_database(url: str) -> None:
    from mailserver.auth import PasswordHasher
    from storage import migrate
    from storage.blobs import DatabaseBlobStore
    from storage.db import make_engine
    from storage.store import Store

    engine = make_engine(url)
    try:
        migrate.upgrade(engine)
        store = Store(engine, DatabaseBlobStore(engine))
        store.ensure_domain("example.test")
        store.add_account(ALICE, PasswordHasher("argon2").hash(PW))
    finally:
        engine.dispose()


def _smtp_banner(balancer: Balancer) -> bool:
    try:
        with smtplib.SMTP("127.0.0.1", balancer.port("smtp"), timeout=10) as c:
            return c.noop()[0] == 250
    except (OSError, smtplib.SMTPException):
        return False


def _message(subject: str, to: str = ALICE) -> bytes:
    return f"From: bob@example.net\r\nTo: {to}\r\nSubject: {subject}\r\n\r\n{subject}\r\n".encode()


def _imap_subjects(port: int) -> list[str]:
    c = imaplib.IMAP4("127.0.0.1", port, timeout=30)
    try:
        c.starttls(pc.client_tls())
        c.login(ALICE, PW)
        c.select("INBOX", readonly=True)
        _typ, data = c.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        return [email.message_from_bytes(d[1])["Subject"] for d in data if isinstance(d, tuple)]
    finally:
        c.logout()


def _imap_login(port: int, header: bytes, password: str) -> str:
    c = pc.IMAP4(port, header)
    try:
        c.starttls(pc.client_tls())
        c.login(ALICE, password)
        return "ok"
    except imaplib.IMAP4.error as e:
        return str(e)
    finally:
        c.logout()


def _webmail(port: int) -> bytes:
    """Sign in through the balancer and return the inbox page."""
    def request(method, path, body=b"", headers=None, cookies=None):
        conn = http.client.HTTPSConnection("127.0.0.1", port, context=pc.client_tls(), timeout=30)
        h = {"Host": f"127.0.0.1:{port}", **(headers or {})}
        if cookies:
            h["Cookie"] = "; ".join(f"{k}={v}" for k, v in cookies.items())
        conn.request(method, path, body=body, headers=h)
        r = conn.getresponse()
        data = r.read()
        jar = dict(cookies or {})
        for c in r.headers.get_all("Set-Cookie") or []:
            k, v = c.split(";", 1)[0].split("=", 1)
            jar[k] = v
        conn.close()
        return r, data, jar

    _r, page, jar = request("GET", "/login")
    pre = re.search(rb'name="_pre" value="([^"]+)"', page).group(1).decode()
    body = urllib.parse.urlencode({"_pre": pre, "username": ALICE, "password": PW, "next": "/"}).encode()
    r, _page, jar = request("POST", "/login", body, {"Content-Type": "application/x-www-form-urlencoded"}, jar)
    assert r.status == 303, r.status
    location = "/"
    for _ in range(3):  # / -> the inbox
        r, page, jar = request("GET", location, cookies=jar)
        if r.status != 303:
            break
        location = r.headers["Location"]
    assert r.status == 200
    return page


def test_every_protocol_works_through_haproxy_and_the_client_address_is_used(setup):
    nodes, lb, _rx, _opened = setup
    for i in range(4):  # round robin: two on each node
        with smtplib.SMTP("127.0.0.1", lb.port("smtp"), timeout=30) as c:
            c.sendmail("bob@example.net", [ALICE], _message(f"through haproxy {i}"))
    for n in nodes:
        assert n.err.count("client=127.0.0.1 ok") >= 1, n.err.text()  # each node served some, naming the client
    subjects = _imap_subjects(lb.port("imap"))
    assert sorted(s for s in subjects if s.startswith("through")) == [f"through haproxy {i}" for i in range(4)]
    p = poplib.POP3("127.0.0.1", lb.port("pop3"), timeout=30)
    p.stls(pc.client_tls())
    p.user(ALICE)
    p.pass_(PW)
    assert p.stat()[0] == 4
    p.quit()
    assert b"through haproxy 3" in _webmail(lb.port("https"))

    # A trusted balancer's header naming 192.0.2.7, written by hand to node 1: Received field and log name it.
    with pc.SMTP(nodes[0].ports["smtp"], v2_header(("192.0.2.7", 4711), ("198.51.100.1", 25)), timeout=30) as c:
        c.sendmail("bob@example.net", [ALICE], _message("claimed client"))
    assert nodes[0].err.wait_for("client=192.0.2.7 ok", timeout=30)
    c = imaplib.IMAP4("127.0.0.1", lb.port("imap"), timeout=30)
    c.starttls(pc.client_tls())
    c.login(ALICE, PW)
    c.select("INBOX", readonly=True)
    _typ, data = c.search(None, '(SUBJECT "claimed client")')
    _typ, fetched = c.fetch(data[0].split()[0].decode(), "(BODY.PEEK[HEADER.FIELDS (RECEIVED)])")
    c.logout()
    assert re.match(rb"Received: from \S+ \(\[192\.0\.2\.7\]\)", fetched[0][1]), fetched[0][1]

    # Throttling counts 192.0.2.7, across both nodes (one count in the database): failures spread over them throttle
    # it on both, while 192.0.2.8 (and the balancer's own 127.0.0.1) still sign in.
    claimed = v2_header(("192.0.2.7", 1))
    for i in range(LIMIT):
        assert "AUTHENTICATIONFAILED" in _imap_login(nodes[i % 2].ports["imap"], claimed, "wrong")
    for n in nodes:
        assert "UNAVAILABLE" in _imap_login(n.ports["imap"], claimed, PW)
        assert _imap_login(n.ports["imap"], v2_header(("192.0.2.8", 1)), PW) == "ok"
    assert _imap_subjects(lb.port("imap"))
    assert nodes[0].err.count(f"login failed for '{ALICE}' from 192.0.2.7 via imap") >= 1
    assert nodes[1].err.count(f"login throttled for '{ALICE}' from 192.0.2.7 via imap") >= 1

    # The same header from 127.0.0.2, which is not trusted: closed at accept, without a greeting.
    s = pc.proxied_socket(nodes[0].ports["smtp"], v2_header(("192.0.2.7", 1)), source="127.0.0.2")
    s.settimeout(30)
    try:
        assert s.recv(100) == b""
    except ConnectionResetError:
        pass
    s.close()
    assert nodes[0].err.wait_for("connection from 127.0.0.2 refused: not a trusted proxy", timeout=30)


def test_killing_a_node_under_load_loses_no_acknowledged_message(setup):
    """Three senders through HAProxy, each message to alice (local) and to a relay domain (queued); node 1 is
    SIGKILLed after a third of them.  A sender retries what was not answered 250, as an MTA would.  Then every
    acknowledged message is in alice's mailbox, and once the relay receiver accepts, node 2 delivers every queued copy
    (its own, and node 1's after their lease expired)."""
    nodes, lb, rx, opened = setup
    total, kill_after = 36, 12
    acked: list[str] = []
    lock = threading.Lock()
    next_id = iter(range(total))
    killed = threading.Event()

    def sender():
        while True:
            with lock:
                n = next(next_id, None)
            if n is None:
                return
            subject = f"load {n}"
            for _attempt in range(30):
                try:
                    with smtplib.SMTP("127.0.0.1", lb.port("smtp"), timeout=30) as c:
                        c.sendmail("bob@example.net", [ALICE, "bob@relay.test"], _message(subject))
                    with lock:
                        acked.append(subject)
                    break
                except (OSError, smtplib.SMTPException):
                    time.sleep(0.2)  # not acknowledged: try again (the MTA's retry)

    threads = [threading.Thread(target=sender) for _ in range(3)]
    for t in threads:
        t.start()
    wait_for(lambda: len(acked) >= kill_after, timeout=120, what="first acknowledgements")
    served_by_n1 = nodes[0].err.count("to=<alice@example.test>")
    nodes[0].kill()
    killed.set()
    for t in threads:
        t.join(timeout=300)
    assert served_by_n1 > 0  # node 1 had acknowledged messages before it died
    assert sorted(acked) == sorted(f"load {i}" for i in range(total))  # node 2 served on

    inbox = _imap_subjects(lb.port("imap"))
    assert set(acked) <= set(inbox)

    opened.set()

    def relayed() -> set[str]:
        with rx.lock:
            txs = list(rx.transactions)
        return {email.message_from_bytes(tx.data)["Subject"] for tx in txs if "bob@relay.test" in tx.rcpts}

    wait_for(lambda: set(acked) <= relayed(), timeout=120, what="every queued copy relayed by node 2")
