#!/usr/bin/env python3
"""SMTP delivery benchmark: N parallel sessions send 5 KB messages into local mailboxes.

Reports messages per second *durably delivered* (each counted only on its 250 after DATA, which the server sends
after fsync + commit) and the server's peak RSS.  The server runs in a child process on 127.0.0.1 with a fresh data
directory; everything started here is stopped at the end.

    .venv/bin/python scripts/bench/smtp.py [--sessions 10] [--messages 2000] [--size 5120] [--scan]

``--scan`` runs the same load four times: without content checks, with clamd, with rspamd, with both (private
instances of Debian's packages, started on loopback as the tests start them, stopped at the end), and prints the
figures of each run.

For a side-by-side figure with Postfix + Dovecot see /work/shared/bench/README.md (run by hand).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def serve(data_dir: str, port_queue, stop_event, scan: dict) -> None:
    from twisted.internet import reactor

    from mailserver import config as config_mod
    from mailserver.auth import PasswordHasher
    from mailserver.service import MailServer

    cfg = config_mod.load_dict({"hostname": "bench.example.test", "data_dir": data_dir,
                                "listen": {"smtp": ["127.0.0.1:0"]}, "domain": [{"name": "example.test"}],
                                **scan})
    server = MailServer(cfg, reactor)
    server.startService()
    h = PasswordHasher("argon2", low_cost=True).hash("x")
    for i in range(10):
        server.store.add_account(f"user{i}@example.test", h)
    port_queue.put(server.port("smtp"))

    def watch():
        stop_event.wait()
        reactor.callFromThread(lambda: server.stopService().addBoth(lambda _: reactor.stop()))

    threading.Thread(target=watch, daemon=True).start()
    reactor.run(installSignalHandlers=False)


def peak_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def client(port: int, n: int, body: bytes, idx: int, done: list, errors: list) -> None:
    try:
        s = socket.create_connection(("127.0.0.1", port))
        f = s.makefile("rb")

        def replies(k):
            for _ in range(k):
                while True:
                    line = f.readline()
                    if not line:
                        raise ConnectionError("closed")
                    if line[3:4] == b" ":
                        break
                if line[:1] not in (b"2", b"3"):
                    raise RuntimeError(line)

        replies(1)
        s.sendall(b"EHLO bench\r\n")
        replies(1)
        rcpt = f"user{idx % 10}@example.test".encode()
        for _ in range(n):
            # RFC 2920: MAIL, RCPT and DATA in one packet, then the body.
            s.sendall(b"MAIL FROM:<bench@example.net>\r\nRCPT TO:<" + rcpt + b">\r\nDATA\r\n")
            replies(3)
            s.sendall(body + b".\r\n")
            replies(1)
            done[idx] += 1
        s.sendall(b"QUIT\r\n")
        s.close()
    except Exception as e:  # reported by main
        errors.append(e)


def run(args, body: bytes, scan: dict) -> int:
    ctx = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="smtp-bench-") as tmp:
        q, stop = ctx.Queue(), ctx.Event()
        proc = ctx.Process(target=serve, args=(tmp, q, stop, scan))
        proc.start()
        try:
            port = q.get(timeout=60)
            per = args.messages // args.sessions
            done, errors = [0] * args.sessions, []
            threads = [threading.Thread(target=client, args=(port, per, body, i, done, errors))
                       for i in range(args.sessions)]
            t0 = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            elapsed = time.perf_counter() - t0
            rss = peak_rss_kib(proc.pid)
        finally:
            stop.set()
            proc.join(30)
            if proc.is_alive():
                proc.kill()
                proc.join()
    total = sum(done)
    checks = "+".join(k for k in ("antivirus", "antispam") if k in scan) or "no checks"
    print(f"sessions={args.sessions} messages={total} size={len(body)}B elapsed={elapsed:.2f}s "
          f"rate={total / elapsed:.0f} msg/s (durably delivered; {checks}) server_peak_rss={rss / 1024:.0f} MiB")
    if errors:
        print(f"errors: {errors[:3]}", file=sys.stderr)
        return 1
    return 0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sessions", type=int, default=10)
    ap.add_argument("--messages", type=int, default=2000, help="total messages")
    ap.add_argument("--size", type=int, default=5 * 1024)
    ap.add_argument("--scan", action="store_true", help="also run with rspamd and clamd checking every message")
    args = ap.parse_args()
    line = b"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor.\r\n"
    body = (b"From: bench@example.net\r\nSubject: bench\r\nDate: Tue, 1 Dec 2026 10:00:00 +0000\r\n"
            b"Message-ID: <bench@example.net>\r\n\r\n" + line * (args.size // len(line)))
    if not args.scan:
        return run(args, body, {})
    from tests.inbound.daemons import launch_clamd, launch_rspamd, stop_pid, wait_ready

    with tempfile.TemporaryDirectory(prefix="smtp-bench-daemons-") as tmp:
        daemons = []
        try:
            for launch, name in ((lambda d: launch_rspamd(d, workers=os.cpu_count() or 1), "rspamd"),
                                 (launch_clamd, "clamd")):
                d = Path(tmp) / name
                d.mkdir()
                daemons.append(launch(d))
            for d in daemons:
                wait_ready(d)
            rspamd, clamd = daemons
            spam, virus = {"antispam": {"rspamd": rspamd.address}}, {"antivirus": {"clamd": clamd.address}}
            return max(run(args, body, scan) for scan in ({}, virus, spam, {**virus, **spam}))
        finally:
            for d in daemons:
                stop_pid(d.pid)


if __name__ == "__main__":
    sys.exit(main())
