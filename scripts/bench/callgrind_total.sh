#!/bin/sh
# callgrind_total.sh DIR... - the instructions (Ir) each callgrind output in DIR counted, one line per file.
# Per-message cost without start-up: (total of a run of N2 messages - total of a run of N1) / (N2 - N1).
set -eu
for d in "$@"; do
  for f in "$d"/callgrind.out.*; do
    printf '%s %s\n' "$f" "$(grep -m1 '^summary:' "$f" | awk '{print $2}')"
  done
done
