#!/usr/bin/env python3
"""IMAP write-side cost that does not move with the machine's load: server CPU and SQL statements per command.

    .venv/bin/python scripts/bench/imap_write_cpu.py [--messages 300] [--repeat 200] [--watchers 1]
        [--profile OUT --profile-ops store,append]

The write half of imaptest's default mix (LOGIN/LOGOUT, STORE, APPEND, EXPUNGE) and COPY/MOVE, one operation at a
time, each ``--repeat`` times by a client in a child process (its own CPU is not counted) on one logged-in
connection, while ``--watchers`` other connections of the same user keep INBOX selected (they hear every change: the
change hub's fan-out is part of the cost, as in imaptest, where about 20 sessions share a few users). Per operation:
the server process's CPU (every thread: ``/proc/self/stat`` utime+stime) and the SQL statements it executed (a
SQLAlchemy ``before_cursor_execute`` listener on the store's engine), divided by the repeat count.

``move`` moves the messages ``copy`` put into Other back: run it after ``copy`` (``--ops copy,move``).
``--profile OUT`` runs yappi (CPU clock, every thread: the reactor and the database and hash pools) during the
operations named by ``--profile-ops`` and writes its pstats to OUT. Like ``imap_cpu.py`` it uses only
``tests.harness.running_server``, so the same script measures another revision (run it from that worktree).
"""

from __future__ import annotations

import argparse
import imaplib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

PASSWORD = "bench-password"
USER = "bench@example.test"
OPERATIONS = ("login_logout", "store_flags", "store_silent", "append", "store_deleted_expunge", "uid_expunge",
              "copy", "move")


