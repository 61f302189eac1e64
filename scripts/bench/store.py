#!/usr/bin/env python3
"""Store benchmark: durable deliveries per second through the real delivery path.

Path measured (``deliver_raw``: the ingest pipeline with a placement, as drafts, Sent copies and imports use it):
blob written and MIME parsed once in the blob pool, made durable and committed by the group committer (one flush and
one transaction per batch).  A delivery counts when its Deferred fired, i.e. after the commit returned.

    scripts/bench/store.py [--count 3000] [--concurrency 64] [--postgres URL] [--mailboxes 1,100] [--sizes 5,100]

Runs: {1 mailbox, 100 mailboxes} x {5 KB, 100 KB} on SQLite (``--mailboxes`` and ``--sizes`` pick some), and on
PostgreSQL when --postgres or MAILSERVER_TEST_DATABASE_URL is given.  Prints one line per run: deliveries/s, and the
process's CPU time per delivery (all threads), which other work on a shared machine disturbs less than the rate, then
that CPU by thread (the reactor thread, each pool's threads together; from /proc, so in clock ticks of 10 ms).

It also runs against a tree from before the typed Services (``scripts/bench/compare.py`` copies it there), so
before/after figures come from the same script.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from twisted.internet import defer, reactor  # noqa: E402

from mailserver.config import load_dict  # noqa: E402
from mailserver.ingest import deliver_raw  # noqa: E402
from mailserver.service import MailServer  # noqa: E402


def make_message(i: int, size: int) -> bytes:
    head = (f"From: Sender {i} <sender{i}@remote.test>\r\nTo: rcpt@example.test\r\nSubject: bench message {i}\r\n"
            f"Date: Sun, 22 Nov 2026 10:00:00 +0000\r\nMessage-ID: <{i}.{random.random()}@remote.test>\r\n"
            "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n").encode()
    line = b"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor.\r\n"
    body = line * max(1, (size - len(head)) // len(line))
    return head + body


def thread_cpu() -> dict[str, float]:
    """CPU seconds so far of this process's threads by role: "reactor" (the main thread) or the pool's name."""
    import threading

    names = {t.native_id: t.name for t in threading.enumerate()}
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended meanwhile
            continue
        role = "reactor" if int(tid) == os.getpid() else names.get(int(tid), "other").removeprefix("PoolThread-")
        role = role.rsplit("-", 1)[0] if role[-1:].isdigit() else role
        out[role] = out.get(role, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


@defer.inlineCallbacks
def run_one(url: str, mailboxes: int, size: int, count: int, concurrency: int, label: str):
    tmp = tempfile.mkdtemp(prefix="bench-store-")
    table = {"hostname": "mail.example.test", "data_dir": tmp, "database_url": url,
             "domain": [{"name": "example.test"}]}
    server = MailServer(load_dict(table, "bench"), reactor)
    server.startService()
    from mailserver.auth import PasswordHasher

    h = PasswordHasher("argon2", low_cost=True).hash("x")
    accounts = [server.store.add_account(f"u{i}@example.test", h).id for i in range(mailboxes)]
    msgs = [make_message(i, size) for i in range(min(count, 200))]
    sem = defer.DeferredSemaphore(concurrency)
    th0 = thread_cpu()
    t0, cpu0 = time.perf_counter(), time.process_time()
    services = getattr(server, "provided", server)  # before the typed Services, deliver_raw took the server
    ds = [sem.run(deliver_raw, services, accounts[i % mailboxes], msgs[i % len(msgs)]) for i in range(count)]
    results = yield defer.gatherResults(ds)
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    th1 = thread_cpu()
    by_thread = sorted(((v - th0.get(k, 0.0)) / count * 1000, k) for k, v in th1.items())
    by_thread = ", ".join(f"{k} {v:.3f}" for v, k in reversed(by_thread) if v > 0)
    assert all(r.ok for r in results)
    batches = server.astore.committer.batches
    yield server.stopService()
    print(f"{label:<10} {mailboxes:>3} mailbox(es) {size // 1024:>4} KB: {count / elapsed:8.0f} deliveries/s "
          f"({count} in {elapsed:.2f} s, {count / max(1, batches):.1f} per transaction, "
          f"CPU {cpu / count * 1000:.3f} ms per delivery; {by_thread})", flush=True)


@defer.inlineCallbacks
def main(args):
    from tests.harness import drop_pg_schema, fresh_pg_url

    runs = [("sqlite", "")]
    pg = args.postgres or os.environ.get("MAILSERVER_TEST_DATABASE_URL")
    if pg:
        sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

        runs.append(("postgres", pg))
    try:
        for label, base in runs:
            for mailboxes in args.mailboxes:
                for size in (kb * 1024 for kb in args.sizes):
                    url = base and fresh_pg_url(base)
                    count = args.count if size < 50_000 else max(200, args.count // 5)
                    try:
                        yield run_one(url, mailboxes, size, count, args.concurrency, label)
                    finally:
                        if url:
                            drop_pg_schema(base, url)  # leave the database as we found it
    finally:
        reactor.stop()


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=3000)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--postgres", default="")
    ap.add_argument("--mailboxes", type=_ints, default=(1, 100), help="comma-separated mailbox counts (default 1,100)")
    ap.add_argument("--sizes", type=_ints, default=(5, 100), help="comma-separated sizes in KB (default 5,100)")
    a = ap.parse_args()
    reactor.callWhenRunning(main, a)
    reactor.run()
