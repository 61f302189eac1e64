#!/usr/bin/env python3
"""POP3 benchmark: messages per second downloaded by parallel sessions, each from its own maildrop.

    scripts/bench/pop3.py [--sessions 10] [--messages 1000] [--size 5000] [--rounds 1]
    scripts/bench/pop3.py --workers 1,2 [--dovecot] [--before DIR] [--rounds 3]
    scripts/bench/pop3.py --external 127.0.0.1:10110 --user-format 'user{}' --password pass \
        --lmtp 127.0.0.1:10024          # the same load against another server (e.g. Dovecot)

Every mode runs the same clients: separate processes (one per session, so they do not share a server's
interpreter), each doing USER/PASS, LIST, RETR of every message (keep), QUIT.  A message counts when its RETR
completed; a round prints messages/s and MB/s for the whole run and, where the server's processes are known, the
**server CPU per message** (user + system time of its processes over the round, from /proc), which moves far less
with the machine's load than messages/s.

Modes:

* default: our server runs in this process (reactor thread, SQLite and file blobs in a temporary directory), filled
  through ``deliver_raw``.  This is what ``compare.py`` runs against older revisions.
* ``--workers 1,2``: the deployed server: ``mailserver serve --workers N`` from a generated config (SQLite, file
  blobs, a ``pop3`` listener on a free loopback port) as a child process, one start per measurement, on one data
  directory filled once through ``deliver_raw`` (a ``MailServer`` in this process on the same config, stopped
  before ``serve`` starts).  Each user logs in once after every start, untimed (the argon2 verification and the
  success cache are per process; Dovecot's baseline users have PLAIN passwords).  With ``--before DIR`` (a
  checkout of another revision, e.g. ``git worktree add /tmp/before main``) the same ``serve`` also runs from
  that tree, on the same data, alternating with this one.
* ``--dovecot``: also start a private Dovecot (``../shared/bench/baseline-dovecot.sh`` with its own BASEDIR,
  MAILDIR and free ports; users user1..userN, password "pass"), fill it over LMTP with the same messages, and
  measure it in every round alternately with ours; stopped (and its files removed) at the end.  Its CPU is that of
  its master and every process under it (the per-connection pop3 processes, reaped by the master, included).
* ``--external HOST:PORT``: another server started by hand (``--lmtp`` fills it first).

Each round line of ``mailserver serve`` also says how many sessions each process held 0.3 s into the round
(``ss -tnp``: with 2 workers on the shared socket, e.g. 6/4).  Each round measures every target once, in the same order (ours with each worker count, the ``--before`` tree's,
Dovecot); the last lines are the medians per target and the ratios against Dovecot.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import poplib
import shutil
import signal
import smtplib
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

PASSWORD = "bench password"
DOVECOT_SCRIPT = ROOT.parent / "shared" / "bench" / "baseline-dovecot.sh"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def make_message(i: int, size: int) -> bytes:
    head = (f"From: Sender <sender{i}@remote.test>\r\nTo: rcpt@example.test\r\nSubject: bench message {i}\r\n"
            f"Date: Sun, 22 Nov 2026 10:00:00 +0000\r\nMessage-ID: <{i}.pop3bench@remote.test>\r\n\r\n").encode()
    line = b"Lorem ipsum dolor sit amet, consectetur adipiscing elit.\r\n.A line starting with a dot.\r\n"
    return head + line * max(1, (size - len(head)) // len(line))


def free_ports(n: int) -> list[int]:
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


# --------------------------------------------------------------------------------------------- CPU from /proc


def _children(pid: int) -> list[int]:
    out = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out.extend(int(x) for x in f.read().split())
    except FileNotFoundError:
        pass
    return out


def tree_cpu_seconds(pid: int) -> tuple[float, float]:
    """(user, system) CPU of ``pid`` and every live process under it, plus what they reaped of their children."""
    user = system = 0.0
    stack, seen = [pid], set()
    while stack:
        p = stack.pop()
        if p in seen:
            continue
        seen.add(p)
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        # fields[11..14] = utime stime cutime cstime (stat fields 14-17)
        user += (int(fields[11]) + int(fields[13])) / CLK_TCK
        system += (int(fields[12]) + int(fields[14])) / CLK_TCK
        stack.extend(_children(p))
    return user, system


def sessions_per_process(port: int) -> list[int]:
    """How many established connections to ``port`` each process holds (``ss -tnp``), largest first."""
    import re
    from collections import Counter

    out = subprocess.run(["ss", "-tnpH", "state", "established", f"( sport = :{port} )"], capture_output=True,
                         text=True).stdout
    return sorted(Counter(re.findall(r"pid=(\d+)", out)).values(), reverse=True)


# --------------------------------------------------------------------------------------------- client side


def client(args: tuple[str, int, str, str, float]) -> tuple[int, int, float]:
    """One session: download everything (keep).  Returns (messages, octets, seconds)."""
    host, port, user, password, start_at = args
    while time.time() < start_at:
        time.sleep(0.001)
    t0 = time.perf_counter()
    c = poplib.POP3(host, port, timeout=120)
    c.user(user)
    c.pass_(password)
    _, listing, _ = c.list()
    n = octets = 0
    for entry in listing:
        num, size = entry.split()
        _, lines, got = c.retr(int(num))
        n += 1
        octets += got
    c.quit()
    return n, octets, time.perf_counter() - t0


def login_once(args: tuple[str, int, str, str]) -> None:
    host, port, user, password = args
    c = poplib.POP3(host, port, timeout=120)
    c.user(user)
    c.pass_(password)
    c.quit()


@dataclass
class Round:
    messages: int
    octets: int
    wall: float
    slowest: float
    cpu: tuple[float, float] | None  # server (user, system) CPU seconds over the round

    @property
    def rate(self) -> float:
        return self.messages / self.wall

    @property
    def cpu_us(self) -> float | None:
        return None if self.cpu is None or not self.messages else sum(self.cpu) / self.messages * 1e6

    @property
    def user_us(self) -> float | None:
        return None if self.cpu is None or not self.messages else self.cpu[0] / self.messages * 1e6


class Clients:
    """A pool of client processes, one per session."""

    def __init__(self, sessions: int):
        self.pool = multiprocessing.get_context("spawn").Pool(sessions)

    def close(self) -> None:
        self.pool.close()
        self.pool.join()

    def warm_up(self, host: str, port: int, users: list[str], password: str) -> None:
        self.pool.map(login_once, [(host, port, u, password) for u in users])

    def run(self, host: str, port: int, users: list[str], password: str, cpu_of=None) -> Round:
        start_at = time.time() + 1.0  # every client process is up before the clock starts
        pending = self.pool.map_async(client, [(host, port, u, password, start_at) for u in users])
        while time.time() < start_at - 0.2:
            time.sleep(0.01)
        cpu0 = cpu_of() if cpu_of else None
        results = pending.get()
        wall = time.time() - start_at
        cpu = tuple(b - a for a, b in zip(cpu0, cpu_of(), strict=True)) if cpu_of else None
        return Round(sum(r[0] for r in results), sum(r[1] for r in results), wall, max(r[2] for r in results), cpu)


def describe(label: str, n_sessions: int, r: Round) -> str:
    cpu = (f", server CPU {r.cpu_us:.0f} us/message ({r.user_us:.0f} user)" if r.cpu_us is not None else "")
    return (f"{label}: {n_sessions} sessions, {r.messages} messages, {r.octets / 1e6:.1f} MB in {r.wall:.2f} s: "
            f"{r.rate:.0f} messages/s, {r.octets / 1e6 / r.wall:.1f} MB/s (slowest session {r.slowest:.2f} s)"
            f"{cpu}")


def run_clients(host: str, port: int, users: list[str], password: str, rounds: int, cpu_of=None) -> None:
    clients = Clients(len(users))
    try:
        for n in range(rounds):
            print(describe(f"round {n + 1}", len(users), clients.run(host, port, users, password, cpu_of)),
                  flush=True)
    finally:
        clients.close()


# --------------------------------------------------------------------------------------------- our server


def bench_ours(sessions: int, messages: int, size: int, rounds: int, profile: str = "") -> None:
    import server_reactor

    server_reactor.install()  # before the reactor import below
    from twisted.internet import reactor

    from mailserver.config import load_dict
    from mailserver.service import MailServer
    from tests import harness

    tmp = tempfile.mkdtemp(prefix="bench-pop3-")
    cfg = load_dict({"hostname": "mail.example.test", "data_dir": tmp, "listen": {"pop3": ["127.0.0.1:0"]},
                     "domain": [{"name": "example.test"}]}, "bench")
    harness.ensure_reactor()
    server = MailServer(cfg, reactor)
    harness.call(server.startService)
    try:
        users = fill_ours(server, sessions, messages, size)
        prof = None
        if profile:
            import cProfile

            # The reactor thread's CPU time (not wall time) per function, over the download rounds only.
            prof = cProfile.Profile(time.thread_time)
            harness.call(prof.enable)
        # The server is this process (the clients are others): its CPU is this process's.
        run_clients("127.0.0.1", server.port("pop3"), users, PASSWORD, rounds, cpu_of=lambda: tuple(os.times()[:2]))
        if prof is not None:
            harness.call(prof.disable)
            prof.dump_stats(profile)
            print(f"reactor thread CPU profile of the rounds in {profile} (pstats)", flush=True)
    finally:
        harness.call(server.stopService)
        shutil.rmtree(tmp, ignore_errors=True)


def fill_ours(server, sessions: int, messages: int, size: int) -> list[str]:
    """Accounts bench1..N@example.test, each with ``messages`` messages through ``deliver_raw``."""
    from twisted.internet import defer

    from mailserver.ingest import deliver_raw
    from tests import harness

    users = [f"bench{i}@example.test" for i in range(1, sessions + 1)]
    ids = [server.store.add_account(u, harness.hasher().hash(PASSWORD)).id for u in users]
    services = getattr(server, "provided", server)  # before the typed Services, deliver_raw took the server
    t0 = time.perf_counter()
    for acct in ids:
        for start in range(0, messages, 250):
            batch = [make_message(i, size) for i in range(start, min(messages, start + 250))]
            harness.call(lambda b=batch, a=acct: defer.gatherResults(
                [deliver_raw(services, a, raw) for raw in b], consumeErrors=True))
    print(f"filled {sessions} maildrops x {messages} messages of ~{size} octets in "
          f"{time.perf_counter() - t0:.2f} s", flush=True)
    return users


@dataclass
class Target:
    label: str
    port: int
    users: list[str]
    password: str
    start: object = None  # () -> None, before each measurement
    stop: object = None  # () -> None, after each measurement
    cpu_of: object = None  # () -> float
    rounds: list[Round] = field(default_factory=list)


class Serve:
    """``mailserver serve`` from ``tree`` on ``conf``: started and stopped around each measurement."""

    def __init__(self, tree: Path, conf: Path, workdir: Path, workers: int, label: str):
        self.tree, self.conf, self.workdir, self.workers, self.label = tree, conf, workdir, workers, label
        self.proc: subprocess.Popen | None = None
        self.log_path = workdir / f"serve-{label.replace(' ', '_')}.log"

    def start(self) -> None:
        self.log = open(self.log_path, "w")
        env = dict(os.environ, PYTHONPATH=str(self.tree))
        self.proc = subprocess.Popen([sys.executable, "-m", "mailserver", "--config", str(self.conf), "serve",
                                      "--workers", str(self.workers)],
                                     stdout=self.log, stderr=subprocess.STDOUT, cwd=self.tree, env=env)
        deadline = time.monotonic() + 300  # a loaded machine (other suites beside) can take minutes
        while self.log_path.read_text(errors="replace").count("listening pop3 on") < self.workers:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.stop()  # a server that did not come up is not left running
                raise RuntimeError(f"mailserver serve ({self.label}) did not start:\n"
                                   + self.log_path.read_text(errors="replace")[-3000:])
            time.sleep(0.05)
        time.sleep(0.5)

    def cpu(self) -> float:
        return tree_cpu_seconds(self.proc.pid)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                for pid in _children(self.proc.pid):
                    os.kill(pid, signal.SIGKILL)
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        self.log.close()


def write_config(workdir: Path, port: int, sessions: int) -> tuple[Path, dict]:
    """The deployed server's config (TOML for ``serve``) and the same as a dict for the fill."""
    data = workdir / "data"
    conf = workdir / "mailserver.toml"
    conf.write_text(
        f'hostname = "mail.example.test"\ndata_dir = "{data}"\n'
        f'[listen]\npop3 = ["127.0.0.1:{port}"]\n'
        f"[limits]\npop3_max_sessions_per_ip = {sessions + 20}\n"
        f'[queue]\nrun = false\n[dns]\nnameservers = ["127.0.0.1:9"]\ntimeout = 1.0\n'
        f'[[domain]]\nname = "example.test"\n')
    fill = {"hostname": "mail.example.test", "data_dir": str(data), "listen": {},
            "queue": {"run": False}, "dns": {"nameservers": ["127.0.0.1:9"], "timeout": 1.0},
            "domain": [{"name": "example.test"}]}
    return conf, fill


