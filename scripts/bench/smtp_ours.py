#!/usr/bin/env python3
"""Only our side of scripts/bench/smtp_reference.py's ``--ours SPEC`` runs (no Postfix/Dovecot reference): for
measuring CPU per message of one configuration against another checkout's, alternating, in one sitting.

    .venv/bin/python scripts/bench/smtp_ours.py --ours workers=1,db=pg --database-url URL [--rounds 3]
"""

import argparse
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import smtp_reference  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--sessions", type=int, default=10)
    ap.add_argument("--size", type=int, default=5120)
    ap.add_argument("--ours", action="append", default=[])
    ap.add_argument("--database-url", default=os.environ.get("MAILSERVER_TEST_DATABASE_URL", ""))
    args = ap.parse_args()
    for i in range(args.rounds):
        for text in args.ours or ["workers=1"]:
            spec = smtp_reference.parse_spec(text)
            rate, cpu = smtp_reference.cluster_run(args, spec)
            print(f"round {i + 1} {text}: {rate:.0f} msg/s, {cpu:.2f} ms/msg (load {os.getloadavg()[0]:.1f})",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
