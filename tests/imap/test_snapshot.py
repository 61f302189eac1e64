"""The per-process mailbox snapshot: a later SELECT loads only what changed, and sees exactly the same state."""

from __future__ import annotations

from mailserver.imap.snapshot import MIN_CACHED_MESSAGES, Snapshot, SnapshotCache
from storage.store import MessageMeta
from tests.imap.imap_client import login, message, new_user


def _metas(uids, flags=0, modseq=1):
    return [MessageMeta(u, modseq, flags, (), 100 + u, 1000.0 + u) for u in uids]


def test_apply_is_idempotent_and_ignores_older_states():
    snap = Snapshot.from_messages(7, 10, _metas([1, 2, 3, 5], modseq=5))
    changed = [MessageMeta(2, 12, 1, ("$x",), 102, 1002.0), MessageMeta(6, 11, 0, (), 106, 1006.0)]
    snap.apply(changed, [3], 12)
    snap.apply(changed, [3], 12)  # the same changes again: no effect
    assert list(snap.uids) == [1, 2, 5, 6] and list(snap.flags) == [0, 1, 0, 0]
    assert snap.keywords == {2: ("$x",)} and snap.modseq == 12
    snap.apply([MessageMeta(2, 11, 0, (), 102, 1002.0)], [], 12)  # older than what is there
    assert snap.flags[1] == 1


def test_cache_keeps_only_large_mailboxes_and_is_bounded():
    cache = SnapshotCache(max_snapshots=2)
    cache.put(1, Snapshot.from_messages(1, 1, _metas(range(1, 10))))
    assert cache.get(1, 1) is None  # small: listed again each time
    big = range(1, MIN_CACHED_MESSAGES + 1)
    for mid in (1, 2, 3):
        cache.put(mid, Snapshot.from_messages(1, 1, _metas(big)))
    assert cache.get(1, 1) is None and cache.get(3, 1) is not None
    assert cache.get(3, 2) is None  # another UIDVALIDITY never matches


