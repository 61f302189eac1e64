"""The read path's shortcuts answer exactly what the long way does: the server's snapshot cache keeps mailboxes
from SERVER_MIN_CACHED_MESSAGES up (a change made in between is seen), its bounds evict, and FETCH reads small
bodies in the database call that loads the messages and large ones in the blob pool, with the same bytes."""

from __future__ import annotations

from mailserver.imap.snapshot import SERVER_MIN_CACHED_MESSAGES, Snapshot, SnapshotCache, server_cache
from storage.store import MessageMeta
from tests.imap.imap_client import login, message, new_user


def _metas(uids):
    return [MessageMeta(u, 1, 0, (), 100 + u, 1000.0 + u) for u in uids]


def test_server_cache_keeps_mid_sized_mailboxes_and_bounds_the_messages():
    cache = server_cache()
    cache.put(1, Snapshot.from_messages(1, 1, _metas(range(1, SERVER_MIN_CACHED_MESSAGES))))
    assert cache.get(1, 1) is None  # below the threshold: listed again
    cache.put(2, Snapshot.from_messages(1, 1, _metas(range(1, SERVER_MIN_CACHED_MESSAGES + 1))))
    assert cache.get(2, 1) is not None
    small = SnapshotCache(10, min_messages=1, max_messages=25)
    for mid in (1, 2, 3):
        small.put(mid, Snapshot.from_messages(1, 1, _metas(range(1, 11))))
    assert small.get(1, 1) is None and small.get(2, 1) is not None and small.messages == 20
    small.put(2, Snapshot.from_messages(1, 1, _metas(range(1, 3))))  # shrank: counted again, not twice
    assert small.messages == 12 and len(small) == 2
    small.put(4, Snapshot.from_messages(1, 1, _metas(range(1, 40))))  # alone over the bound: still kept
    assert small.get(4, 1) is not None and len(small) == 1


def test_mid_sized_mailbox_second_select_is_a_cache_hit_and_sees_changes(tmp_path):
    from tests.harness import running_server

    with running_server(tmp_path, listeners=("imap",)) as srv:
        user = new_user(srv)
        acct = srv.store.get_account(user)
        inbox = srv.store.get_mailbox(acct.id, "INBOX")
        from mailserver.ingest import parsed_columns
        from storage.models import FLAG_DELETED, FLAG_SEEN
        from storage.store import Delivery

        raw = message("bulk")
        ref = srv.store.blobs.put(raw)
        srv.store.deliver_batch([Delivery(acct.id, ref, parsed_columns(raw))
                                 for _ in range(SERVER_MIN_CACHED_MESSAGES + 5)])
        c = login(srv, user)
        n = int(c.select("INBOX")[1][0])
        c.logout()
        srv.store.set_flags(inbox.id, [3], "add", FLAG_SEEN)
        srv.store.set_flags(inbox.id, [4], "add", FLAG_DELETED)
        srv.store.expunge(inbox.id)
        srv.deliver(user, message("fresh"))
        cache = srv.services.state.imap_snapshots
        hits = cache.hits
        c = login(srv, user)
        assert int(c.select("INBOX")[1][0]) == n  # one gone, one new
        assert cache.hits == hits + 1
        assert c.uid("SEARCH", None, "SEEN")[1][0] == b"3"
        assert c.uid("SEARCH", None, "UID", "4")[1][0] == b""
        assert b"fresh" in c.fetch(str(n), "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")[1][0][1]
        c.logout()


