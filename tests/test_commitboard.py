"""The commit board (mailserver/commitboard.py): what one worker committed per mailbox, read by the others."""

from __future__ import annotations

import pytest

from mailserver import commitboard
from mailserver.commitboard import SLOTS, CommitBoard
from storage.changes import EXISTS, EXPUNGE, Change


@pytest.fixture
def boards(tmp_path):
    path = commitboard.create(tmp_path, 3)
    opened = [CommitBoard(path, i) for i in range(3)]
    yield opened
    for b in opened:
        b.close()


def test_a_commit_of_one_worker_is_counted_for_the_others_not_for_itself(boards):
    a, b, c = boards
    assert b.state(7) == (0, 0)
    a.mark([Change(EXISTS, 1, 7, uid=1, modseq=5)])
    assert b.state(7) == (1, 5) and c.state(7) == (1, 5)
    assert a.state(7) == (0, 0)  # its own row is not read: its changes are published in process
    c.mark([Change(EXPUNGE, 1, 7, uid=1, modseq=9), Change(EXISTS, 1, 8, uid=1, modseq=2)])
    assert b.state(7) == (2, 9) and a.state(7) == (1, 9) and b.state(8) == (1, 2)


def test_changes_without_a_mailbox_or_modseq_are_not_counted(boards):
    a, b, _ = boards
    a.mark([Change(EXISTS, 1, 7, modseq=5), Change("mailbox-create", 1, 0), Change(EXISTS, 1, 9, modseq=0)])
    assert b.state(7) == (1, 5) and b.state(9) == (0, 0)


def test_a_mailbox_made_anew_under_the_same_id_still_moves_the_count(boards):
    """Its modseqs start again at 1; the count still grows, so a reader sees that something changed."""
    a, b, _ = boards
    a.mark([Change(EXISTS, 1, 7, modseq=m) for m in range(1, 18)])
    assert b.state(7) == (17, 17)
    a.mark([Change(EXISTS, 1, 7, modseq=2)])
    assert b.state(7) == (18, 2)


def test_a_slot_shared_by_two_mailboxes_says_unknown(boards):
    """Mailboxes 7 and 7 + SLOTS share a slot: a reader of one while the other holds it is told "unknown" (None:
    catch up from the database), never another mailbox's figures."""
    a, b, _ = boards
    a.mark([Change(EXISTS, 1, 7, modseq=1000)])
    a.mark([Change(EXISTS, 1, 7 + SLOTS, modseq=3)])
    assert b.state(7 + SLOTS) == (2, 3)
    assert b.state(7) is None
    a.mark([Change(EXISTS, 1, 7, modseq=1001)])
    assert b.state(7) == (3, 1001) and b.state(7 + SLOTS) is None


def test_a_slot_being_rewritten_reads_as_unknown(boards):
    a, b, _ = boards
    a.mark([Change(EXISTS, 1, 7, modseq=4)])
    a._mine[21] = commitboard._BUSY  # the moment a slot changes hands
    assert b.state(7) is None


def test_a_board_without_the_worker_s_row_is_refused(tmp_path):
    path = commitboard.create(tmp_path, 2)
    with pytest.raises(ValueError, match="no row 2"):
        CommitBoard(path, 2)
    path.write_bytes(b"")
    with pytest.raises(ValueError, match="no row 0"):
        CommitBoard(path, 0)
