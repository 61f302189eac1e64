#!/usr/bin/env python3
"""Sum the per-process counts written by scripts/bench/sqlcount/sitecustomize.py, optionally per operation.

    SQLCOUNT_DIR=/tmp/c PSYCOPG_IMPL=python PYTHONPATH=scripts/bench/sqlcount <benchmark ...>
    scripts/bench/sqlcount.py /tmp/c [--ops N]
"""

import argparse
import collections
import json
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--ops", type=float, default=0.0, help="divide by this many operations")
    ap.add_argument("--top", type=int, default=40)
    a = ap.parse_args()
    total = {}
    for p in Path(a.dir).glob("*.json"):
        d = json.loads(p.read_text())
        for s, c in d.items():
            total.setdefault(s, collections.Counter()).update(c)
    for s, c in total.items():
        print(f"[{s}]")
        for k, v in sorted(c.items(), key=lambda kv: -kv[1])[:a.top]:
            per = f"  {v / a.ops:8.2f}/op" if a.ops else ""
            print(f"  {k[:150]:40s} {v:9d}{per}")


if __name__ == "__main__":
    main()
