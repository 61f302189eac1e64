"""`mailserver serve` with `[server] workers = 2` on one SQLite file: a supervisor and two worker processes behave
as one server.  Connections are steered to a chosen worker by reconnecting until the kernel gave it to that one (the
worker owning the server side of a connection is read from /proc: no protocol change needed).

Every test runs the real processes (SIGKILL included) and drives them with real clients; waits are bounded polls for
an outcome, never measured durations.
"""

from __future__ import annotations

import os
import poplib
import re
import signal
import smtplib
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.imap.imap_client import Raw
from tests.processes import popen, stop_group
from tests.test_cluster_nodes import _Lines, wait_for

ROOT = Path(__file__).resolve().parents[1]
ALICE = "alice@example.test"
PW = "alice-secret"
LIMIT = 10  # failed logins per IP and per account before "throttled"

pytestmark = pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux /proc")


# --------------------------------------------------------------------------------------------- which worker


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _server_inode(server_port: int, client_port: int) -> str | None:
    """The socket inode of the server side of the loopback connection from ``client_port``."""
    want_local, want_remote = f"0100007F:{server_port:04X}", f"0100007F:{client_port:04X}"
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        f = line.split()
        if f[1] == want_local and f[2] == want_remote:
            return f[9]
    return None


def worker_of(server: "Server", sock: socket.socket, server_port: int) -> int | None:
    """The pid of the worker that accepted ``sock`` (a client socket of ours), or None if not found yet."""
    inode = _server_inode(server_port, sock.getsockname()[1])
    if inode is None:
        return None
    target = f"socket:[{inode}]"
    for pid in server.worker_pids():
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                        return pid
                except OSError:
                    continue
        except OSError:
            continue
    return None


def on_worker(server: "Server", connect, sock_of, port_name: str, want=None, avoid=None, tries: int = 200):
    """Connect with ``connect()`` until the connection lands on worker ``want`` (or on any worker but ``avoid``);
    returns (connection, worker pid).  Connections on other workers are closed."""
    for _ in range(tries):
        conn = connect()
        pid = wait_for(lambda c=conn: worker_of(server, sock_of(c), server.ports[port_name]), timeout=10,
                       what="connection's worker")
        if (want is None or pid == want) and (avoid is None or pid != avoid):
            return conn, pid
        try:
            sock_of(conn).close()
        except OSError:
            pass
    pytest.fail(f"no connection landed on the wanted worker in {tries} tries")


# --------------------------------------------------------------------------------------------- the server


