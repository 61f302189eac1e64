"""Two `mailserver serve` processes on one PostgreSQL database behave as one server: the POP3 maildrop lock, login
throttling and \\Recent span both nodes, and a node whose LISTEN connection is killed catches up when it is back.

Every test runs real processes (SIGKILL included) on a fresh schema and drives them with real clients; waits are
bounded polls for an outcome, never measured durations.
"""

from __future__ import annotations

import poplib
import random
import re
import signal
import smtplib
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests import harness
from tests.imap.imap_client import Raw
from tests.processes import popen

pytestmark = pytest.mark.postgres

ROOT = Path(__file__).resolve().parents[1]
ALICE = "alice@example.test"
PW = "alice-secret"
LIMIT = 10  # failed logins per IP and per account before "throttled"


def wait_for(condition, timeout: float = 20.0, what: str = "condition"):
    """Poll ``condition()`` until it returns something true; fail after ``timeout`` seconds (a bound only)."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not met within {timeout}s")
        time.sleep(0.05)


class _Lines:
    """A stream's lines, collected by a thread."""

    def __init__(self, stream):
        self.lines: list[str] = []
        self.cond = threading.Condition()
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream) -> None:
        for line in stream:
            with self.cond:
                self.lines.append(line)
                self.cond.notify_all()
        with self.cond:
            self.lines.append("")
            self.cond.notify_all()

    def wait_for(self, text: str, timeout: float = 60.0) -> bool:
        deadline = time.monotonic() + timeout
        with self.cond:
            while not any(text in ln for ln in self.lines):
                left = deadline - time.monotonic()
                if (self.lines and self.lines[-1] == "") or left <= 0:
                    return False
                self.cond.wait(left)
            return True

    def count(self, text: str) -> int:
        with self.cond:
            return sum(text in ln for ln in self.lines)

    def text(self) -> str:
        with self.cond:
            return "".join(self.lines)


