#!/usr/bin/env python3
"""CPU per message of the sender authentication check and the DNS lists stage, in-process, without the server.

The message, the zones and the configuration are those of ``smtp.py --checks on`` (a 5.8 KB message with one
RSA-2048 signature of example.net, SPF, DMARC p=reject, DNSBL/DNSWL/RHSBL zones), the DNS answered by a DNS
server on loopback in a child process.  The check runs with an inline runner (its ``dns`` pool jobs run at once in
this thread), so what is measured is the checks' own work, not the thread hand-over or the reactor; after a warm-up
every DNS answer comes from the resolver's cache, as in the server benchmark.  Figures are ``time.process_time``
per message (CPU, not wall clock: other load on the machine changes them little), the median of ``--rounds``
rounds of ``--messages`` messages, for the whole check and for its parts:

    .venv/bin/python scripts/bench/senderauth_cpu.py [--messages 2000] [--rounds 5] [--profile FILE]
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import smtp as bench  # noqa: E402 - the server benchmark's message and zones


class Blobs:
    """The blob store as the check reads it: one message by id."""

    def __init__(self, data: bytes):
        self.data = data

    def read(self, blob_id: str, start: int = 0, end: int | None = None) -> bytes:
        return self.data[start:end]


def setup(dns_port: int, body: bytes):
    from twisted.internet import defer

    from mailserver import config as config_mod
    from mailserver.delivery import envelope as ev
    from mailserver.delivery.runner import InlineRunner
    from mailserver.delivery.stages import MessageInfo, Target
    from mailserver.dns import DnsResolver
    from mailserver.inbound.dnsbl import DnsListCheck, DnsLists
    from mailserver.inbound.senderauth import SenderAuthCheck, Settings

    table = {"hostname": "bench.example.test", "data_dir": "/nonexistent", "listen": {"smtp": ["127.0.0.1:0"]},
             "domain": [{"name": "example.test"}], "dns": {"nameservers": [f"127.0.0.1:{dns_port}"], "timeout": 5.0},
             "senderauth": {"dns_cache": 10000}, "antispam": dict(bench.DNS_LISTS)}
    cfg = config_mod.load_dict(table)
    resolver = DnsResolver(cfg.dns, cache_size=cfg.senderauth.dns_cache)
    runner = InlineRunner(None)
    check = SenderAuthCheck(runner, Settings(cfg), resolver, Blobs(body))
    lists = DnsListCheck(DnsLists(cfg, resolver, runner.dns), cfg)
    client = ev.ClientInfo("127.0.0.1", bench.HELO, True)
    rcpt = ev.Recipient(ev.Mailbox("user1", "example.test"))
    envelope = ev.Envelope(ev.Mailbox("bench", bench.SENDER_DOMAIN), (rcpt,))

    def read(start=0, end=None):  # the body held in memory, as the pipeline holds a small one
        return defer.succeed(body[start:end])

    def message():
        return MessageInfo(ev.SMTP, "q", envelope, client, len(body), "blob", None, read)

    target = Target(route=None, recipient=rcpt)
    return check, lists, message, target


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--profile", default="", help="cProfile one more round into FILE (pstats)")
    args = ap.parse_args()

    from twisted.internet import defer

    from mailserver.delivery.runner import result_now
    from mailserver.inbound import authresults, dkimcheck
    from mailserver.inbound.lookups import Lookups

    body, dkim_p = bench.signed_body(5 * 1024)
    ctx = multiprocessing.get_context("spawn")
    q, stop = ctx.Queue(), ctx.Event()
    dns_proc = ctx.Process(target=bench.serve_dns, args=(bench.dns_zones(dkim_p), q, stop))
    dns_proc.start()
    try:
        check, lists, message, target = setup(q.get(timeout=60), body)

        def whole():
            m = message()
            result_now(defer.ensureDeferred(check.check(m, target)))
            result_now(defer.maybeDeferred(lists.check, m, target))
            return m

        warm = whole()
        result = warm.memo["senderauth"]
        print("result:", authresults.header_value("bench.example.test", result.clauses()).replace("\r\n\t", " "))
        resolver = check.resolver

        def dkim_only():
            dkimcheck.verify(Lookups(resolver, timeout=5, max_queries=10), body)

        def clauses_only():
            authresults.header_value("bench.example.test", result.clauses())

        def lists_only():
            result_now(defer.maybeDeferred(lists.check, message(), target))

        # The floor of the DKIM check: the public-key step (cryptography's RSA verify of the benchmark's 2048-bit
        # key, a prehashed SHA-256) and the body hash, as dkimcheck makes them.
        import hashlib

        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import padding, utils

        key = serialization.load_der_public_key(__import__("base64").b64decode(dkim_p))
        d = dkimcheck._parsed(body)
        sig, _names, _fields = dkimcheck._prep(d, 0)
        b = __import__("base64").b64decode(dkimcheck._WSP_RUN.sub(b"", sig[b"b"]))
        digest = hashlib.sha256(b"not the signed hash").digest()

        def rsa_only():
            try:
                key.verify(b, digest, padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))
            except Exception:  # noqa: BLE001 - a wrong digest on purpose: the same work as a good one
                pass

        def body_hash_only():
            hashlib.sha256(d.body).digest()

        parts = [("senderauth + dnsbl (whole)", whole), ("dkimcheck.verify", dkim_only),
                 ("Authentication-Results value", clauses_only), ("dnsbl check (cached)", lists_only),
                 ("floor: RSA-2048 verify", rsa_only), ("floor: body SHA-256", body_hash_only)]
        for name, f in parts:
            figures = []
            for _ in range(args.rounds):
                t0 = time.process_time()
                for _ in range(args.messages):
                    f()
                figures.append((time.process_time() - t0) / args.messages * 1e6)
            figures.sort()
            print(f"{name:32s} {figures[len(figures) // 2]:8.1f} us/msg (rounds: "
                  f"{', '.join(f'{x:.1f}' for x in figures)})")
        if args.profile:
            import cProfile

            p = cProfile.Profile(time.process_time)
            p.enable()
            for _ in range(args.messages):
                whole()
            p.disable()
            p.dump_stats(args.profile)
    finally:
        stop.set()
        dns_proc.join(30)
        if dns_proc.is_alive():
            dns_proc.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