class Server:
    """One `mailserver serve` with two workers: smtp, imap, pop3 and metrics on 127.0.0.1 (port 0, read from
    the log)."""

    def __init__(self, tmp_path: Path, workers: int = 2, extra: str = "", server_extra: str = ""):
        from mailserver.auth import PasswordHasher
        from mailserver.config import load
        from mailserver.service import open_store

        data = tmp_path / "data"
        conf = tmp_path / "mailserver.toml"
        conf.write_text(
            f'hostname = "mail.example.test"\ndata_dir = "{data}"\n'
            f"[server]\nworkers = {workers}\nlease = 3.0\n{server_extra}"
            '[listen]\nsmtp = ["127.0.0.1:0"]\nimap = ["127.0.0.1:0"]\npop3 = ["127.0.0.1:0"]\n'
            f"[limits]\nauth_max_failures_per_ip = {LIMIT}\nauth_max_failures_per_account = {LIMIT}\n"
            "auth_max_delay = 0.0\n"
            f'[queue]\nrun = false\n{extra}[[domain]]\nname = "example.test"\n')
        store = open_store(load(conf))
        try:
            acct = store.add_account(ALICE, PasswordHasher("argon2", low_cost=True).hash(PW))
            self.inbox_id = store.get_mailbox(acct.id, "INBOX").id
        finally:
            store.engine.dispose()
        self.conf = conf
        self.data = data
        self.workers = workers
        # Its own process group (the workers inherit it): stop() ends whatever is left of it by that id.
        self.proc = popen([sys.executable, "-m", "mailserver", "--config", str(conf), "serve"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                          start_new_session=True)
        try:
            self.out, self.err = _Lines(self.proc.stdout), _Lines(self.proc.stderr)
            assert self.out.wait_for("Stop with Ctrl-C"), self.out.text() + self.err.text()
            wait_for(lambda: self.err.count("listening pop3 on") >= workers, timeout=60, what="workers listening")
            self.ports = {m.group(1): int(m.group(2))
                          for m in re.finditer(r"listening (\w+) on 127\.0\.0\.1:(\d+)", self.err.text())}
            assert set(self.ports) == {"smtp", "imap", "pop3"}, self.err.text()
        except BaseException:
            self.stop()  # a start-up that failed (a timeout under load) leaves nothing running
            raise

    def worker_pids(self) -> list[int]:
        return _children(self.proc.pid)

    def stop(self) -> None:
        """SIGTERM the supervisor; SIGKILL it after a minute; then SIGKILL anything left in its process group."""
        stop_group(self.proc, timeout=60)


@pytest.fixture
def server(tmp_path):
    s = Server(tmp_path)
    try:
        yield s
    finally:
        s.stop()


def send(port: int, subject: str) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
        s.sendmail("bob@example.org", [ALICE], f"From: bob@example.org\r\nTo: {ALICE}\r\nSubject: {subject}\r\n\r\n"
                                               f"{subject}\r\n".encode())


def _lines_until(c: Raw, want: bytes, timeout: float = 20.0) -> list[bytes]:
    c.sock.settimeout(timeout)
    lines = []
    while True:
        ln = c.line()
        lines.append(ln)
        if ln == want:
            return lines


def _pop3(port: int) -> poplib.POP3:
    return poplib.POP3("127.0.0.1", port, timeout=30)


def _pop3_login(c: poplib.POP3, password: str = PW) -> str:
    """"" when the login succeeded, else the -ERR line."""
    try:
        c.user(ALICE)
        c.pass_(password)
    except poplib.error_proto as e:
        return e.args[0].decode()
    return ""


# --------------------------------------------------------------------------------------------- tests


def test_idle_on_one_worker_sees_a_delivery_made_through_smtp_on_the_other(server):
    """RFC 9051 6.3.13: an IMAP session in IDLE on worker A is told "* 1 EXISTS" for a message that SMTP handled
    on worker B (the change travels over the supervisor's bus, not LISTEN/NOTIFY)."""
    idle, a = on_worker(server, lambda: Raw(server.ports["imap"], timeout=30), lambda c: c.sock, "imap")
    assert idle.cmd("L", f'LOGIN {ALICE} "{PW}"')[-1].startswith(b"L OK")
    assert idle.cmd("S", "SELECT INBOX")[-1].startswith(b"S OK")
    idle.send(b"I IDLE\r\n")
    assert idle.line() == b"+ idling\r\n"
    smtp, b = on_worker(server, lambda: smtplib.SMTP("127.0.0.1", server.ports["smtp"], timeout=30),
                        lambda c: c.sock, "smtp", avoid=a)
    assert a != b
    smtp.sendmail("bob@example.org", [ALICE], f"From: bob@example.org\r\nTo: {ALICE}\r\nSubject: x\r\n\r\nx\r\n")
    smtp.quit()
    assert b"* 1 EXISTS\r\n" in _lines_until(idle, b"* 1 EXISTS\r\n")
    idle.send(b"DONE\r\n")
    assert idle.until(b"I")[-1].startswith(b"I OK")
    idle.close()


def test_idle_sessions_on_both_workers_all_see_exists_and_one_sees_recent(server):
    """RFC 3501 2.3.2 across the IDLE fan-out: three IDLE sessions on each worker, one delivery; every session is
    told "* 1 EXISTS", and exactly one of the six gets the message as \\Recent (each worker reserves it once for all
    its sessions, one worker wins, one of its sessions takes it)."""
    first, a = on_worker(server, lambda: Raw(server.ports["imap"], timeout=30), lambda c: c.sock, "imap")
    sessions = [first]
    for want in (a, a):
        sessions.append(on_worker(server, lambda: Raw(server.ports["imap"], timeout=30), lambda c: c.sock, "imap",
                                  want=want)[0])
    other, b = on_worker(server, lambda: Raw(server.ports["imap"], timeout=30), lambda c: c.sock, "imap", avoid=a)
    sessions.append(other)
    for want in (b, b):
        sessions.append(on_worker(server, lambda: Raw(server.ports["imap"], timeout=30), lambda c: c.sock, "imap",
                                  want=want)[0])
    for c in sessions:
        assert c.cmd("L", f'LOGIN {ALICE} "{PW}"')[-1].startswith(b"L OK")
        assert b"* 0 RECENT\r\n" in c.cmd("S", "SELECT INBOX")
        c.send(b"I IDLE\r\n")
        assert c.line() == b"+ idling\r\n"
    send(server.ports["smtp"], "fan-out")
    recent = []
    for c in sessions:
        assert _lines_until(c, b"* 1 EXISTS\r\n")[-1] == b"* 1 EXISTS\r\n"
        m = re.fullmatch(rb"\* (\d+) RECENT\r\n", c.line())
        assert m
        recent.append(int(m.group(1)))
    assert sorted(recent) == [0, 0, 0, 0, 0, 1]
    for c in sessions:
        c.send(b"DONE\r\n")
        assert c.until(b"I")[-1].startswith(b"I OK")
        c.close()


def test_a_command_on_one_worker_shows_what_a_session_on_the_other_committed_before_it(server):
    """A client with two connections (imaptest's scripted tests, clients with one connection per mailbox) expects
    what one committed to show in the next command of the other, as in one process (RFC 9051 7.4.1 allows the
    updates at the end of any command; Dovecot reads its index at each).  The event between the workers travels
    asynchronously; the commit board makes the other worker's next command catch up from the database.  Each round
    asks right after the other connection's tagged OK: APPEND then NOOP shows EXISTS, STORE then NOOP shows the
    FETCH FLAGS, EXPUNGE then NOOP shows the EXPUNGE, and a CHECK (another command) as well as NOOP."""
    one, a = on_worker(server, lambda: Raw(server.ports["imap"], timeout=30), lambda c: c.sock, "imap")
    two, _ = on_worker(server, lambda: Raw(server.ports["imap"], timeout=30), lambda c: c.sock, "imap", avoid=a)
    for c in (one, two):
        assert c.cmd("L", f'LOGIN {ALICE} "{PW}"')[-1].startswith(b"L OK")
        assert b"* 0 EXISTS\r\n" in c.cmd("S", "SELECT INBOX")
    for n in range(1, 11):
        msg = f"Subject: round {n}\r\n\r\nbody {n}\r\n".encode()
        assert one.cmd("A", b"APPEND INBOX {%d+}\r\n" % len(msg) + msg)[-1].startswith(b"A OK")
        assert b"* %d EXISTS\r\n" % n in two.cmd("N", "CHECK" if n % 2 else "NOOP"), n
        assert one.cmd("F", f"STORE {n} +FLAGS (\\Flagged)")[-1].startswith(b"F OK")
        assert any(ln.startswith(b"* %d FETCH (FLAGS (" % n) and b"\\Flagged" in ln
                   for ln in two.cmd("N", "NOOP")), n
    assert one.cmd("D", "STORE 1:3 +FLAGS.SILENT (\\Deleted)")[-1].startswith(b"D OK")
    assert one.cmd("E", "EXPUNGE")[-1].startswith(b"E OK")
    got = two.cmd("N", "NOOP")
    assert len([ln for ln in got if ln.endswith(b" EXPUNGE\r\n")]) == 3, got  # in either order (RFC 9051 7.5.1)
    assert b"* 7 EXISTS\r\n" not in got  # nothing told twice when the bus's events arrive too
    later = two.cmd("N", "NOOP")
    assert later == [later[-1]] and later[-1].startswith(b"N OK"), later
    for c in (one, two):
        c.close()


def test_pop3_maildrop_lock_spans_workers_and_ends_with_quit_or_sigkill(server):
    """RFC 1939 section 4 / RFC 2449 8.1.1: a POP3 session on worker A makes a login on worker B answer
    -ERR [IN-USE]; after QUIT on A, B gets in; after the holding worker is SIGKILLed, the maildrop is free again."""
    first, a = on_worker(server, lambda: _pop3(server.ports["pop3"]), lambda c: c.sock, "pop3")
    assert _pop3_login(first) == ""
    other, b = on_worker(server, lambda: _pop3(server.ports["pop3"]), lambda c: c.sock, "pop3", avoid=a)
    assert _pop3_login(other).startswith("-ERR [IN-USE]")
    other.close()
    first.quit()

    def try_on_b():
        c, _ = on_worker(server, lambda: _pop3(server.ports["pop3"]), lambda c: c.sock, "pop3", want=b)
        if _pop3_login(c) == "":
            return c
        c.close()
        return None

    second = wait_for(try_on_b, what="lock free after QUIT")
    os.kill(b, signal.SIGKILL)  # the holder dies with the session open
    second.close()

    def try_any():
        c = _pop3(server.ports["pop3"])
        if _pop3_login(c) == "":
            return c
        c.close()
        return None

    third = wait_for(try_any, timeout=30, what="lock free after SIGKILL")
    third.quit()


def test_wrong_passwords_spread_over_two_workers_are_throttled_as_one_count(server):
    """20 wrong passwords alternating between the workers: the first 10 are answered "authentication failed",
    the 11th and every later one "throttled", whichever worker gets it (10 + 10 per worker would never throttle)."""
    first, a = on_worker(server, lambda: _pop3(server.ports["pop3"]), lambda c: c.sock, "pop3")
    first.close()
    answers = []
    for i in range(20):
        kw = {"want": a} if i % 2 == 0 else {"avoid": a}
        c, _ = on_worker(server, lambda: _pop3(server.ports["pop3"]), lambda c: c.sock, "pop3", **kw)
        answers.append(_pop3_login(c, f"wrong-{i}"))
        c.close()
    assert answers[:LIMIT] == ["-ERR [AUTH] authentication failed"] * LIMIT
    assert answers[LIMIT:] == ["-ERR [SYS/TEMP] too many failed logins, try again later"] * (20 - LIMIT)


def test_sigterm_stops_every_worker_cleanly(server):
    """SIGTERM to the supervisor: each worker stops ("stopped", exit code 0), then the supervisor (exit code 0);
    no process is left."""
    pids = server.worker_pids()
    assert len(pids) == 2
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=60) == 0
    assert server.err.wait_for("mailserver.supervisor: stopped")
    assert server.err.count("mailserver.service: stopped") == 2, server.err.text()
    assert server.err.count("stopped (exit code 0)") == 2, server.err.text()
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()


