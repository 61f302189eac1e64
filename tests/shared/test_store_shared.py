"""The store's side of sharing (storage/shared.py), on SQLite and PostgreSQL: ACL rows and their limits, groups,
names across namespaces, shared mailboxes, per-reader \\Seen through STORE, COPY, MOVE, APPEND and EXPUNGE."""

from __future__ import annotations

import pytest

from mailserver.access import Forbidden, MailboxNotFound, Principal, Rights, authorize, grants_for
from storage.models import FLAG_ANSWERED, FLAG_DELETED, FLAG_SEEN
from storage.shared import MAX_ACL_ENTRIES, normalize_rights
from storage.store import AlreadyExists, Delivery, Invalid, NotFound
from tests import test_store
from tests.test_store import PARSED, msg

store = test_store.store  # the fixture: SQLite and PostgreSQL, bodies in files or in the database


def _people(store):
    alice = store.add_account("alice@example.test", "x")
    bob = store.add_account("bob@example.test", "x")
    return alice, bob


def test_rights_letters_obsolete_c_and_d_and_unknown():
    """RFC 4314 2.1.1: "c" is "k", "d" is "xte"; the RFC's order; an unknown letter is refused."""
    assert normalize_rights("dcl") == "lkxte"
    assert normalize_rights("aelrswipkxt") == "lrswipkxtea"
    with pytest.raises(Invalid):
        normalize_rights("lrz")


def test_setacl_modes_identifiers_and_limit(store):
    alice, bob = _people(store)
    inbox = store.get_mailbox(alice.id, "INBOX")
    assert store.set_acl(inbox.id, "Bob@Example.test", "lr") == "lr"
    assert store.set_acl(inbox.id, "bob@example.test", "+sw") == "lrsw"
    assert store.set_acl(inbox.id, "bob@example.test", "-r") == "lsw"
    assert store.set_acl(inbox.id, "bob@example.test", "") == ""  # an empty set removes the entry
    assert store.get_acl(inbox.id) == []
    with pytest.raises(Invalid):
        store.set_acl(inbox.id, "nobody@example.test", "lr")
    with pytest.raises(Invalid):
        store.set_acl(inbox.id, "$nogroup", "lr")
    for bad in ("--bob@example.test", "-", "-nobody@example.test", "-$nogroup"):
        with pytest.raises(Invalid):
            store.set_acl(inbox.id, bad, "lr")
    for i in range(MAX_ACL_ENTRIES):
        store.add_group(f"g{i}")
        store.set_acl(inbox.id, f"$g{i}", "l")
    store.add_group("one-more")
    with pytest.raises(Invalid, match="too many"):
        store.set_acl(inbox.id, "$one-more", "l")
    assert len(store.get_acl(inbox.id)) == MAX_ACL_ENTRIES
    assert store.set_acl(inbox.id, "$g0", "lr") == "lr"  # replacing an entry is not one more


def test_negative_rights_are_taken_from_the_union(store):
    """RFC 4314 2: "-identifier" rows remove rights; the effective rights are the union of the positive rows
    minus the union of the negative ones, whichever identifiers they name."""
    alice, bob = _people(store)
    carol = store.add_account("carol@example.test", "x")
    box = store.create_mailbox(alice.id, "Projects").value
    store.add_group("team")
    store.set_group_member("team", "bob@example.test")
    store.set_acl(box.id, "anyone", "lr")
    store.set_acl(box.id, "$team", "lrsw")
    assert store.set_acl(box.id, "-Bob@Example.test", "w") == "w"
    assert store.set_acl(box.id, "-anyone", "+t") == "t"
    assert ("-bob@example.test", "w") in store.get_acl(box.id) and ("$team", "lrsw") in store.get_acl(box.id)
    _found, letters = store.resolve_mailbox(bob.id, "Other Users/alice@example.test/Projects")
    assert letters == "lrs"
    assert [(m.id, r) for m, r in store.shared_with(bob.id)] == [(box.id, "lrs")]
    assert store.resolve_mailbox(carol.id, "Other Users/alice@example.test/Projects")[1] == "lr"
    store.set_acl(box.id, "-$team", "l")  # taken from every identifier, so bob no longer sees the mailbox
    assert store.resolve_mailbox(bob.id, "Other Users/alice@example.test/Projects")[1] == "rs"
    store.set_acl(box.id, "-$team", "lrsw")
    assert store.shared_with(bob.id) == []
    assert store.delete_acl(box.id, "-$team") and store.delete_acl(box.id, "-BOB@example.test")
    assert store.resolve_mailbox(bob.id, "Other Users/alice@example.test/Projects")[1] == "lrsw"
    inbox = store.get_mailbox(alice.id, "INBOX")
    store.set_acl(inbox.id, "-alice@example.test", "lr")  # the owner rule still gives the owner every right
    assert authorize(Principal(alice.id), inbox, Rights.READ) is inbox


