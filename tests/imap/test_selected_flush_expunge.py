"""SelectedMailbox.flush without sockets: the order of EXPUNGE / VANISHED / EXISTS / FETCH and which messages are
told at all (RFC 9051 7.4.1 and 7.5.1, RFC 7162 3.2.10 and errata 1810)."""

from __future__ import annotations

from array import array

import pytest

from mailserver.imap.selected import RecentTracker, SelectedMailbox, UpdateOptions
from storage import changes as ch
from storage.models import FLAG_DELETED

MBOX = 7


def selected(n: int, *, highest_modseq: int = 10) -> SelectedMailbox:
    """A session's view of a mailbox with UIDs 1..n, all announced."""
    sel = SelectedMailbox(MBOX, "INBOX", False, 1, n + 1, highest_modseq)
    for uid in range(1, n + 1):
        sel.uids.append(uid)
        sel.flags.append(0)
        sel.modseqs.append(uid)
        sel.sizes.append(100)
        sel.dates.append(0.0)
    sel.told_exists = n
    return sel


def exists(uid, modseq):
    return ch.Change(ch.EXISTS, 1, MBOX, uid=uid, modseq=modseq, size=100)


def flags(uid, modseq, bits=FLAG_DELETED):
    return ch.Change(ch.FLAGS, 1, MBOX, uid=uid, modseq=modseq, flags=bits)


def expunge(uid, modseq):
    return ch.Change(ch.EXPUNGE, 1, MBOX, uid=uid, modseq=modseq)


def flush(sel, events, *, allow=True, **opts):
    for e in events:
        sel.on_change(e)
    options = UpdateOptions(rev1=False, **opts)
    return [line.decode().rstrip("\r\n") for line in sel.flush(allow_expunge=allow, options=options, recent=None)]


#: Another session appends UID 4, marks 1 and 4 \Deleted and expunges them, before this session's NOOP.
APPEND_DELETE_EXPUNGE = [exists(4, 11), flags(1, 12), flags(4, 12), expunge(1, 13), expunge(4, 13)]


def test_new_message_expunged_before_it_was_announced_is_never_told():
    """Dovecot's answer: ``* 1 EXPUNGE`` alone; the old code said ``* 4 EXPUNGE`` to a client that knew 3."""
    sel = selected(3)
    assert flush(sel, APPEND_DELETE_EXPUNGE) == ["* 1 EXPUNGE"]
    assert list(sel.uids) == [2, 3] and sel.told_exists == 2
    assert sel.highest_modseq == 13


def test_qresync_vanished_lists_only_known_uids():
    sel = selected(3)
    assert flush(sel, APPEND_DELETE_EXPUNGE, qresync=True, condstore=True) == ["* VANISHED 1"]


def test_expunges_go_before_exists_and_from_the_highest_down():
    """Numbers of the client's view: the expunges first (highest first), then EXISTS of the new count, then FETCH
    FLAGS renumbered after the expunges."""
    sel = selected(5)
    out = flush(sel, [exists(6, 11), exists(7, 12), expunge(2, 13), expunge(4, 13), flags(5, 14)])
    assert out == ["* 4 EXPUNGE", "* 2 EXPUNGE", "* 5 EXISTS", "* 3 FETCH (FLAGS (\\Deleted))"]
    assert list(sel.uids) == [1, 3, 5, 6, 7]


def test_no_expunge_during_fetch_but_new_messages_are_announced():
    """While FETCH/STORE/SEARCH run (allow_expunge False) announced messages stay; a new one that came and went is
    dropped at once; EXISTS grows; the deferred expunge is told at the next allowed flush."""
    sel = selected(3)
    out = flush(sel, [exists(4, 11), exists(5, 12), expunge(1, 13), expunge(5, 13)], allow=False)
    assert out == ["* 4 EXISTS"]
    assert list(sel.uids) == [1, 2, 3, 4]
    assert flush(sel, [], allow=False) == []
    assert flush(sel, []) == ["* 1 EXPUNGE"]
    assert list(sel.uids) == [2, 3, 4] and sel.told_exists == 3


def test_deferred_expunge_then_the_new_message_leaves_too():
    """A message announced during a FETCH is a known one: its later expunge is told by number."""
    sel = selected(3)
    assert flush(sel, [expunge(2, 11), exists(4, 12)], allow=False) == ["* 4 EXISTS"]
    assert flush(sel, [expunge(4, 13)]) == ["* 4 EXPUNGE", "* 2 EXPUNGE"]
    assert list(sel.uids) == [1, 3]


def test_highestmodseq_stays_below_a_waiting_expunge():
    """RFC 7162 errata 1810: while an expunge waits, HIGHESTMODSEQ stays below its modseq (a client resyncing from it
    still hears of the expunge); with QRESYNC the session says so in an untagged OK."""
    sel = selected(3, highest_modseq=10)
    out = flush(sel, [expunge(1, 11), flags(2, 12)], allow=False, qresync=True, condstore=True)
    assert out == ["* 2 FETCH (UID 2 FLAGS (\\Deleted) MODSEQ (12))", "* OK [HIGHESTMODSEQ 10] expunges pending"]
    assert sel.highest_modseq == 10
    assert flush(sel, [], qresync=True, condstore=True) == ["* VANISHED 1"]
    assert sel.highest_modseq == 12


def test_unknown_expunges_are_ignored():
    """An expunge of a UID the session never loaded (SELECT read after it) changes nothing."""
    sel = selected(2)
    assert flush(sel, [expunge(9, 11)]) == []
    assert list(sel.uids) == [1, 2]


@pytest.mark.parametrize("allow", [True, False])
def test_flag_change_of_an_unannounced_expunged_message_is_not_told(allow):
    sel = selected(1)
    assert flush(sel, [exists(2, 11), flags(2, 12), expunge(2, 13)], allow=allow) == []
    assert list(sel.uids) == [1] and sel.told_exists == 1


def test_recent_is_not_claimed_for_a_message_that_came_and_went():
    sel = selected(1)
    tracker = RecentTracker()
    tracker.claim(MBOX, 1, array("I", [1]))
    for e in (exists(2, 11), exists(3, 12), expunge(2, 13)):
        sel.on_change(e)
    out = sel.flush(allow_expunge=True, options=UpdateOptions(), recent=tracker)
    assert out == [b"* 2 EXISTS\r\n", b"* 1 RECENT\r\n"]
    assert sel.recent == {3}
