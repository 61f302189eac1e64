#!/usr/bin/env python3
"""POP3 benchmark: messages per second downloaded by parallel sessions, each from its own maildrop.

    scripts/bench/pop3.py [--sessions 10] [--messages 1000] [--size 5000] [--rounds 1]
    scripts/bench/pop3.py --external 127.0.0.1:10110 --user-format 'user{}' --password pass \
        --lmtp 127.0.0.1:10024          # the same load against another server (e.g. Dovecot)

Our server runs in this process (reactor thread, SQLite and file blobs in a temporary directory); the clients are
separate processes (one per session, so they do not share the server's interpreter), each doing
USER/PASS, LIST, RETR of every message (keep), QUIT.  A message counts when its RETR completed with the exact size
LIST announced.  Prints messages/s and MB/s for the whole run.

To compare with Dovecot, start it by hand (``/work/shared/bench/baseline-dovecot.sh start``: users user1..user100,
password "pass", POP3 on 10110, LMTP on 10024), run this script with ``--external``, and stop it afterwards
(``baseline-dovecot.sh stop``).  With ``--lmtp`` the maildrops are filled through LMTP first.
"""

from __future__ import annotations

import argparse
import multiprocessing
import poplib
import smtplib
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

PASSWORD = "bench password"


def make_message(i: int, size: int) -> bytes:
    head = (f"From: Sender <sender{i}@remote.test>\r\nTo: rcpt@example.test\r\nSubject: bench message {i}\r\n"
            f"Date: Sun, 22 Nov 2026 10:00:00 +0000\r\nMessage-ID: <{i}.pop3bench@remote.test>\r\n\r\n").encode()
    line = b"Lorem ipsum dolor sit amet, consectetur adipiscing elit.\r\n.A line starting with a dot.\r\n"
    return head + line * max(1, (size - len(head)) // len(line))


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


def run_clients(host: str, port: int, users: list[str], password: str, rounds: int) -> None:
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(len(users)) as pool:
        for r in range(rounds):
            start_at = time.time() + 1.0  # every client process is up before the clock starts
            t0 = start_at
            results = pool.map(client, [(host, port, u, password, start_at) for u in users])
            wall = time.time() - t0
            msgs = sum(r_[0] for r_ in results)
            octets = sum(r_[1] for r_ in results)
            print(f"round {r + 1}: {len(users)} sessions, {msgs} messages, {octets / 1e6:.1f} MB in {wall:.2f} s: "
                  f"{msgs / wall:.0f} messages/s, {octets / 1e6 / wall:.1f} MB/s "
                  f"(slowest session {max(r_[2] for r_ in results):.2f} s)", flush=True)


# --------------------------------------------------------------------------------------------- our server


def bench_ours(sessions: int, messages: int, size: int, rounds: int) -> None:
    from twisted.internet import defer, reactor

    from mailserver.config import load_dict
    from mailserver.ingest import deliver_raw
    from mailserver.service import MailServer
    from tests import harness

    tmp = tempfile.mkdtemp(prefix="bench-pop3-")
    cfg = load_dict({"hostname": "mail.example.test", "data_dir": tmp, "listen": {"pop3": ["127.0.0.1:0"]},
                     "domain": [{"name": "example.test"}]}, "bench")
    harness.ensure_reactor()
    server = MailServer(cfg, reactor)
    harness.call(server.startService)
    try:
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
        run_clients("127.0.0.1", server.port("pop3"), users, PASSWORD, rounds)
    finally:
        harness.call(server.stopService)


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
    p.add_argument("--external", default="", help="HOST:PORT of another POP3 server to measure instead")
    p.add_argument("--user-format", default="user{}", help="with --external: user names, {} = 1..sessions")
    p.add_argument("--password", default="pass", help="with --external")
    p.add_argument("--lmtp", default="", help="with --external: HOST:PORT to fill the maildrops through first")
    a = p.parse_args()
    if a.external:
        bench_external(a.external, a.user_format, a.password, a.lmtp, a.sessions, a.messages, a.size, a.rounds)
    else:
        bench_ours(a.sessions, a.messages, a.size, a.rounds)


if __name__ == "__main__":
    main()