def test_rights_come_from_address_anyone_and_groups(store):
    alice, bob = _people(store)
    carol = store.add_account("carol@example.test", "x")
    box = store.create_mailbox(alice.id, "Projects").value
    store.set_acl(box.id, "anyone", "l")
    store.add_group("team")
    store.set_group_member("team", "bob@example.test")
    store.set_acl(box.id, "$team", "r")
    store.set_acl(box.id, "bob@example.test", "s")
    found, letters = store.resolve_mailbox(bob.id, "Other Users/alice@example.test/Projects")
    assert letters == "lrs" and found.name == "Other Users/alice@example.test/Projects"
    assert found.local_name == "Projects" and found.account_id == alice.id
    p = Principal(bob.id, "bob@example.test")
    assert Rights.parse("lrs") in Rights.parse("".join(g.rights.letters for g in grants_for(p, found)))
    assert authorize(p, found, Rights.READ) is found
    with pytest.raises(Forbidden):
        authorize(p, found, Rights.INSERT)
    c_found, c_letters = store.resolve_mailbox(carol.id, "Other Users/alice@example.test/Projects")
    assert c_letters == "l"
    with pytest.raises(Forbidden):
        authorize(Principal(carol.id), c_found, Rights.READ)
    # A grant read for one reader never serves another.
    with pytest.raises(MailboxNotFound):
        authorize(Principal(carol.id), found, Rights.NONE)
    store.set_group_member("team", "bob@example.test", False)
    assert store.resolve_mailbox(bob.id, "Other Users/alice@example.test/Projects")[1] == "ls"
    assert [m.name for m, _r in store.shared_with(bob.id)] == ["Other Users/alice@example.test/Projects"]
    store.remove_group("team")


def test_names_that_lead_nowhere(store):
    alice, bob = _people(store)
    for name in ("Other Users/alice@example.test", "Other Users/nobody@example.test/INBOX",
                 "Other Users/bob@example.test/INBOX",  # one's own account through Other Users/
                 "Shared/none", "Shared/", "Other Users/"):
        assert store.resolve_mailbox(bob.id, name) is None, name


def test_deleted_mailbox_takes_its_acl(store):
    alice, bob = _people(store)
    box = store.create_mailbox(alice.id, "Gone").value
    store.set_acl(box.id, "bob@example.test", "lr")
    store.delete_mailbox(alice.id, "Gone")
    again = store.create_mailbox(alice.id, "Gone").value
    assert store.get_acl(again.id) == [] and store.shared_with(bob.id) == []


