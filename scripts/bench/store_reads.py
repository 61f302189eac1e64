#!/usr/bin/env python3
"""Thread CPU per store call on the IMAP read path, called directly (no IMAP, no thread hand-over):

    cd <tree> && <venv>/bin/python scripts/bench/store_reads.py [N]

Run from the root of the tree to measure (its modules come first on the path), so one venv measures main and a
branch alternately; a 30-message mailbox, N calls of each after 200 warm-up calls.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.getcwd())
sys.path.insert(0, os.getcwd() + "/scripts/bench")

from imap import fill  # noqa: E402

from tests.harness import running_server  # noqa: E402


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    with tempfile.TemporaryDirectory() as tmp, running_server(Path(tmp), listeners=("imap",)) as srv:
        srv.add_user("u@example.test", "pw")
        st = srv.store
        acct = st.get_account("u@example.test")
        st.create_mailbox(acct.id, "Small")
        fill(st, acct.id, "Small", 30)
        mb = st.get_mailbox(acct.id, "Small")

        def bare():
            with st.transaction(write=False):
                pass

        ops = {
            "bare_tx": bare,
            "resolve_mailbox": lambda: st.resolve_mailbox(acct.id, "Small"),
            "changes_since": lambda: st.changes_since(mb.id, mb.highest_modseq - 1),
            "get_account": lambda: st.get_account("u@example.test"),
            "list_messages(30)": lambda: st.list_messages(mb.id),
            "reader_mailboxes": lambda: st.reader_mailboxes(acct.id),
            "get_messages(10)": lambda: st.get_messages(mb.id, list(range(1, 11))),
        }
        for measured in (False, True):
            for name, f in ops.items():
                for _ in range(200):
                    f()
                t = time.thread_time()
                for _ in range(n):
                    f()
                if measured:
                    print(f"{name:<20} {(time.thread_time() - t) / n * 1e6:7.1f} us")


if __name__ == "__main__":
    main()