class Node:
    """One `mailserver serve` process with smtp, imap and pop3 on 127.0.0.1 (port 0, read from its log)."""

    def __init__(self, tmp_path: Path, name: str, url: str):
        data = tmp_path / name
        data.mkdir()
        conf = data / "mailserver.toml"
        conf.write_text(
            f'hostname = "{name}.example.test"\ndata_dir = "{data}"\ndatabase_url = "{url}"\n'
            "[server]\nworkers = 1\n"  # one process per node (its pid names its LISTEN connection)
            '[listen]\nsmtp = ["127.0.0.1:0"]\nimap = ["127.0.0.1:0"]\npop3 = ["127.0.0.1:0"]\n'
            '[store]\nblobs = "database"\n'
            f"[limits]\nauth_max_failures_per_ip = {LIMIT}\nauth_max_failures_per_account = {LIMIT}\n"
            "auth_max_delay = 0.0\n"
            '[queue]\nrun = false\n[[domain]]\nname = "example.test"\n')
        self.proc = popen([sys.executable, "-m", "mailserver", "--config", str(conf), "serve"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
        self._terminated = False
        try:
            self.out, self.err = _Lines(self.proc.stdout), _Lines(self.proc.stderr)
            assert self.out.wait_for("Stop with Ctrl-C"), self.out.text() + self.err.text()
            assert self.err.wait_for("listening pop3 on"), self.err.text()
            self.ports = {m.group(1): int(m.group(2))
                          for m in re.finditer(r"listening (\w+) on 127\.0\.0\.1:(\d+)", self.err.text())}
            assert set(self.ports) == {"smtp", "imap", "pop3"}, self.err.text()
            self.listen_name = f"mailserver-listen {self.proc.pid}"
        except BaseException:
            self.stop()  # a start-up that failed leaves nothing running
            raise

    def port(self, name: str) -> int:
        return self.ports[name]

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def terminate(self) -> None:
        if self.proc.poll() is None and not self._terminated:
            self._terminated = True
            self.proc.send_signal(signal.SIGTERM)

    def stop(self) -> None:
        self.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill()


class Cluster:
    def __init__(self, tmp_path: Path, base_url: str, url: str):
        import psycopg

        from mailserver.auth import PasswordHasher
        from storage import migrate
        from storage.blobs import DatabaseBlobStore
        from storage.db import make_engine
        from storage.store import Store

        self.tmp_path = tmp_path
        self.url = url
        self.nodes: list[Node] = []
        self.db = psycopg.connect(base_url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True)
        engine = make_engine(url)
        try:
            migrate.upgrade(engine)
            with engine.begin() as conn:
                # Ids unlike other tests' (a second guard: each schema has its own notification channel).
                conn.exec_driver_sql(f"ALTER SEQUENCE mailboxes_id_seq RESTART WITH {random.randint(10**6, 10**9)}")
            store = Store(engine, DatabaseBlobStore(engine))
            store.ensure_domain("example.test")
            acct = store.add_account(ALICE, PasswordHasher("argon2").hash(PW))
            self.inbox_id = store.get_mailbox(acct.id, "INBOX").id
        finally:
            engine.dispose()

    def start(self) -> Node:
        node = Node(self.tmp_path, f"n{len(self.nodes) + 1}", self.url)
        self.nodes.append(node)
        return node

    def backends(self, application_name: str) -> list[int]:
        return [r[0] for r in self.db.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s", (application_name,))]

    def close(self) -> None:
        for node in self.nodes:
            node.terminate()  # all at once
        for node in self.nodes:
            node.stop()  # waits (and kills one that does not stop)
        self.db.close()


@pytest.fixture
def cluster(tmp_path):
    base = harness.test_database_url()
    if not base:
        pytest.skip("MAILSERVER_TEST_DATABASE_URL not set")
    url = harness.fresh_pg_url(base)
    c = Cluster(tmp_path, base, url)
    try:
        yield c
    finally:
        c.close()
        harness.drop_pg_schema(base, url)


def send(node: Node, subject: str) -> None:
    with smtplib.SMTP("127.0.0.1", node.port("smtp"), timeout=30) as s:
        s.sendmail("bob@example.org", [ALICE], f"From: bob@example.org\r\nTo: {ALICE}\r\nSubject: {subject}\r\n\r\n"
                                               f"{subject}\r\n".encode())


def pop3_login(node: Node, password: str = PW) -> poplib.POP3:
    c = poplib.POP3("127.0.0.1", node.port("pop3"), timeout=30)
    try:
        c.user(ALICE)
        c.pass_(password)
    except BaseException:
        c.close()
        raise
    return c


def pop3_refusal(node: Node, password: str = PW) -> str:
    """The -ERR line a login gets ("" when it succeeds; the session is then ended)."""
    try:
        c = pop3_login(node, password)
    except poplib.error_proto as e:
        return e.args[0].decode()
    c.quit()
    return ""


# --------------------------------------------------------------------------------------------- POP3 maildrop lock


def test_pop3_maildrop_lock_spans_processes_and_ends_with_quit_or_sigkill(cluster):
    """RFC 1939 section 4 / RFC 2449 8.1.1: a POP3 session on one node makes the other node answer -ERR [IN-USE];
    after QUIT, or after the holding process is SIGKILLed, the maildrop is free again."""
    a, b = cluster.start(), cluster.start()
    first = pop3_login(a)
    assert pop3_refusal(b).startswith("-ERR [IN-USE]")
    assert pop3_refusal(a).startswith("-ERR [IN-USE]")  # and within the same process
    first.quit()
    second = wait_for(lambda: _try_pop3(b), what="lock free after QUIT")
    assert pop3_refusal(a).startswith("-ERR [IN-USE]")
    b.kill()  # the holder dies with the session open: its database connection, and its lock, end with it
    third = wait_for(lambda: _try_pop3(a), what="lock free after SIGKILL")
    third.quit()
    second.close()


def _try_pop3(node: Node) -> poplib.POP3 | None:
    try:
        return pop3_login(node)
    except poplib.error_proto as e:
        assert b"[IN-USE]" in e.args[0], e
        return None


# --------------------------------------------------------------------------------------------- throttling


def test_wrong_passwords_spread_over_two_nodes_are_throttled_as_one_count(cluster):
    """20 wrong passwords alternating between the nodes: the first 10 are answered "authentication failed", the
    11th and every later one "throttled" on whichever node gets it (10 + 10 per node would never throttle), and
    then even the right password is throttled on both."""
    a, b = cluster.start(), cluster.start()
    answers = [pop3_refusal((a, b)[i % 2], f"wrong-{i}") for i in range(20)]
    assert answers[:LIMIT] == ["-ERR [AUTH] authentication failed"] * LIMIT
    assert answers[LIMIT:] == ["-ERR [SYS/TEMP] too many failed logins, try again later"] * (20 - LIMIT)
    for node in (a, b):
        assert pop3_refusal(node) == "-ERR [SYS/TEMP] too many failed logins, try again later"


# --------------------------------------------------------------------------------------------- \Recent


def _imap(node: Node) -> Raw:
    c = Raw(node.port("imap"), timeout=30)
    assert c.cmd("L", f'LOGIN {ALICE} "{PW}"')[-1].startswith(b"L OK")
    assert c.cmd("S", "SELECT INBOX")[-1].startswith(b"S OK [READ-WRITE]")
    return c


def _exists(c: Raw) -> int:
    lines = c.cmd("N", "NOOP")
    counts = [int(m.group(1)) for ln in lines if (m := re.match(rb"\* (\d+) EXISTS\r\n", ln))]
    c.exists = counts[-1] if counts else getattr(c, "exists", 0)
    return c.exists


def _recent_uids(c: Raw) -> set[int]:
    lines = c.cmd("F", "FETCH 1:* (UID FLAGS)")
    return {int(m.group(1)) for ln in lines if (m := re.search(rb"UID (\d+) FLAGS \(([^)]*)\)", ln))
            and b"\\Recent" in m.group(2)}


def test_each_new_message_is_recent_in_exactly_one_session_across_nodes(cluster):
    """RFC 3501 2.3.2: two sessions on different nodes have INBOX selected read-write; each new message is
    \\Recent in exactly one of them, whichever node delivered it; a later session sees none as \\Recent."""
    a, b = cluster.start(), cluster.start()
    on_a, on_b = _imap(a), _imap(b)
    for i, via in enumerate((a, b, a, b, a, b)):
        send(via, f"m{i + 1}")
    for c in (on_a, on_b):
        wait_for(lambda c=c: _exists(c) == 6, what="6 EXISTS")
    recent_a, recent_b = _recent_uids(on_a), _recent_uids(on_b)
    assert recent_a | recent_b == {1, 2, 3, 4, 5, 6} and not recent_a & recent_b
    late = _imap(a)
    assert _recent_uids(late) == set()
    for c in (on_a, on_b, late):
        c.close()


# --------------------------------------------------------------------------------------------- LISTEN lost


def test_idle_session_sees_every_exists_after_its_listen_connection_is_killed(cluster):
    """Node A's LISTEN connection is terminated (pg_terminate_backend) while deliveries go on through node B: the
    notifications sent meanwhile are lost, yet the IDLE session on A is told of every message once A's listener
    is back (RFC 9051 6.3.13: EXISTS as they happen), before the next delivery."""
    import psycopg

    a, b = cluster.start(), cluster.start()
    wait_for(lambda: cluster.backends(a.listen_name), what="A listening")
    watcher = psycopg.connect(cluster.db.info.dsn, autocommit=True)  # sees what B notifies
    from storage.pgnotify import channel_for

    schema = cluster.url.rsplit("%3D", 1)[1]  # the test's schema (tests/harness.py fresh_pg_url)
    watcher.execute(f'LISTEN "{channel_for(schema)}"')
    idle = _imap(a)
    idle.send(b"I IDLE\r\n")
    assert idle.line() == b"+ idling\r\n"
    send(b, "m1")
    _lines_until(idle, b"* 1 EXISTS\r\n")

    uid = 1
    for _attempt in range(10):
        pids = wait_for(lambda: cluster.backends(a.listen_name), what="A listening")
        cluster.db.execute("SELECT pg_terminate_backend(%s)", (pids[0],))
        wait_for(lambda: not cluster.backends(a.listen_name), what="A's listener gone")
        uid += 1
        send(b, f"m{uid}")
        _wait_notified(watcher, cluster.inbox_id, [uid])
        if not cluster.backends(a.listen_name):
            break  # A was not listening when it was notified: only catching up can tell the session
        # A reconnected before the notification went out (it waits a second first): once more.
    else:
        pytest.fail("node A's listener kept coming back before the delivery was notified")
    send(b, f"m{uid + 1}")  # a second one while A is still away (it may or may not be back by now)
    uid += 1
    wait_for(lambda: cluster.backends(a.listen_name), what="A listening again")
    seen = _lines_until(idle, b"* %d EXISTS\r\n" % uid)
    assert not any(b"BYE" in ln for ln in seen), seen
    send(b, "last")
    assert [ln for ln in _lines_until(idle, b"* %d EXISTS\r\n" % (uid + 1)) if b"EXISTS" in ln] == [
        b"* %d EXISTS\r\n" % (uid + 1)]
    assert a.err.count("LISTEN connection re-established") >= 1
    idle.send(b"DONE\r\n")
    assert idle.until(b"I")[-1].startswith(b"I OK")
    uids = [int(m.group(1)) for ln in idle.cmd("U", "UID FETCH 1:* (FLAGS)")
            if (m := re.search(rb"UID (\d+)", ln))]
    assert uids == list(range(1, uid + 2))
    idle.close()
    watcher.close()


def _wait_notified(watcher, mailbox_id: int, uids: list[int]) -> None:
    import json

    want = set(uids)
    deadline = time.monotonic() + 20
    while want:
        assert time.monotonic() < deadline, f"no notification for uids {sorted(want)}"
        for n in watcher.notifies(timeout=0.5, stop_after=1):
            for c in json.loads(n.payload).get("c", ()):
                if c.get("mailbox_id") == mailbox_id and c.get("kind") == "exists":
                    want.discard(c.get("uid"))


def _lines_until(c: Raw, wanted: bytes) -> list[bytes]:
    lines = []
    while True:
        ln = c.line()
        lines.append(ln)
        if ln == wanted:
            return lines