def test_shared_mailbox_receives_mail_and_keeps_seen_per_reader(store):
    alice, bob = _people(store)
    acct = store.create_shared_mailbox("sales@example.test")
    assert store.get_account("sales@example.test").id == acct.id
    inbox = store.get_mailbox(acct.id, "INBOX")
    assert inbox.seen_per_reader
    store.set_acl(inbox.id, "anyone", "lrswite")
    res = store.deliver_batch([Delivery(acct.id, msg(store, 1), PARSED, flags=FLAG_SEEN)]).value[0]
    assert res.ok and res.mailbox_id == inbox.id
    assert store.list_messages(inbox.id)[0].flags == 0  # \Seen never stored in the shared flags
    changed = store.set_flags(inbox.id, [1], "add", FLAG_SEEN | FLAG_ANSWERED, reader=alice.id)
    assert changed.value.updated[0].flags == FLAG_SEEN | FLAG_ANSWERED
    assert changed.changes[0].reader == alice.id
    assert store.list_messages(inbox.id)[0].flags == FLAG_ANSWERED
    assert store.seen_uids(inbox.id, alice.id) == {1} and store.seen_uids(inbox.id, bob.id) == set()
    assert store.reader_unseen(inbox.id, alice.id) == 0 and store.reader_unseen(inbox.id, bob.id) == 1
    changed_alice, _ = store.changes_since(inbox.id, 0, alice.id)
    changed_bob, _ = store.changes_since(inbox.id, 0, bob.id)
    assert changed_alice[0].flags == FLAG_SEEN | FLAG_ANSWERED and changed_bob[0].flags == FLAG_ANSWERED
    # A STORE without a reader cannot set \Seen there.
    store.set_flags(inbox.id, [1], "add", FLAG_SEEN)
    assert store.reader_unseen(inbox.id, bob.id) == 1
    # COPY out takes the copier's \Seen; COPY in keeps it theirs.
    mine = store.get_mailbox(alice.id, "INBOX")
    store.copy(inbox.id, [1], mine.id, reader=alice.id)
    assert store.list_messages(mine.id)[0].flags == FLAG_SEEN | FLAG_ANSWERED
    store.copy(mine.id, [1], inbox.id, reader=alice.id)
    assert store.list_messages(inbox.id)[1].flags == FLAG_ANSWERED and store.seen_uids(inbox.id, alice.id) == {1, 2}
    # Quota is the owner's: the shared mailbox counts the copy, the reader's account the one it took.
    assert store.quota(acct.id)[0] == 2 * store.list_messages(inbox.id)[0].size
    # EXPUNGE takes every reader's \Seen with it; UIDs are never reused so nothing comes back.
    store.set_flags(inbox.id, [1], "add", FLAG_DELETED, reader=bob.id)
    store.expunge(inbox.id)
    assert store.seen_uids(inbox.id, alice.id) == {2}
    # MOVE across accounts: the messages leave the shared mailbox and its quota.
    store.copy(inbox.id, [2], mine.id, move=True, reader=alice.id)
    assert store.list_messages(inbox.id) == [] and store.quota(acct.id)[0] == 0
    assert store.seen_uids(inbox.id, alice.id) == set()


def test_shared_mailbox_names_and_removal(store):
    _people(store)
    acct = store.create_shared_mailbox("Help@example.test", "helpdesk")
    with pytest.raises(AlreadyExists):
        store.create_shared_mailbox("other@example.test", "helpdesk")
    with pytest.raises(AlreadyExists):
        store.create_shared_mailbox("alice@example.test", "alice")  # a person's address
    with pytest.raises(Invalid):
        store.create_shared_mailbox("x@example.test", "bad name/with slash")
    store.create_mailbox(acct.id, "Sent", "\\Sent")
    alice = store.get_account("alice@example.test")
    store.set_acl(store.get_mailbox(acct.id, "Sent").id, "alice@example.test", "lr")
    found, _ = store.resolve_mailbox(alice.id, "Shared/helpdesk/Sent")
    assert found.name == "Shared/helpdesk/Sent" and found.seen_per_reader
    assert store.resolve_mailbox(alice.id, "Shared/helpdesk")[0].local_name == "INBOX"
    assert store.list_shared_mailboxes() == [("helpdesk", "help@example.test")]
    store.remove_shared_mailbox("help@example.test")
    assert store.list_shared_mailboxes() == [] and store.get_account("help@example.test") is None
    with pytest.raises(NotFound):
        store.remove_shared_mailbox("helpdesk")


def test_reader_recent_claims(store):
    alice, bob = _people(store)
    acct = store.create_shared_mailbox("sales@example.test")
    inbox = store.get_mailbox(acct.id, "INBOX")
    assert store.claim_reader_recent(inbox.id, alice.id, inbox.uid_validity, 3) == 0
    assert store.claim_reader_recent(inbox.id, alice.id, inbox.uid_validity, 5) == 3
    assert store.claim_reader_recent(inbox.id, alice.id, inbox.uid_validity, 4) == 5
    assert store.reader_recent_last(inbox.id, bob.id, inbox.uid_validity) == 0
    assert store.reader_recent_last(inbox.id, alice.id, inbox.uid_validity + 1) == 0  # another incarnation


def test_new_mailboxes_take_their_parents_acl(store):
    alice, bob = _people(store)
    box = store.create_mailbox(alice.id, "Team").value
    store.set_acl(box.id, "bob@example.test", "lrk")
    store.create_mailbox(alice.id, "Team/A/B")
    for name in ("Team/A", "Team/A/B"):
        assert store.get_acl(store.get_mailbox(alice.id, name).id) == [("bob@example.test", "lrk")], name
    assert store.get_acl(store.create_mailbox(alice.id, "Other").value.id) == []
    acct = store.create_shared_mailbox("sales@example.test")
    store.set_acl(store.get_mailbox(acct.id, "INBOX").id, "anyone", "lr")
    assert store.get_acl(store.create_mailbox(acct.id, "Sent").value.id) == [("anyone", "lr")]