def fill_deployed(fill_cfg: dict, sessions: int, messages: int, size: int) -> list[str]:
    from twisted.internet import reactor

    from mailserver.config import load_dict
    from mailserver.service import MailServer
    from tests import harness

    harness.ensure_reactor()
    server = MailServer(fill_cfg if not isinstance(fill_cfg, dict) else load_dict(fill_cfg, "bench"), reactor)
    harness.call(server.startService)
    try:
        return fill_ours(server, sessions, messages, size)
    finally:
        harness.call(server.stopService)


# --------------------------------------------------------------------------------------------- Dovecot


class Dovecot:
    """A private Dovecot from ../shared/bench/baseline-dovecot.sh on free ports, in its own directory."""

    def __init__(self, workdir: Path, sessions: int):
        self.base = workdir / "dovecot-base"
        self.mail = workdir / "dovecot-mail"
        self.imap_port, self.pop3_port, self.lmtp_port = free_ports(3)
        self.env = dict(os.environ, BASEDIR=str(self.base), MAILDIR=str(self.mail), IMAP_PORT=str(self.imap_port),
                        POP3_PORT=str(self.pop3_port), LMTP_PORT=str(self.lmtp_port), NUSERS=str(sessions))
        self.users = [f"user{i}" for i in range(1, sessions + 1)]

    def _script(self, verb: str) -> None:
        subprocess.run(["sh", str(DOVECOT_SCRIPT), verb], env=self.env, check=True, stdout=subprocess.DEVNULL)

    def start(self) -> None:
        self._script("start")
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.pop3_port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def master_pid(self) -> int:
        return int((self.base / "dovecot" / "run" / "master.pid").read_text())

    def cpu(self) -> float:
        return tree_cpu_seconds(self.master_pid())

    def fill(self, messages: int, size: int) -> None:
        t0 = time.perf_counter()

        def one(user: str) -> None:
            with smtplib.LMTP("127.0.0.1", self.lmtp_port) as conn:
                for i in range(messages):
                    conn.sendmail("bench@remote.test", [user], make_message(i, size))

        threads = [threading.Thread(target=one, args=(u,)) for u in self.users]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        print(f"dovecot: filled {len(self.users)} maildrops x {messages} messages through LMTP in "
              f"{time.perf_counter() - t0:.1f} s", flush=True)

    def stop(self) -> None:
        try:
            self._script("stop")
        except subprocess.CalledProcessError:
            pass