def cpu_seconds() -> float:
    with open("/proc/self/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _message(i: int) -> bytes:
    body = ("Line of text number %d in a message appended by the benchmark.\r\n" * 30) % tuple(range(30))
    return (f"From: a{i}@example.test\r\nTo: {USER}\r\nSubject: appended {i}\r\n"
            f"Message-ID: <bench-{i}-{os.getpid()}@example.test>\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\n\r\n"
            + body).encode()


def child(port: int, repeat: int, watchers: int) -> None:
    """The client: on each ``go`` line from the parent, run one operation ``repeat`` times, then say ``done``."""
    def connect():
        c = imaplib.IMAP4("127.0.0.1", port)
        c._mode_utf8 = False
        return c

    c = connect()
    c.login(USER, PASSWORD)
    c.select("INBOX")
    others = []
    for _ in range(watchers):
        w = connect()
        w.login(USER, PASSWORD)
        w.select("INBOX")
        others.append(w)
    counter = [0]

    def n() -> int:
        counter[0] += 1
        return counter[0]

    def login_logout():
        x = connect()
        x.login(USER, PASSWORD)
        x.logout()

    def expunge_one():
        c.store("*", "+FLAGS.SILENT", "(\\Deleted)")
        c.expunge()

    def uid_expunge_one():
        typ, data = c.uid("FETCH", "*", "(UID)")
        uid = data[0].split(b"UID ")[1].split(b")")[0].decode()
        c.uid("STORE", uid, "+FLAGS.SILENT", "(\\Deleted)")
        c.uid("EXPUNGE", uid)

    ops = {  # operation: (run once before, run ``repeat`` times)
        "login_logout": (None, login_logout),
        # Every STORE changes something: 50 messages get the flags, the next 50 STOREs take them off again.
        "store_flags": (None, lambda: c.store(str(n() % 50 + 1), "+FLAGS" if counter[0] // 50 % 2 else "-FLAGS",
                                              "(\\Flagged $Bench)")),
        "store_silent": (None, lambda: c.store(str(n() % 50 + 1),
                                               "+FLAGS.SILENT" if counter[0] // 50 % 2 else "-FLAGS.SILENT",
                                               "(\\Flagged $Bench)")),
        "append": (None, lambda: c.append("INBOX", "(\\Seen)", None, _message(n()))),
        "store_deleted_expunge": (None, expunge_one),
        "uid_expunge": (None, uid_expunge_one),
        "copy": (None, lambda: c.copy(str(n() % 50 + 1), "Other")),
        "move": (lambda: c.select("Other"), lambda: c._simple_command("MOVE", "1", "INBOX")),
    }
    for line in sys.stdin:
        op = line.strip()
        if op == "quit":
            break
        prep, run = ops[op]
        if prep is not None:
            prep()
        print("ready", flush=True)
        sys.stdin.readline()
        for _ in range(repeat):
            run()
        for w in others:  # the watchers take in what they were told (part of the fan-out's cost)
            w.noop()
        print("done", flush=True)
        c.select("INBOX")  # outside the measured window
    for x in [c, *others]:
        x.logout()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=200)
    ap.add_argument("--watchers", type=int, default=1, help="other sessions with INBOX selected (default 1)")
    ap.add_argument("--profile", default="", help="write a yappi profile (CPU clock, all threads) here (pstats)")
    ap.add_argument("--profile-ops", default=",".join(OPERATIONS), help="the operations --profile covers")
    ap.add_argument("--ops", default=",".join(OPERATIONS), help="the operations to run (in this order)")
    ap.add_argument("--statements", action="store_true", help="also list the statements of each operation")
    ap.add_argument("--child", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.repeat, args.watchers)
        return
    from imap import fill
    from sqlalchemy import event

    from tests.harness import running_server

    with tempfile.TemporaryDirectory() as tmp, running_server(Path(tmp), listeners=("imap",)) as srv:
        srv.add_user(USER, PASSWORD)
        acct = srv.store.get_account(USER)
        srv.store.create_mailbox(acct.id, "Other")
        fill(srv.store, acct.id, "INBOX", args.messages)
        statements = [0]
        seen: list[str] = []
        capture = [False]

        def count(conn, cursor, statement, *rest):
            statements[0] += 1
            if capture[0]:
                seen.append(" ".join(statement.split())[:110])

        event.listen(srv.store.engine, "before_cursor_execute", count)
        proc = subprocess.Popen([sys.executable, __file__, "--child", str(srv.port("imap")), "--repeat",
                                 str(args.repeat), "--watchers", str(args.watchers)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        yappi = None
        if args.profile:
            import yappi
            yappi.set_clock_type("cpu")
        try:
            print(f"{args.messages} messages in INBOX, {args.repeat} repeats per operation, {args.watchers} "
                  f"watching session(s); load average {os.getloadavg()[0]:.1f}")
            for op in args.ops.split(","):
                for measured in (False, True):  # one warm-up round, then the measured one
                    profiling = measured and yappi is not None and op in args.profile_ops.split(",")
                    capture[0] = measured
                    seen.clear()
                    proc.stdin.write(op + "\n")
                    proc.stdin.flush()
                    assert proc.stdout.readline().strip() == "ready"
                    if profiling:
                        yappi.start(profile_threads=True)
                    s0, c0, t0 = statements[0], cpu_seconds(), time.perf_counter()
                    proc.stdin.write("go\n")
                    proc.stdin.flush()
                    assert proc.stdout.readline().strip() == "done"
                    c1, s1, t1 = cpu_seconds(), statements[0], time.perf_counter()
                    if profiling:
                        yappi.stop()
                capture[0] = False
                per = args.repeat
                print(f"    {op:<24} server CPU {(c1 - c0) * 1000 / per:7.3f} ms   statements "
                      f"{(s1 - s0) / per:6.2f}   wall {(t1 - t0) * 1000 / per:7.3f} ms", flush=True)
                if args.statements:
                    kinds: dict[str, int] = {}
                    for s in seen:
                        kinds[s] = kinds.get(s, 0) + 1
                    for s, k in sorted(kinds.items(), key=lambda kv: -kv[1]):
                        print(f"        {k / per:6.2f}  {s}")
            proc.stdin.write("quit\n")
            proc.stdin.flush()
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if yappi is not None:
            yappi.get_func_stats().save(args.profile, type="pstat")
            print(f"profile in {args.profile}")


if __name__ == "__main__":
    main()