def test_sigterm_twice_stops_each_process_once_without_errors(server):
    """SIGTERM sent twice to the supervisor and twice more to each worker (an impatient operator, a service manager
    and the parent-death signal together): every process stops once, cleanly, and nothing logs "Can't stop reactor
    that isn't running" or a traceback."""
    pids = server.worker_pids()
    assert len(pids) == 2
    server.proc.send_signal(signal.SIGTERM)
    server.proc.send_signal(signal.SIGTERM)
    for pid in pids:
        for _ in range(2):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    assert server.proc.wait(timeout=60) == 0
    assert server.err.wait_for("mailserver.supervisor: stopped")
    text = server.err.text()
    assert "stop reactor" not in text and "ReactorNotRunning" not in text and "Traceback" not in text, text
    assert server.err.count("mailserver.service: stopped") == 2, text


def test_sighup_reaches_every_worker_and_is_ignored(server):
    """SIGHUP to the supervisor is passed to each worker, which logs it and keeps serving."""
    server.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: server.err.count("SIGHUP received") == 2, what="both workers logged SIGHUP")
    send(server.ports["smtp"], "after hup")
    assert server.proc.poll() is None


def test_a_worker_killed_under_load_is_restarted_and_no_acknowledged_message_is_lost(server):
    """SMTP clients deliver in a loop while one worker is SIGKILLed: the supervisor starts a new worker, every
    message that got its 250 is in the mailbox, and the new worker serves connections."""
    from mailserver.config import load
    from mailserver.service import open_store

    acked: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def client(n: int) -> None:
        i = 0
        while not stop.is_set():
            subject = f"load {n}-{i}"
            i += 1
            try:
                send(server.ports["smtp"], subject)
            except (OSError, smtplib.SMTPException):
                continue  # the connection died with its worker: not acknowledged
            with lock:
                acked.append(subject)

    threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(4)]
    for t in threads:
        t.start()
    wait_for(lambda: len(acked) >= 20, timeout=60, what="load running")
    victim = server.worker_pids()[0]
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: server.err.count("restarting it in") >= 1, what="restart logged")
    wait_for(lambda: len(server.worker_pids()) == 2 and victim not in server.worker_pids(), timeout=60,
             what="a new worker")
    wait_for(lambda: server.err.count("listening pop3 on") >= 3, timeout=60, what="the new worker listening")
    mark = len(acked)
    wait_for(lambda: len(acked) >= mark + 20, timeout=60, what="load after the restart")
    stop.set()
    for t in threads:
        t.join(timeout=60)
    restarted = int(re.findall(r"worker \d+ started \(pid (\d+)\)", server.err.text())[-1])
    assert restarted in server.worker_pids() and restarted != victim
    c, _ = on_worker(server, lambda: _pop3(server.ports["pop3"]), lambda c: c.sock, "pop3", want=restarted)
    c.quit()  # the restarted worker takes connections
    from sqlalchemy import text

    store = open_store(load(server.conf), run_migrations=False)
    try:
        with store.engine.connect() as conn:
            subjects = {r[0] for r in conn.execute(text("SELECT subject FROM messages WHERE mailbox_id = :m"),
                                                   {"m": server.inbox_id})}
    finally:
        store.engine.dispose()
    missing = [s for s in acked if s not in subjects]
    assert not missing, f"{len(missing)} acknowledged messages lost: {missing[:5]}"