def test_second_select_sees_changes_made_in_between(tmp_path):
    from tests.harness import running_server

    with running_server(tmp_path, listeners=("imap",)) as srv:
        user = new_user(srv)
        acct = srv.store.get_account(user)
        inbox = srv.store.get_mailbox(acct.id, "INBOX")
        # A mailbox large enough to be cached, filled through the store.
        from mailserver.ingest import parsed_columns
        from storage.store import Delivery

        raw = message("bulk")
        ref = srv.store.blobs.put(raw)
        parsed = parsed_columns(raw)
        srv.store.deliver_batch([Delivery(acct.id, ref, parsed) for _ in range(MIN_CACHED_MESSAGES + 10)])
        c = login(srv, user)
        typ, data = c.select("INBOX")
        n = int(data[0])
        c.logout()
        # Changes while nobody has it selected: a flag, an expunge, a new message.
        from storage.models import FLAG_DELETED, FLAG_FLAGGED

        srv.store.set_flags(inbox.id, [5], "add", FLAG_FLAGGED)
        srv.store.set_flags(inbox.id, [7], "add", FLAG_DELETED)
        srv.store.expunge(inbox.id)
        srv.deliver(user, message("fresh"))
        cache = srv.services.state.imap_snapshots
        hits = cache.hits
        c = login(srv, user)
        typ, data = c.select("INBOX")
        assert int(data[0]) == n  # one gone, one new
        assert cache.hits == hits + 1
        typ, data = c.uid("SEARCH", None, "FLAGGED")
        assert data[0] == b"5"
        typ, data = c.uid("SEARCH", None, "UID", "7")
        assert data[0] == b""
        typ, data = c.fetch(str(n), "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        assert b"fresh" in data[0][1]
        c.logout()



def test_flag_only_search_fast_path_matches_the_engine():
    """SEARCH on system flags alone runs over the cached flags array; the answer equals the general engine's."""
    import random

    from mailserver.imap import search as S
    from mailserver.imap.cmd_search import _flag_only_masks, _flag_search, seq_numbers
    from mailserver.imap.parser import parse_command
    from mailserver.imap.selected import SelectedMailbox
    from mailserver.imap.wire import ImapReader
    from storage.store import MailboxInfo

    rnd = random.Random(5)
    metas = [MessageMeta(u, 1, rnd.randrange(32), (), 10, 1.0) for u in range(1, 3000, 3)]
    mb = MailboxInfo(1, 1, "INBOX", "", True, 7, 4000, 1, len(metas), 0, 0, ())
    sel = SelectedMailbox.load(mb, metas, readonly=True)
    for text in ("UNSEEN", "SEEN FLAGGED", "UNDELETED UNDRAFT", "ALL ANSWERED", "DELETED"):
        frame = next(iter(ImapReader().feed(b"a SEARCH " + text.encode() + b"\r\n"))).frame
        keys = parse_command(frame).keys
        masks = _flag_only_masks(keys)
        assert masks is not None, text
        fast = _flag_search(sel, *masks)
        slow = S.search(keys, metas, max_uid=metas[-1].uid, max_seq=len(metas), now=0.0)
        assert fast == slow, text
        assert seq_numbers(sel, fast) == [sel.seq_of(u) for u in fast]
    frame = next(iter(ImapReader().feed(b"a SEARCH UNSEEN KEYWORD $x\r\n"))).frame
    assert _flag_only_masks(parse_command(frame).keys) is None


def test_cached_fetch_renders_the_same_bytes_as_the_engine():
    """UID/FLAGS/MODSEQ answered from the cache equal fetch_response's bytes (keywords, \\Recent, rev1 and rev2)."""
    import asyncio
    import random

    from mailserver.imap import fetch as F
    from mailserver.imap.cmd_message import _fetch_cached
    from mailserver.imap.commands import FetchAtt
    from mailserver.imap.selected import SelectedMailbox
    from storage.store import MailboxInfo

    rnd = random.Random(9)
    metas = [MessageMeta(u, rnd.randrange(1, 99), rnd.randrange(32), ("$x", "Work") if u % 7 == 0 else (), 10, 1.0)
             for u in range(1, 400, 2)]
    mb = MailboxInfo(1, 1, "INBOX", "", True, 7, 500, 99, len(metas), 0, 0, ("$x", "Work"))
    sel = SelectedMailbox.load(mb, metas, readonly=True)
    sel.recent = {m.uid for m in metas[-5:]}
    items = [FetchAtt(name="UID"), FetchAtt(name="FLAGS"), FetchAtt(name="MODSEQ")]

    class Sink:
        def __init__(self, rev2):
            self.rev2 = rev2
            self.sent = []

        def send(self, data):
            self.sent.append(data)

        async def drain(self):
            return None

    for rev2 in (False, True):
        sink = Sink(rev2)
        uids = [m.uid for m in metas]
        asyncio.run(_fetch_cached(sink, sel, uids, [a.name for a in items]))
        expected = b"".join(
            F.fetch_response(i + 1, m, items, flags=m.flags, keywords=m.keywords, recent=m.uid in sel.recent,
                             uid_command=True, condstore=True, rev2=rev2) for i, m in enumerate(metas))
        assert b"".join(sink.sent) == expected


def test_large_mailboxes_are_preloaded_at_start(tmp_path):
    """After a restart the largest mailboxes' listings are loaded in the background: the first SELECT is warm."""
    import time

    from mailserver.ingest import parsed_columns
    from storage.store import Delivery
    from tests.harness import running_server

    with running_server(tmp_path, listeners=("imap",)) as srv:
        user = new_user(srv)
        acct = srv.store.get_account(user)
        raw = message("bulk")
        ref = srv.store.blobs.put(raw)
        srv.store.deliver_batch([Delivery(acct.id, ref, parsed_columns(raw)) for _ in range(MIN_CACHED_MESSAGES)])
    with running_server(tmp_path, listeners=("imap",)) as srv:  # "restart" on the same data
        deadline = time.time() + 10
        while time.time() < deadline:
            cache = srv.services.state.imap_snapshots
            if cache is not None and cache.misses >= 1:
                break
            time.sleep(0.05)
        misses = cache.misses
        c = login(srv, user)
        typ, data = c.select("INBOX")
        assert int(data[0]) == MIN_CACHED_MESSAGES
        assert cache.misses == misses and cache.hits >= 1  # answered from the preloaded snapshot
        c.logout()


def test_highest_modseq_kept_through_changes_and_expunges():
    """The snapshot's highest message modseq (what SELECT reports from it) is the highest of its messages after
    every apply: raised by a change, rescanned when the message holding it is expunged, kept by a copy."""
    snap = Snapshot.from_messages(7, 20, _metas([1, 2, 3]) + [MessageMeta(4, 20, 0, (), 104, 1004.0)])
    assert snap.max_modseq() == 20
    snap.apply([MessageMeta(2, 25, 1, (), 102, 1002.0)], [], 25)
    assert snap.max_modseq() == 25 == max(snap.modseqs)
    snap.apply([MessageMeta(5, 26, 0, (), 105, 1005.0)], [2], 27)  # the holder of 25 goes, a new message comes
    assert snap.max_modseq() == 26 == max(snap.modseqs)
    snap.apply([], [5], 28)
    assert snap.max_modseq() == 20 == max(snap.modseqs)
    assert snap.copy().max_modseq() == 20
    snap.apply([], [1, 3, 4], 29)
    assert snap.max_modseq() == 0 and not snap.modseqs


def test_listing_as_columns_is_the_listing(tmp_path):
    """A snapshot from the store's columns equals one from its MessageMeta rows: flags beyond the system byte,
    keywords (a blank stored text is none), dates and the highest modseq."""
    from storage.models import FLAG_SEEN
    from tests.harness import running_server

    with running_server(tmp_path, listeners=("imap",)) as srv:
        user = new_user(srv)
        acct = srv.store.get_account(user)
        inbox = srv.store.get_mailbox(acct.id, "INBOX")
        assert srv.store.list_message_columns(inbox.id) == ((),) * 6
        for i in range(5):
            srv.deliver(user, message(f"m{i}", to=user))
        srv.store.set_flags(inbox.id, [2, 4], "add", FLAG_SEEN, ("$Label1", "Work"))
        srv.store.set_flags(inbox.id, [3], "add", 0x100)  # a bit past the system-flag byte
        with srv.store.transaction() as conn:
            conn.exec_driver_sql("UPDATE messages SET keywords = '  ' WHERE uid = 5")
        box = srv.store.get_mailbox(acct.id, "INBOX")
        by_rows = Snapshot.from_messages(box.uid_validity, box.highest_modseq, srv.store.list_messages(box.id))
        by_columns = Snapshot.from_columns(box.uid_validity, box.highest_modseq,
                                           srv.store.list_message_columns(box.id))
        assert by_columns == by_rows and by_columns.max_modseq() == by_rows.max_modseq()
        assert by_columns.keywords == {2: ("$Label1", "Work"), 4: ("$Label1", "Work")}
