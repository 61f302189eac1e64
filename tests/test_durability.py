"""Durability: SIGKILL while delivering; every delivery that returned success is there afterwards."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from storage.blobs import FileBlobStore
from storage.db import make_engine
from storage.store import Store

ROOT = Path(__file__).resolve().parents[1]

WRITER = textwrap.dedent("""
    import sys, threading
    from pathlib import Path
    from storage import migrate
    from storage.blobs import FileBlobStore
    from storage.db import make_engine
    from storage.store import Delivery, Store

    url, blob_dir = sys.argv[1], sys.argv[2]
    engine = make_engine(url)
    store = Store(engine, FileBlobStore(blob_dir))
    acct = store.get_account("a@example.test")
    lock = threading.Lock()

    def worker(k):
        n = 0
        while True:
            batch = []
            for i in range(8):
                n += 1
                raw = b"Subject: w%d-%d\\r\\n\\r\\n" % (k, n) + b"x" * (4000 + n % 997) + b"\\r\\n"
                batch.append(Delivery(acct.id, store.blobs.put(raw), {"subject": "w%d-%d" % (k, n)}))
            res = store.deliver_batch(batch)
            with lock:
                for r in res.value:
                    sys.stdout.write("OK %d %d\\n" % (r.mailbox_id, r.uid))
                sys.stdout.flush()

    for k in range(3):
        threading.Thread(target=worker, args=(k,), daemon=True).start()
    print("READY", flush=True)
    threading.Event().wait()
""")


def test_sigkill_during_delivery_loses_nothing_acknowledged(tmp_path, database_url):
    url = database_url or f"sqlite:///{tmp_path}/db.sqlite3"
    blob_dir = tmp_path / "blobs"
    engine = make_engine(url)
    from storage import migrate

    migrate.upgrade(engine)
    store = Store(engine, FileBlobStore(blob_dir))
    store.add_domain("example.test")
    store.add_account("a@example.test", "x")
    engine.dispose()

    out_path = tmp_path / "acks.txt"
    with open(out_path, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-c", WRITER, url, str(blob_dir)], stdout=out, cwd=ROOT,
                                env={**os.environ, "PYTHONPATH": str(ROOT)})
        try:
            deadline = time.time() + 30
            while time.time() < deadline:
                text = out_path.read_text()
                if text.count("OK ") >= 200:
                    break
                assert proc.poll() is None, "writer died"
                time.sleep(0.05)
            time.sleep(0.3)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
    acked = [tuple(map(int, line.split()[1:])) for line in out_path.read_text().splitlines()
             if line.startswith("OK ") and len(line.split()) == 3]
    assert len(acked) >= 200

    engine = make_engine(url)
    store = Store(engine, FileBlobStore(blob_dir))
    try:
        acct = store.get_account("a@example.test")
        inbox = store.get_mailbox(acct.id, "INBOX")
        present = {m.uid for m in store.list_messages(inbox.id)}
        missing = [uid for _, uid in acked if uid not in present]
        assert missing == []
        # Nothing points at a missing blob, and every acknowledged message reads back.
        assert store.integrity_problems() == []
        for m in store.get_messages(inbox.id, [uid for _, uid in acked[:50]]):
            data = store.read_blob(m.blob_id)
            assert len(data) == m.size and data.startswith(b"Subject: w")
        assert inbox.message_count == len(present)
    finally:
        engine.dispose()