def test_one_maintenance_lease_holder_and_another_takes_over_when_it_dies(tmp_path):
    """One worker of the cluster runs the queue and the blob collector (the maintenance lease); when it is
    SIGKILLed, the supervisor frees its lease and another worker takes it."""
    s = Server(tmp_path)
    try:
        wait_for(lambda: s.err.count("lease maintenance taken") >= 1, what="a holder")
        holder_line = [ln for ln in s.err.lines if "lease maintenance taken" in ln][0]
        holder_name = re.search(r"\((worker\d+):", holder_line).group(1)
        index = int(holder_name[len("worker"):])
        pid = int(re.search(rf"worker {index} started \(pid (\d+)\)", s.err.text()).group(1))
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: s.err.count("lease maintenance taken") >= 2, timeout=30, what="a new holder")
    finally:
        s.stop()


def test_a_start_up_that_fails_leaves_no_supervisor_or_worker_running(tmp_path, monkeypatch):
    """When the wait for the workers gives up (as under load), the supervisor and its workers are stopped."""
    started: list[subprocess.Popen] = []
    workers: list[int] = []
    real_popen, real_wait = subprocess.Popen, wait_for

    def popen(*args, **kwargs):
        proc = real_popen(*args, **kwargs)
        if "serve" in args[0]:
            started.append(proc)  # the supervisor (other commands may run on the way)
        return proc

    def gives_up(condition, timeout=20.0, what="condition"):
        real_wait(lambda: len(_children(started[0].pid)) >= 2, timeout=60, what="two workers started")
        workers.extend(_children(started[0].pid))
        raise AssertionError(f"{what}: not met (the start-up timed out)")

    monkeypatch.setattr(subprocess, "Popen", popen)
    monkeypatch.setattr(sys.modules[__name__], "wait_for", gives_up)
    with pytest.raises(AssertionError, match="start-up timed out"):
        Server(tmp_path)
    monkeypatch.undo()
    assert started[0].returncode is not None  # stopped and reaped
    assert len(workers) == 2

    def gone(pid: int) -> bool:
        try:
            return "zombie" in Path(f"/proc/{pid}/status").read_text()
        except FileNotFoundError:
            return True

    wait_for(lambda: all(gone(pid) for pid in workers), timeout=30, what="the workers gone")