def test_fetch_bodies_small_and_large_batches_give_the_stored_bytes(tmp_path):
    from mailserver.imap import cmd_message
    from tests.harness import running_server

    with running_server(tmp_path, listeners=("imap",)) as srv:
        user = new_user(srv)
        small = message("small", body="x" * 2000)
        large = message("large", body=("y" * 76 + "\r\n") * 5000)  # 390 KB: over FETCH_INLINE_OCTETS
        assert len(large) > cmd_message.FETCH_INLINE_OCTETS
        srv.deliver(user, small)
        srv.deliver(user, large)
        c = login(srv, user, select="INBOX")
        for seqs in ("1", "2", "1:2"):
            typ, data = c.fetch(seqs, "(BODY.PEEK[] BODY.PEEK[HEADER])")
            assert typ == "OK"
            parts = [d for d in data if isinstance(d, tuple)]
            bodies = [p[1] for p in parts if b"BODY[]" in p[0]]
            headers = [p[1] for p in parts if b"BODY[HEADER]" in p[0]]
            want = {"1": [small], "2": [large], "1:2": [small, large]}[seqs]
            assert bodies == want
            assert headers == [w.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n" for w in want]
        c.logout()


def test_cached_fetch_renders_each_message_as_the_item_walk_would():
    """FETCH of UID/FLAGS/MODSEQ from the cache: runs of the mailbox, scattered and repeated UIDs, keywords and
    \\Recent give, line for line, what rendering each message on its own gives."""
    import asyncio
    import random

    from mailserver.imap.cmd_message import _fetch_cached
    from mailserver.imap.fetch import _flags_value
    from mailserver.imap.selected import SelectedMailbox

    class Session:
        def __init__(self, rev2):
            self.rev2, self.out = rev2, []

        def send(self, data):
            self.out.append(data)

        async def drain(self):
            return None

    def expected(sel, uids, names, rev2):
        parts = {"UID": lambda u, i: b"UID %d" % u, "MODSEQ": lambda u, i: b"MODSEQ (%d)" % sel.modseqs[i],
                 "FLAGS": lambda u, i: b"FLAGS " + _flags_value(sel.flags[i], sel.keywords.get(u, ()),
                                                              u in sel.recent, rev2)}
        return b"".join(b"* %d FETCH (%s)\r\n" % (i + 1, b" ".join(parts[n](u, i) for n in names))
                        for u in uids if (i := sel.index_of(u)) is not None)

    rng = random.Random(11)
    for n in (0, 1, 7, 4500):
        sel = SelectedMailbox(1, "INBOX", False, 1, 1, 1)
        uid = 0
        for _ in range(n):
            uid += rng.choice((1, 1, 3))
            sel.uids.append(uid)
            sel.flags.append(rng.choice((0, 8, 8, 1 | 8, 31)))
            sel.modseqs.append(rng.randrange(1, 10 ** 9))
        everything = list(sel.uids)
        for with_extras in (False, True):
            if with_extras and everything:
                sel.keywords = {u: ("$Junk", "Work")[: rng.randrange(1, 3)] for u in everything[::5]}
                sel.recent = set(everything[-3:])
            targets = [everything, everything[n // 3: n // 2], everything[::2], everything[:2] * 2 + [uid + 9]]
            for uids in targets:
                for names in (["UID", "FLAGS"], ["FLAGS"], ["FLAGS", "UID", "MODSEQ"], ["MODSEQ"]):
                    for rev2 in (False, True):
                        s = Session(rev2)
                        asyncio.run(_fetch_cached(s, sel, list(uids), names))
                        assert b"".join(s.out) == expected(sel, uids, names, rev2)


def test_flag_search_answers_sequence_numbers_after_expunges(tmp_path):
    """SEARCH on system flags alone (UNSEEN, DELETED, SEEN UNANSWERED...) answers the sequence numbers of the
    messages UID SEARCH names, also when expunges have moved them away from the UIDs."""
    from storage.models import FLAG_ANSWERED, FLAG_DELETED, FLAG_SEEN
    from tests.harness import running_server

    with running_server(tmp_path, listeners=("imap",)) as srv:
        user = new_user(srv)
        for i in range(120):
            srv.deliver(user, message(f"m{i}", to=user))
        acct = srv.store.get_account(user)
        inbox = srv.store.get_mailbox(acct.id, "INBOX")
        srv.store.set_flags(inbox.id, list(range(1, 121, 3)), "add", FLAG_SEEN)
        srv.store.set_flags(inbox.id, list(range(1, 121, 7)), "add", FLAG_ANSWERED)
        srv.store.set_flags(inbox.id, [2, 5, 50], "add", FLAG_DELETED)
        srv.store.expunge(inbox.id, [2, 5])
        c = login(srv, user, select="INBOX")
        seq_of = {int(line.split(b"UID ")[1].split(b")")[0]): int(line.split()[0])
                  for line in c.fetch("1:*", "(UID)")[1]}
        for keys in (["UNSEEN"], ["SEEN"], ["DELETED"], ["SEEN", "UNANSWERED"], ["UNSEEN", "ANSWERED", "UNDELETED"],
                     ["ALL"]):
            by_uid = [seq_of[int(u)] for u in c.uid("SEARCH", None, *keys)[1][0].split()]
            assert [int(n) for n in c.search(None, *keys)[1][0].split()] == by_uid, keys
            assert by_uid, keys
        c.logout()
