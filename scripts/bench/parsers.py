#!/usr/bin/env python3
"""Parser and engine speed, measured here rather than asserted in tests (timings fail on a loaded machine).

    scripts/bench/parsers.py [--rounds 3]

- IMAP framing: 50,000 pipelined ``UID FETCH`` commands in one read (must be linear: a quadratic buffer copy shows
  as seconds here); also 5,000, to show the ratio.
- IMAP SEARCH over 100,000 messages' metadata: each flag/UID program (each should take well under a second).
- MIME: a typical 5 KB message (well under 1 ms), a 25 MB base64 attachment (scanned, not decoded: well under 1 s).
Prints the best of ``--rounds`` for each.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from mailserver.imap.search import search  # noqa: E402
from mailserver.imap.wire import ImapReader  # noqa: E402
from mailserver.mime import parse_message  # noqa: E402
from tests.imap.test_search import NOW, search_scale_fixture  # noqa: E402
from tests.test_mime import big_attachment_message, typical_5kb_message  # noqa: E402


def best(f, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        f()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    for n in (5_000, 50_000):
        data = b"".join(b"a%d UID FETCH %d:* (FLAGS)\r\n" % (i, i) for i in range(n))
        t = best(lambda data=data: list(ImapReader().feed(data)), args.rounds)
        print(f"imap framing, {n:>6} pipelined commands in one read: {t * 1000:8.1f} ms ({n / t:,.0f} commands/s)")
    metas, programs = search_scale_fixture()
    max_uid, n = metas[-1].uid, len(metas)
    for name, program in programs.items():
        t = best(lambda p=program: search(p, metas, max_uid=max_uid, max_seq=n, recent_uids=set(), now=NOW),
                 args.rounds)
        print(f"imap search over {n:,} messages, {name:<24} {t * 1000:8.1f} ms")
    raw = typical_5kb_message()
    t = best(lambda: [parse_message(raw) for _ in range(200)], args.rounds) / 200
    print(f"mime parse, typical {len(raw):,}-byte message:          {t * 1e6:8.0f} us")
    big = big_attachment_message()
    t = best(lambda: parse_message(big), args.rounds)
    print(f"mime parse, {len(big) / 2**20:.0f} MB base64 attachment:               {t * 1000:8.1f} ms")


if __name__ == "__main__":
    main()
