#!/usr/bin/env python3
"""IMAP benchmarks (issue 5, "Must show" (a) and (b)).

(a) ``--messages 100000 --small 1000``: two mailboxes filled directly through the store (one shared blob, so
    filling is fast); for each: SELECT, ``UID FETCH 1:* (UID FLAGS)``, a header fetch of the newest 50 and a SEARCH,
    each timed over real sockets with imaplib; prints the times and the large/small ratio.
(b) ``--idle 10000``: that many authenticated IDLE sessions (opened by a child process with asyncio) on one server
    process; prints the server's RSS per session and the time from a delivery until every session saw its EXISTS.

Run: ``.venv/bin/python scripts/bench/imap.py [--messages N] [--small N] [--idle N] [--repeat N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import imaplib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

PASSWORD = "bench-password"


def rss_kb(pid: int | None = None) -> int:
    with open(f"/proc/{pid or os.getpid()}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def raw_message(i: int) -> bytes:
    return (f"From: Sender {i % 97} <s{i % 97}@example.org>\r\nTo: bench@example.test\r\nSubject: message {i}\r\n"
            f"Date: Mon, 02 Mar 2026 10:00:00 +0000\r\nMessage-ID: <{i}@bench>\r\n\r\n"
            + "body line\r\n" * 20).encode()


def fill(store, account_id: int, mailbox: str, n: int) -> None:
    from mailserver.ingest import parsed_columns
    from storage.models import FLAG_SEEN
    from storage.store import Delivery

    raw = raw_message(0)
    ref = store.blobs.put(raw)
    parsed = parsed_columns(raw)
    batch = []
    for i in range(n):
        batch.append(Delivery(account_id, ref, parsed, mailbox, FLAG_SEEN if i % 3 else 0, (), None, False))
        if len(batch) == 5000:
            store.deliver_batch(batch)
            batch = []
    if batch:
        store.deliver_batch(batch)


def timed(f):
    t = time.perf_counter()
    result = f()
    return time.perf_counter() - t, result


def bench_mailbox(port: int, user: str, mailbox: str, n: int) -> dict:
    c = imaplib.IMAP4("127.0.0.1", port)
    c._mode_utf8 = False
    c.login(user, PASSWORD)
    out = {}
    out["select"], _ = timed(lambda: c.select(mailbox))
    out["uid_fetch_flags"], (typ, data) = timed(lambda: c.uid("FETCH", "1:*", "(UID FLAGS)"))
    assert typ == "OK" and len(data) == n, (typ, len(data))
    lo = max(1, n - 49)
    out["headers_newest_50"], (typ, data) = timed(lambda: c.fetch(f"{lo}:{n}", "(UID BODY.PEEK[HEADER])"))
    assert typ == "OK"
    out["search_unseen"], (typ, data) = timed(lambda: c.search(None, "UNSEEN"))
    assert typ == "OK" and len(data[0].split()) == (n + 2) // 3
    c.logout()
    return out


def _medians(runs: list[dict]) -> dict:
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def part_a(srv, large: int, small: int, repeat: int = 1) -> None:
    acct = srv.store.get_account("bench@example.test")
    srv.store.create_mailbox(acct.id, "Large")
    srv.store.create_mailbox(acct.id, "Small")
    t = time.perf_counter()
    fill(srv.store, acct.id, "Large", large)
    fill(srv.store, acct.id, "Small", small)
    print(f"(a) filled {large} + {small} messages in {time.perf_counter() - t:.1f} s")
    port = srv.port("imap")
    little_cold = bench_mailbox(port, "bench@example.test", "Small", small)
    big_cold = bench_mailbox(port, "bench@example.test", "Large", large)  # first SELECT after start: lists all
    # Later SELECTs: snapshot + changes; with --repeat, the median of that many sessions per operation.
    big = _medians([bench_mailbox(port, "bench@example.test", "Large", large) for _ in range(repeat)])
    little = _medians([bench_mailbox(port, "bench@example.test", "Small", small) for _ in range(repeat)])
    print(f"    {'operation':<20} {large:>10} msgs {small:>8} msgs   ratio (size ratio {large / small:.0f})")
    print(f"    {'select (cold)':<20} {big_cold['select'] * 1000:>10.2f} ms {little_cold['select'] * 1000:>8.2f} ms"
          f"   {big_cold['select'] / little_cold['select']:8.1f}")
    for k in big:
        print(f"    {k:<20} {big[k] * 1000:>10.2f} ms {little[k] * 1000:>8.2f} ms   {big[k] / little[k]:8.1f}")


# ------------------------------------------------------------------------------------------------ (b) IDLE

async def _client(port: int, user: str, ready: asyncio.Event, counter: list, seen: list, sem,
                  all_seen: asyncio.Event, hold: bool = False) -> None:
    # Logins are paced by ``sem``: the authenticator counts concurrent attempts for one account against its
    # throttling limit (a burst of thousands would be refused, as it should be).
    async with sem:
        while True:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            await reader.readline()
            writer.write(f'a LOGIN "{user}" "{PASSWORD}"\r\n'.encode())
            line = await reader.readline()
            while line.startswith(b"* "):
                line = await reader.readline()
            if line.startswith(b"a OK"):
                break
            print("login refused:", line, file=sys.stderr, flush=True)
            writer.close()
            await asyncio.sleep(0.2)
    writer.write(b"b SELECT INBOX\r\nc IDLE\r\n")
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError("closed")
        if line.startswith(b"+ "):
            break
    counter[0] += 1
    if counter[0] == counter[1]:
        ready.set()
    while True:
        line = await reader.readline()
        if not line:
            return
        if line.endswith(b"EXISTS\r\n"):
            seen.append(time.time())
            if len(seen) == counter[1]:
                # Said at once, before any session sends DONE; with --hold, DONE waits for a line on stdin (so a
                # caller measuring the server, imap_idle_cost.py, counts the fan-out alone).
                print(json.dumps({"seen": len(seen), "last": max(seen)}), flush=True)
                if hold:
                    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
                all_seen.set()
            # Leave IDLE only once every session saw it: the sessions' DONE and logout are not part of the fan-out.
            await all_seen.wait()
            writer.write(b"DONE\r\n")
            await writer.drain()
            writer.close()
            return


async def _clients_main(port: int, user: str, n: int, hold: bool = False) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    ready, all_seen = asyncio.Event(), asyncio.Event()
    counter = [0, n]
    seen: list[float] = []
    sem = asyncio.Semaphore(8)
    t = time.time()
    tasks = [asyncio.create_task(_client(port, user, ready, counter, seen, sem, all_seen, hold)) for _ in range(n)]
    await ready.wait()
    print(json.dumps({"ready": n, "connect_s": time.time() - t}), flush=True)
    await asyncio.gather(*tasks)


def part_b(srv, n: int) -> None:
    base = rss_kb()
    proc = subprocess.Popen([sys.executable, __file__, "--clients", str(n), "--port", str(srv.port("imap")),
                             "--user", "idle@example.test"], stdout=subprocess.PIPE, text=True)
    first = json.loads(proc.stdout.readline())
    time.sleep(1.0)
    rss = rss_kb()
    print(f"(b) {n} IDLE sessions ready in {first['connect_s']:.1f} s; server RSS {base / 1024:.0f} MB -> "
          f"{rss / 1024:.0f} MB: {(rss - base) / n:.1f} KB per session")
    from tests.imap.imap_client import message

    t = time.time()
    srv.deliver("idle@example.test", message("wake up", to="idle@example.test"))
    done = json.loads(proc.stdout.readline())
    proc.wait(timeout=120)
    print(f"    delivery seen by {done['seen']}/{n} sessions; the last after {done['last'] - t:.3f} s")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=100_000)
    ap.add_argument("--small", type=int, default=1_000)
    ap.add_argument("--idle", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=1, help="(a): sessions per mailbox after the first, medians shown")
    ap.add_argument("--clients", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--hold", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--user", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.clients:
        asyncio.run(_clients_main(args.port, args.user, args.clients, args.hold))
        return
    from mailserver.service import raise_open_files_limit
    from tests.harness import running_server

    raise_open_files_limit()
    with tempfile.TemporaryDirectory() as tmp:
        limits = {"imap_max_sessions_per_ip": args.idle + 100}
        with running_server(Path(tmp), listeners=("imap",), limits=limits) as srv:
            srv.add_user("bench@example.test", PASSWORD)
            srv.add_user("idle@example.test", PASSWORD)
            if args.messages:
                part_a(srv, args.messages, args.small, max(1, args.repeat))
            if args.idle:
                part_b(srv, args.idle)


if __name__ == "__main__":
    main()
