#!/usr/bin/env python3
"""Outbound throughput: messages per second from the queue to a local SMTP receiver on 127.0.0.1.

Two runs: every message to 1 destination domain, and spread over 50 domains (MX records served by a DNS server on
127.0.0.1).  The receiver runs in the same process and reactor as the queue (so the figure includes its cost).
Usage: scripts/bench/outbound.py [--messages N] [--size BYTES]   (MAILSERVER_TEST_DATABASE_URL selects PostgreSQL)
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from storage.store import QueueRecipientSpec  # noqa: E402
from tests import harness  # noqa: E402
from tests.dnsserver import dns_server  # noqa: E402
from tests.outbound.receiver import receiver  # noqa: E402


def run(n_messages: int, n_domains: int, size: int, database_url: str) -> float:
    from mailserver.delivery.queue import QueueRunner

    zones = {f"d{i}.bench": {"": [("MX", 10, f"mx.d{i}.bench")], "mx": [("A", "127.0.0.1")]}
             for i in range(n_domains)}
    body = (b"x" * 76 + b"\r\n") * max(1, size // 78)
    with tempfile.TemporaryDirectory() as tmp, dns_server(zones) as dns, receiver() as rx:
        url = harness.fresh_pg_url(database_url) if database_url else ""
        try:
            with harness.running_server(Path(tmp), listeners=(), database_url=url,
                                        dns={"nameservers": [dns.address], "timeout": 2.0},
                                        queue={"max_connections": 50, "max_connections_per_domain": 10}) as srv:
                store = srv.store
                for i in range(n_messages):
                    raw = (f"From: <a@example.test>\r\nTo: <u{i}@d{i % n_domains}.bench>\r\n"
                           f"Subject: bench {i}\r\nMessage-ID: <{i}@bench>\r\n\r\n").encode() + body
                    ref = store.blobs.put(raw)
                    store.enqueue("a@example.test", ref, [QueueRecipientSpec(f"u{i}@d{i % n_domains}.bench")])
                runner = harness.call(lambda: QueueRunner(srv.services, port=rx.port))
                t0 = time.perf_counter()
                harness.call(runner.start)
                from storage.queue import QueueStore

                qs = QueueStore(store)
                while qs.next_due() is not None:
                    time.sleep(0.05)
                elapsed = time.perf_counter() - t0
                harness.call(runner.stop)
                assert len(rx.transactions) == n_messages, (len(rx.transactions), n_messages)
        finally:
            if url:
                harness.drop_pg_schema(database_url, url)
    return n_messages / elapsed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=1000)
    ap.add_argument("--size", type=int, default=5000)
    args = ap.parse_args()
    db = os.environ.get("MAILSERVER_TEST_DATABASE_URL", "")
    backend = "PostgreSQL" if db else "SQLite"
    for domains in (1, 50):
        rate = run(args.messages, domains, args.size, db)
        print(f"{backend}: {args.messages} messages of {args.size} bytes to {domains} domain(s): {rate:.0f} msg/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
