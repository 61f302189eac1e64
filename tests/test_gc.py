"""Bodies nothing references any more are removed by the server on its own ([store] gc_interval)."""

from __future__ import annotations

import time

from storage.models import FLAG_DELETED
from tests.harness import running_server


def test_expunged_bodies_are_removed_periodically(tmp_path):
    with running_server(tmp_path, listeners=(), store={"gc_interval": 0.2, "gc_grace": 0.0}) as srv:
        srv.add_user("a@example.test", "pw")
        kept = srv.deliver("a@example.test", b"Subject: keep\r\n\r\nkeep me\r\n")
        gone = srv.deliver("a@example.test", b"Subject: drop\r\n\r\ndrop me\r\n")
        acct = srv.store.get_account("a@example.test")
        inbox = srv.store.get_mailbox(acct.id, "INBOX")
        keep_blob, drop_blob = (m.blob_id for m in srv.store.get_messages(inbox.id, [kept.uid, gone.uid]))
        srv.store.set_flags(inbox.id, [gone.uid], "add", FLAG_DELETED)
        srv.store.expunge(inbox.id)
        deadline = time.time() + 10
        while srv.store.blobs.exists(drop_blob) and time.time() < deadline:
            time.sleep(0.05)
        assert not srv.store.blobs.exists(drop_blob)
        assert srv.store.blobs.exists(keep_blob)
        assert srv.store.integrity_problems() == []
