#!/usr/bin/env python3
"""PROXY protocol cost: SMTP sessions per second (connect, greeting, EHLO, QUIT) on a [listen] port and on a
[listen_proxied] port with a v2 header, and the header parser alone.

    scripts/bench/proxy.py [--sessions 2000] [--clients 4]

Our server runs in this process (reactor thread, SQLite in a temporary directory); the clients are threads of
blocking sockets, each opening ``sessions / clients`` sessions one after the other.
"""

from __future__ import annotations

import argparse
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def session(port: int, header: bytes) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        if header:
            s.sendall(header)
        f = s.makefile("rb")
        assert f.readline().startswith(b"220")
        s.sendall(b"EHLO bench.test\r\n")
        while not f.readline().startswith(b"250 "):
            pass
        s.sendall(b"QUIT\r\n")
        f.readline()


def run(port: int, header: bytes, sessions: int, clients: int) -> float:
    per = sessions // clients

    def client():
        for _ in range(per):
            session(port, header)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return per * clients / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sessions", type=int, default=2000)
    ap.add_argument("--clients", type=int, default=4)
    args = ap.parse_args()
    from mailserver.proxywire import ProxyHeaderParser, v1_header, v2_header
    from tests.harness import running_server

    header = v2_header(("192.0.2.7", 40000), ("198.51.100.1", 25))
    n = 100_000
    start = time.perf_counter()
    for _ in range(n):
        ProxyHeaderParser().feed(header + b"EHLO x\r\n")
    v2_us = (time.perf_counter() - start) / n * 1e6
    line = v1_header(("192.0.2.7", 40000), ("198.51.100.1", 25))
    start = time.perf_counter()
    for _ in range(n):
        ProxyHeaderParser().feed(line + b"EHLO x\r\n")
    v1_us = (time.perf_counter() - start) / n * 1e6
    print(f"parser: v2 {v2_us:.1f} us, v1 {v1_us:.1f} us per header")
    with tempfile.TemporaryDirectory() as tmp, running_server(
            Path(tmp), listeners=("smtp",), listen_proxied={"smtp": ["127.0.0.1:0"]},
            proxy={"trusted": ["127.0.0.1/32"]}, limits={"smtp_max_sessions_per_ip": 1000}) as srv:
        direct, proxied = srv.port("smtp"), srv.port("smtp", proxied=True)
        run(direct, b"", 200, args.clients)  # warm-up
        for label, port, h in (("direct", direct, b""), ("proxied v2", proxied, header),
                               ("direct", direct, b""), ("proxied v2", proxied, header)):
            print(f"{label:>10}: {run(port, h, args.sessions, args.clients):7.0f} sessions/s")


if __name__ == "__main__":
    main()