# --------------------------------------------------------------------------------------------- SO_REUSEPORT


def _listening_inodes(port: int) -> set[str]:
    """Inodes of the sockets listening on 127.0.0.1:``port`` (state 0A in /proc/net/tcp)."""
    want = f"0100007F:{port:04X}"
    return {f[9] for f in (ln.split() for ln in Path("/proc/net/tcp").read_text().splitlines()[1:])
            if f[1] == want and f[3] == "0A"}


def _inodes_of(pid: int) -> set[str]:
    out = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            out.add(link[len("socket:["):-1])
    return out


def test_reuse_port_gives_each_worker_its_own_listening_socket_and_both_take_connections(tmp_path):
    """``[server] reuse_port = true``: each listener is bound once per worker (SO_REUSEPORT, one port), every
    worker holds only its own socket, and new connections reach both workers; a delivery over SMTP on one is seen
    by an IMAP session on the other."""
    s = Server(tmp_path, server_extra="reuse_port = true\n")
    try:
        a, b = s.worker_pids()
        for name in ("smtp", "imap", "pop3"):
            listening = _listening_inodes(s.ports[name])
            assert len(listening) == 2, (name, listening)
            mine_a, mine_b = _inodes_of(a) & listening, _inodes_of(b) & listening
            assert len(mine_a) == 1 and len(mine_b) == 1 and mine_a != mine_b, (name, mine_a, mine_b)
        imap, on = on_worker(s, lambda: Raw(s.ports["imap"], timeout=30), lambda c: c.sock, "imap", want=a)
        smtp, _ = on_worker(s, lambda: smtplib.SMTP("127.0.0.1", s.ports["smtp"], timeout=30), lambda c: c.sock,
                            "smtp", want=b)
        assert imap.cmd("L", f'LOGIN {ALICE} "{PW}"')[-1].startswith(b"L OK")
        assert imap.cmd("S", "SELECT INBOX")[-1].startswith(b"S OK")
        imap.send(b"I IDLE\r\n")
        assert imap.line() == b"+ idling\r\n"
        smtp.sendmail("bob@example.org", [ALICE], f"From: bob@example.org\r\nTo: {ALICE}\r\nSubject: r\r\n\r\nr\r\n")
        smtp.quit()
        assert b"* 1 EXISTS\r\n" in _lines_until(imap, b"* 1 EXISTS\r\n")
        imap.close()
    finally:
        s.stop()