# --------------------------------------------------------------------------------------------- rounds


def one_round(clients, t, port: int, sessions: int, n: int, probe: bool) -> None:
    """One timed round against a started target (stopped after it), printed; with ``probe``, the sessions per worker
    0.3 s into the round (the clients start 1 s after run() is called)."""
    balance: list[int] = []
    try:
        clients.warm_up("127.0.0.1", port, t.users, t.password)
        timer = threading.Timer(1.3, lambda: balance.extend(sessions_per_process(port)))
        if probe:
            timer.start()
        r = clients.run("127.0.0.1", port, t.users, t.password, t.cpu_of)
        timer.cancel()
        if timer.is_alive():
            timer.join()
    finally:
        if t.stop:
            t.stop()
    t.rounds.append(r)
    split = f" [sessions per worker {'/'.join(map(str, balance))}]" if balance else ""
    print(describe(f"round {n + 1} {t.label}", sessions, r) + split + f" [load {os.getloadavg()[0]:.1f}]", flush=True)


def bench_deployed(workers: list[int], dovecot: bool, before: Path | None, sessions: int, messages: int, size: int,
                   rounds: int) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="bench-pop3-serve-"))
    workdir.chmod(0o755)  # Dovecot's mail user must reach its Maildirs below
    dc = None
    targets: list[Target] = []
    clients = None
    try:
        (port,) = free_ports(1)
        conf, fill_cfg = write_config(workdir, port, sessions)
        users = fill_deployed(fill_cfg, sessions, messages, size)
        trees = [("", ROOT)] + ([("before ", before.resolve())] if before else [])
        for prefix, tree in trees:
            for n in workers:
                srv = Serve(tree, conf, workdir, n, f"{prefix}ours {n} worker{'s' if n > 1 else ''}")
                targets.append(Target(srv.label, port, users, PASSWORD, srv.start, srv.stop, srv.cpu))
        if dovecot:
            dc = Dovecot(workdir, sessions)
            dc.start()
            dc.fill(messages, size)
            targets.append(Target("dovecot", dc.pop3_port, dc.users, "pass", None, None, dc.cpu))
        clients = Clients(sessions)
        for n in range(rounds):
            for t in targets:
                if t.start:
                    t.start()
                one_round(clients, t, t.port, sessions, n, probe=t.start is not None)
        summary(targets)
    finally:
        if clients is not None:
            clients.close()
        if dc is not None:
            dc.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def bench_cluster(specs: list[dict], dovecot: bool, database_url: str, sessions: int, messages: int, size: int,
                  rounds: int) -> None:
    """``--ours SPEC``: each configuration as `mailserver serve` (scripts/bench/cluster.py: SQLite, or PostgreSQL with
    the bodies in the database, 2 nodes behind HAProxy), every round, beside Dovecot.  Each database is filled once
    (SQLite: one data directory; PostgreSQL: one schema, dropped at the end) and every configuration on it reads
    the same maildrops; each is started before and stopped after its measurement."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from cluster import Cluster
    from cluster import describe as describe_spec

    from tests.harness import drop_pg_schema, fresh_pg_url

    workdir = Path(tempfile.mkdtemp(prefix="bench-pop3-cluster-"))
    workdir.chmod(0o755)
    dc = None
    clients = None
    schema = ""
    targets: list[Target] = []
    clusters: list[Cluster] = []
    try:
        if any(sp["db"] == "pg" for sp in specs):
            if not database_url:
                raise SystemExit("db=pg needs --database-url")
            schema = fresh_pg_url(database_url)
        filled: dict[str, list[str]] = {}
        limits = {"pop3_max_sessions_per_ip": sessions + 20}
        for sp in specs:
            kind = sp["db"]
            c = Cluster(workdir / kind, workers=sp["workers"], nodes=sp["nodes"],
                        database_url=database_url if kind == "pg" else "", schema_url=schema if kind == "pg" else "",
                        reuse_port=sp["reuse_port"], fsync=sp["fsync"], limits=limits, protocols=("pop3",))
            clusters.append(c)
            if kind not in filled:
                from mailserver.config import load

                filled[kind] = fill_deployed(load(c.nodes[0].conf.parent / "fill.toml"), sessions, messages, size)
            label = "ours " + describe_spec(sp["workers"], sp["nodes"], schema if kind == "pg" else "", sp["reuse_port"],
                                       sp["fsync"])

            def start(c=c) -> None:
                c.start()
                time.sleep(0.5)

            def cpu(c=c) -> tuple[float, float]:
                parts = [tree_cpu_seconds(n.proc.pid) for n in c.nodes]
                return sum(p[0] for p in parts), sum(p[1] for p in parts)

            t = Target(label, 0, filled[kind], PASSWORD, start, c.stop, cpu)
            t.cluster = c
            targets.append(t)
        if dovecot:
            dc = Dovecot(workdir, sessions)
            dc.start()
            dc.fill(messages, size)
            targets.append(Target("dovecot", dc.pop3_port, dc.users, "pass", None, None, dc.cpu))
        clients = Clients(sessions)
        for n in range(rounds):
            for t in targets:
                c = getattr(t, "cluster", None)
                if t.start:
                    t.start()
                port = c.port("pop3") if c is not None else t.port
                one_round(clients, t, port, sessions, n, probe=c is not None and len(c.nodes) == 1)
        summary(targets)
    finally:
        if clients is not None:
            clients.close()
        if dc is not None:
            dc.stop()
        for c in clusters:
            c.stop()
        if schema:
            drop_pg_schema(database_url, schema)
        shutil.rmtree(workdir, ignore_errors=True)


def summary(targets: list[Target]) -> None:
    ref = next((t for t in targets if t.label == "dovecot"), None)
    print("medians over the rounds (messages/s; server CPU us/message, of which user; ratio = ours / Dovecot per round):")
    for t in targets:
        rate = statistics.median(r.rate for r in t.rounds)
        cpus = [r.cpu_us for r in t.rounds if r.cpu_us is not None]
        line = (f"  {t.label:24s} {rate:8.0f} msg/s ({min(r.rate for r in t.rounds):.0f}-"
                f"{max(r.rate for r in t.rounds):.0f})")
        if cpus:
            users = [r.user_us for r in t.rounds if r.user_us is not None]
            line += (f"  {statistics.median(cpus):6.0f} us/msg ({min(cpus):.0f}-{max(cpus):.0f}), user "
                     f"{statistics.median(users):.0f}")
        if ref is not None and t is not ref:
            ratios = [a.rate / b.rate for a, b in zip(t.rounds, ref.rounds, strict=True)]
            line += "  ratio " + " ".join(f"{x:.2f}" for x in ratios)
        print(line, flush=True)


# --------------------------------------------------------------------------------------------- another server


def bench_external(target: str, user_format: str, password: str, lmtp: str, sessions: int, messages: int,
                   size: int, rounds: int) -> None:
    host, port = target.rsplit(":", 1)
    users = [user_format.format(i) for i in range(1, sessions + 1)]
    if lmtp:
        lhost, lport = lmtp.rsplit(":", 1)
        t0 = time.perf_counter()
        with smtplib.LMTP(lhost, int(lport)) as conn:
            for u in users:
                for i in range(messages):
                    conn.sendmail("bench@remote.test", [u], make_message(i, size))
        print(f"filled {sessions} maildrops x {messages} messages through LMTP in {time.perf_counter() - t0:.1f} s",
              flush=True)
    run_clients(host, int(port), users, password, rounds)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sessions", type=int, default=10)
    p.add_argument("--messages", type=int, default=1000)
    p.add_argument("--size", type=int, default=5000)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--workers", default="", help="comma-separated worker counts: run `mailserver serve` for each")
    p.add_argument("--dovecot", action="store_true", help="with --workers: also a private Dovecot, alternately")
    p.add_argument("--before", default="", help="with --workers: also `serve` from this checkout, alternately")
    p.add_argument("--profile", default="", metavar="FILE",
                   help="default mode: cProfile the reactor thread (CPU clock) over the rounds into FILE (pstats)")
    p.add_argument("--external", default="", help="HOST:PORT of another POP3 server to measure instead")
    p.add_argument("--user-format", default="user{}", help="with --external: user names, {} = 1..sessions")
    p.add_argument("--password", default="pass", help="with --external")
    p.add_argument("--lmtp", default="", help="with --external: HOST:PORT to fill the maildrops through first")
    p.add_argument("--ours", action="append", default=[], metavar="SPEC",
                   help="a `mailserver serve` configuration (scripts/bench/cluster.py), repeatable: "
                        "workers=N[,db=pg][,nodes=2][,reuse_port=1][,fsync=always]; with --dovecot beside Dovecot")
    p.add_argument("--database-url", default=os.environ.get("MAILSERVER_TEST_DATABASE_URL", ""),
                   help="PostgreSQL for db=pg (one fresh schema, dropped at the end)")
    a = p.parse_args()
    if a.ours:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from cluster import parse_spec

        if a.dovecot and not DOVECOT_SCRIPT.exists():
            p.error(f"--dovecot needs {DOVECOT_SCRIPT}")
        bench_cluster([parse_spec(x) for x in a.ours], a.dovecot, a.database_url, a.sessions, a.messages, a.size,
                      a.rounds)
    elif a.external:
        bench_external(a.external, a.user_format, a.password, a.lmtp, a.sessions, a.messages, a.size, a.rounds)
    elif a.workers or a.dovecot:
        try:
            workers = [int(x) for x in a.workers.split(",")] if a.workers else []
        except ValueError:
            p.error("--workers: expected comma-separated numbers, e.g. 1,2")
        if a.dovecot and not DOVECOT_SCRIPT.exists():
            p.error(f"--dovecot needs {DOVECOT_SCRIPT}")
        before = Path(a.before) if a.before else None
        if before is not None and not (before / "mailserver" / "__main__.py").exists():
            p.error(f"--before: {before} is not a checkout of this project")
        bench_deployed(workers, a.dovecot, before, a.sessions, a.messages, a.size, a.rounds)
    else:
        bench_ours(a.sessions, a.messages, a.size, a.rounds, a.profile)


if __name__ == "__main__":
    main()
