"""Webmail benchmark: message-list page and message page times for a 1,000- and a 100,000-message folder.

Prints the median server time (request to last byte over HTTPS on 127.0.0.1, keep-alive) of the first list page and of
opening a message for each folder size, their ratio (the list page must not grow with the folder), and requests per
second of the list page with 10 concurrent clients.

    .venv/bin/python scripts/bench/webmail.py [--large 100000] [--seconds 5]
"""

from __future__ import annotations

import argparse
import http.client
import re
import ssl
import statistics
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from mailserver.ingest import parsed_columns  # noqa: E402
from storage.store import Delivery  # noqa: E402
from tests.harness import running_server  # noqa: E402

PW = "bench password"


def fill(store, account_id: int, mailbox: str, n: int) -> None:
    """n messages sharing one body (stored once), with distinct subjects, dates and Message-IDs (one conversation
    each), in batches of 2,000."""
    raw = (b"From: Sender <sender@example.org>\r\nTo: bench@example.test\r\nSubject: bench\r\n"
           b"Message-ID: <bench@example.org>\r\n\r\n" + b"Lorem ipsum dolor sit amet.\r\n" * 40)
    ref = store.blobs.put(raw)
    base = parsed_columns(raw)
    now = time.time() - n
    done = 0
    while done < n:
        batch = []
        for i in range(done, min(n, done + 2000)):
            p = dict(base, subject=f"Message number {i}", preview=f"preview {i}", message_id=f"<bench-{i}@example.org>")
            batch.append(Delivery(account_id, ref, p, mailbox, 0, (), now + i, False))
        store.deliver_batch(batch)
        done += len(batch)


class Session:
    def __init__(self, port: int, cookie: str):
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        self.conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=60)
        self.cookie = cookie

    def get(self, path: str) -> float:
        t = time.perf_counter()
        self.conn.request("GET", path, headers={"Cookie": self.cookie})
        r = self.conn.getresponse()
        body = r.read()
        dt = time.perf_counter() - t
        if r.status != 200:
            raise RuntimeError(f"{path}: {r.status} {body[:200]!r}")
        return dt


def login(port: int, address: str) -> str:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    c = http.client.HTTPSConnection("127.0.0.1", port, context=ctx)
    c.request("GET", "/login")
    r = c.getresponse()
    page = r.read()
    pre = re.search(rb'name="_pre" value="([^"]+)"', page).group(1).decode()
    body = urllib.parse.urlencode({"_pre": pre, "username": address, "password": PW}).encode()
    c.request("POST", "/login", body, {"Content-Type": "application/x-www-form-urlencoded", "Cookie": f"wm_pre={pre}"})
    r = c.getresponse()
    r.read()
    for v in r.headers.get_all("Set-Cookie"):
        if v.startswith("__Host-wm="):
            return v.split(";", 1)[0]
    raise RuntimeError("login failed")


def median_ms(session: Session, path: str, n: int = 30) -> float:
    session.get(path)  # warm up
    return statistics.median(session.get(path) for _ in range(n)) * 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--small", type=int, default=1000)
    ap.add_argument("--large", type=int, default=100_000)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--clients", type=int, default=10)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp, running_server(Path(tmp), listeners=("https",)) as srv:
        acct = srv.add_user("bench@example.test", PW)
        srv.store.create_mailbox(acct.id, "Small")
        srv.store.create_mailbox(acct.id, "Large")
        t = time.perf_counter()
        fill(srv.store, acct.id, "Small", args.small)
        fill(srv.store, acct.id, "Large", args.large)
        print(f"filled {args.small + args.large} messages in {time.perf_counter() - t:.1f}s")
        port = srv.port("https")
        cookie = login(port, acct.address)
        s = Session(port, cookie)
        results = {}
        for name, n in (("Small", args.small), ("Large", args.large)):
            mb = srv.store.get_mailbox(acct.id, name)
            list_ms = median_ms(s, f"/m/{mb.id}")
            deep_ms = median_ms(s, f"/m/{mb.id}?page=10")
            read_ms = median_ms(s, f"/m/{mb.id}/{n // 2}")
            results[name] = (list_ms, read_ms)
            print(f"{n:>7} messages: list page {list_ms:6.1f} ms  (page 10: {deep_ms:6.1f} ms)  "
                  f"open message {read_ms:6.1f} ms")
        print(f"ratio large/small: list {results['Large'][0] / results['Small'][0]:.2f}  "
              f"open {results['Large'][1] / results['Small'][1]:.2f}")
        mb = srv.store.get_mailbox(acct.id, "Large")
        count = [0]
        stop = time.perf_counter() + args.seconds
        lock = threading.Lock()

        def worker():
            w = Session(port, cookie)
            n = 0
            while time.perf_counter() < stop:
                w.get(f"/m/{mb.id}")
                n += 1
            with lock:
                count[0] += n

        threads = [threading.Thread(target=worker) for _ in range(args.clients)]
        t = time.perf_counter()
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        elapsed = time.perf_counter() - t
        print(f"list page, {args.clients} concurrent clients: {count[0] / elapsed:.0f} requests/s")


if __name__ == "__main__":
    main()