def test_reuse_port_restarted_worker_takes_over_the_sockets_of_the_one_that_died(tmp_path):
    """With reuse_port a worker killed with SIGKILL is restarted on the same SO_REUSEPORT sockets (the supervisor
    keeps them: no rebinding, which ports below 1024 would need root for), and takes connections again."""
    s = Server(tmp_path, server_extra="reuse_port = true\n")
    try:
        listening = _listening_inodes(s.ports["pop3"])
        victim = s.worker_pids()[0]
        its_socket = _inodes_of(victim) & listening
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: len(s.worker_pids()) == 2 and victim not in s.worker_pids(), timeout=60,
                 what="a new worker")
        wait_for(lambda: s.err.count("listening pop3 on") >= 3, timeout=60, what="the new worker listening")
        restarted = int(re.findall(r"worker \d+ started \(pid (\d+)\)", s.err.text())[-1])
        assert _listening_inodes(s.ports["pop3"]) == listening  # nothing rebound
        assert _inodes_of(restarted) & listening == its_socket
        c, _ = on_worker(s, lambda: _pop3(s.ports["pop3"]), lambda c: c.sock, "pop3", want=restarted)
        assert _pop3_login(c) == ""
        c.quit()
    finally:
        s.stop()


def test_reuse_port_is_refused_where_the_system_lacks_it(tmp_path, monkeypatch):
    """check-config names the key when SO_REUSEPORT does not exist."""
    from mailserver.config import ConfigError, load

    conf = tmp_path / "m.toml"
    conf.write_text(f'hostname = "h.example.test"\ndata_dir = "{tmp_path}"\n[server]\nreuse_port = true\n')
    assert load(conf).server.reuse_port is True
    monkeypatch.delattr(socket, "SO_REUSEPORT")
    with pytest.raises(ConfigError, match="server.reuse_port"):
        load(conf)
