"""The mailbox access check (mailserver/access.py): rights as RFC 4314 data, the owner rule, the grants hook, and the
one check that answers a forbidden mailbox or message exactly as a missing one; the change hub's per-mailbox
subscriptions."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from twisted.internet.defer import ensureDeferred

from mailserver import access as A
from mailserver.access import (
    ALL,
    BlockingMailboxAccess,
    Forbidden,
    Grant,
    MailboxAccess,
    MailboxNotFound,
    MessageNotFound,
    Principal,
    Rights,
    authorize,
    flag_rights,
    rights_of,
)
from storage import migrate
from storage.blobs import FileBlobStore
from storage.changes import EXISTS, EXPUNGE, Change, ChangeHub
from storage.db import make_engine
from storage.models import FLAG_ANSWERED, FLAG_DELETED, FLAG_FLAGGED, FLAG_SEEN
from storage.store import Delivery, NotFound, Store
from tests.harness import running_server

PARSED = {"subject": "hi", "from_addr": "a@b", "header_size": 10}


# -- rights as data ------------------------------------------------------------------------------------------

def test_rights_parse_and_letters_round_trip():
    """Rights are a set of RFC 4314 letters: parsed from and shown as letters, in the RFC's order."""
    assert Rights.parse("") is Rights.NONE
    assert Rights.parse("rl") == Rights.LOOKUP | Rights.READ
    assert Rights.parse("rl").letters == "lr"
    assert ALL.letters == "lrswipkxtea"
    assert Rights.parse(ALL.letters) == ALL
    for letter in "lrswipkxtea":
        assert Rights.parse(letter).letters == letter
    with pytest.raises(ValueError):
        Rights.parse("lrz")
    with pytest.raises(ValueError):
        Rights.parse("c")  # RFC 2086's obsolete "c" is not a right here


def test_rights_subset_is_the_permission_test():
    """``need in have`` holds when every right of ``need`` is in ``have``; the empty set is always permitted."""
    have = Rights.parse("lrs")
    assert Rights.READ in have
    assert Rights.parse("lr") in have
    assert Rights.parse("rw") not in have
    assert Rights.NONE in Rights.NONE
    assert Rights.NONE in have
    assert hash(Rights.parse("lr")) == hash(Rights.parse("rl"))  # usable as a frozen value


def test_flag_rights_follow_rfc4314():
    """RFC 4314 4: \\Seen needs "s", \\Deleted "t", other flags and keywords "w"."""
    assert flag_rights(FLAG_SEEN) == Rights.SEEN
    assert flag_rights(FLAG_DELETED) == Rights.DELETE_MESSAGES
    assert flag_rights(FLAG_FLAGGED) == Rights.WRITE
    assert flag_rights(FLAG_ANSWERED | FLAG_SEEN) == Rights.WRITE | Rights.SEEN
    assert flag_rights(0, keywords=True) == Rights.WRITE
    assert flag_rights(0) == Rights.NONE


# -- the owner rule and grants -------------------------------------------------------------------------------

def _mailbox(id=7, account_id=1, name="Work"):
    from storage.store import MailboxInfo

    return MailboxInfo(id=id, account_id=account_id, name=name, special_use="", subscribed=True, uid_validity=1,
                       uid_next=1, highest_modseq=1, message_count=0, unseen_count=0, total_size=0, keywords=())


ALICE, BOB = Principal(1, "alice@example.test"), Principal(2, "bob@example.test")


def test_owner_has_every_right_and_nobody_else_any():
    """Today's rule, computed from data: the owner has all of lrswipkxtea on their mailbox, another account none."""
    mb = _mailbox(account_id=ALICE.account_id)
    assert rights_of(ALICE, mb) == ALL
    assert rights_of(BOB, mb) == Rights.NONE
    assert A.grants_for(BOB, mb) == ()  # no grants exist yet


def test_grants_add_rights_for_their_grantee_and_mailbox_only():
    """A grant gives its grantee its rights on its mailbox, nothing on another mailbox, nothing to another account
    (what the shared-mailbox issue will store)."""
    mb = _mailbox(id=7, account_id=ALICE.account_id)
    grants = [Grant(7, BOB.account_id, Rights.parse("lr")), Grant(8, BOB.account_id, Rights.parse("i")),
              Grant(7, 3, Rights.parse("w"))]
    assert rights_of(BOB, mb, grants) == Rights.parse("lr")
    assert rights_of(Principal(3), mb, grants) == Rights.WRITE
    assert rights_of(ALICE, mb, grants) == ALL


def test_authorize_answers_missing_and_forbidden_alike():
    """The one check raises the same exception with the same text for a missing mailbox and another's."""
    other = _mailbox(id=9, account_id=BOB.account_id)
    with pytest.raises(MailboxNotFound) as forbidden:
        authorize(ALICE, other, Rights.READ, 9)
    with pytest.raises(MailboxNotFound) as missing:
        authorize(ALICE, None, Rights.READ, 9)
    assert type(forbidden.value) is type(missing.value)
    assert str(forbidden.value) == str(missing.value) == "no mailbox 9"
    assert isinstance(forbidden.value, NotFound)  # store-error mapping answers it as a missing mailbox
    own = _mailbox(id=9, account_id=ALICE.account_id)
    assert authorize(ALICE, own, ALL, 9) is own


def test_a_right_the_grant_lacks_is_refused_like_a_missing_mailbox():
    """Rights come from data: a principal granted "lr" only may LIST and SELECT, not insert (Forbidden: it may see
    the mailbox, so RFC 4314 lets it know why); without "l" every request is refused as for a missing mailbox."""
    mb = _mailbox(id=5, account_id=BOB.account_id)
    grants = [Grant(5, ALICE.account_id, Rights.parse("lr"))]
    assert authorize(ALICE, mb, Rights.READ, 5, grants=grants) is mb
    with pytest.raises(Forbidden, match=r"^no permission \(i\) on mailbox 5$"):
        authorize(ALICE, mb, Rights.INSERT, 5, grants=grants)
    with pytest.raises(MailboxNotFound, match="^no mailbox 5$"):
        authorize(ALICE, mb, Rights.READ, 5)  # without the grant: nothing
    no_lookup = [Grant(5, ALICE.account_id, Rights.parse("rswipkxtea"))]
    for need in (Rights.READ, Rights.INSERT, Rights.NONE):
        with pytest.raises(MailboxNotFound, match="^no mailbox 5$"):
            authorize(ALICE, mb, need, 5, grants=no_lookup)


# -- the blocking check over a real store ------------------------------------------------------------------

@pytest.fixture
def store(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path}/db.sqlite3")
    migrate.upgrade(engine)
    s = Store(engine, FileBlobStore(Path(tmp_path) / "blobs"))
    s.add_domain("example.test")
    yield s
    engine.dispose()


def _deliver(store, account_id, mailbox="INBOX"):
    blob = store.blobs.put(b"Subject: m\r\n\r\nbody\r\n")
    store.deliver_batch([Delivery(account_id, blob, PARSED, mailbox=mailbox)])


def test_blocking_check_by_name_and_id(store):
    """Names resolve in the principal's own namespace; ids of another account's mailboxes are missing."""
    a = store.add_account("a@example.test", "x")
    b = store.add_account("b@example.test", "x")
    pa, pb = Principal(a.id, a.address), Principal(b.id, b.address)
    _deliver(store, b.id)
    acc = BlockingMailboxAccess(store)
    own = acc.open_mailbox(pa, "INBOX", Rights.READ)
    assert own.account_id == a.id
    assert acc.open_mailbox(pa, own.id, Rights.READ) == own
    b_inbox = acc.open_mailbox(pb, "INBOX", Rights.READ)
    missing_id = max(m.id for m in store.list_mailboxes(b.id)) + 1000
    errors = []
    for ref in (b_inbox.id, missing_id):
        with pytest.raises(MailboxNotFound) as e:
            acc.open_mailbox(pa, ref, Rights.READ)
        errors.append(str(e.value).replace(str(ref), "ID"))
    assert errors[0] == errors[1]
    # A name is never read as an id, even when it spells another account's mailbox id.
    with pytest.raises(MailboxNotFound):
        acc.open_mailbox(pa, str(b_inbox.id), Rights.READ)
    with pytest.raises(MailboxNotFound):
        acc.open_messages(pa, b_inbox.id, [1], Rights.READ)
    box, msgs = acc.open_messages(pb, b_inbox.id, [1, 0, -1, 2**40], Rights.READ)
    assert box == b_inbox and [m.uid for m in msgs] == [1]


@pytest.mark.parametrize("ref", [0, -1, 2**63, 10**40, True])
def test_out_of_range_ids_are_missing_without_a_query(store, ref):
    """Ids the database cannot hold (or a bool) name nothing: missing, never an overflow error."""
    a = store.add_account("a@example.test", "x")
    acc = BlockingMailboxAccess(store)
    if ref is True:
        with pytest.raises(TypeError):
            acc.open_mailbox(Principal(a.id), ref, Rights.READ)
        return
    with pytest.raises(MailboxNotFound, match=f"^no mailbox {ref}$"):
        acc.open_mailbox(Principal(a.id), ref, Rights.READ)


# -- the async check on the reactor thread ------------------------------------------------------------------

def test_async_check_messages_and_create_target(tmp_path):
    """MailboxAccess on a running server: another's mailbox and message ids are missing; a missing message of a
    permitted mailbox is MessageNotFound; CREATE's target needs "k" on the nearest existing parent."""
    with running_server(tmp_path, listeners=()) as srv:
        a = srv.add_user("a@example.test", "pw")
        b = srv.add_user("b@example.test", "pw")
        srv.deliver("b@example.test", b"Subject: secret\r\n\r\nbody\r\n")
        pa, pb = Principal(a.id, a.address), Principal(b.id, b.address)
        acc = MailboxAccess(srv.server.astore)

        def run(coro_fn, *args):
            return srv.call(lambda: ensureDeferred(coro_fn(*args)))

        b_inbox = srv.store.get_mailbox(b.id, "INBOX")
        box, msg = run(acc.open_message, pb, b_inbox.id, 1, Rights.READ)
        assert box.id == b_inbox.id and msg.uid == 1
        with pytest.raises(MailboxNotFound) as e:
            run(acc.open_message, pa, b_inbox.id, 1, Rights.READ)
        assert type(e.value) is MailboxNotFound and str(e.value) == f"no mailbox {b_inbox.id}"
        with pytest.raises(MessageNotFound):
            run(acc.open_message, pb, b_inbox.id, 2, Rights.READ)
        assert run(acc.open_mailbox, pa, "inbox", Rights.READ).account_id == a.id  # RFC 9051 5.1
        assert {m.account_id for m in run(acc.visible_mailboxes, pa)} == {a.id}
        assert run(acc.create_target, pa, "Top", Rights.CREATE) == a.id
        assert run(acc.create_target, pa, "INBOX/x/y", Rights.CREATE) == a.id


def test_listed_open_is_the_same_check_as_open_mailbox(tmp_path):
    """``open_mailbox_listed`` (the webmail pages' one store call for the mailbox and the folder tree) answers every
    id as ``open_mailbox`` does: the same mailbox, or the same error with the same text, for one's own mailbox,
    another's shared by address, by ``$group``, by ``anyone``, without ``l``, taken away by a negative row, a
    shared mailbox, not shared at all, and a missing id; its tree is ``visible_mailboxes``."""
    with running_server(tmp_path, listeners=()) as srv:
        a = srv.add_user("a@example.test", "pw")
        b = srv.add_user("b@example.test", "pw")
        st = srv.store
        for name in ("ByAddress", "ByGroup", "ByAnyone", "NoLookup", "Negated", "Private"):
            st.create_mailbox(b.id, name)
        ids = {m.name: m.id for m in st.list_mailboxes(b.id)}
        st.add_group("team")
        st.set_group_member("team", a.address)
        st.set_acl(ids["ByAddress"], a.address, "lrs")
        st.set_acl(ids["ByGroup"], "$team", "lri")
        st.set_acl(ids["ByAnyone"], "anyone", "lr")
        st.set_acl(ids["NoLookup"], a.address, "r")
        st.set_acl(ids["Negated"], "$team", "lr")
        st.set_acl(ids["Negated"], "-" + a.address, "l")
        sales = st.create_shared_mailbox("sales@example.test", "sales")
        sales_inbox = st.list_mailboxes(sales.id)[0]
        st.set_acl(sales_inbox.id, a.address, "lrsw")
        srv.deliver("sales@example.test", b"Subject: to sales\r\n\r\nbody\r\n")
        pa = Principal(a.id, a.address)
        acc = MailboxAccess(srv.server.astore)

        def outcome(coro_fn, *args):
            try:
                return srv.call(lambda: ensureDeferred(coro_fn(*args)))
            except MailboxNotFound as e:
                return type(e), str(e)

        own = [m.id for m in st.list_mailboxes(a.id)]
        refs = own + sorted(ids.values()) + [sales_inbox.id, max(ids.values()) + 1000]
        visible = outcome(acc.visible_mailboxes, pa)
        assert {m.name for m in visible} >= {"Other Users/b@example.test/ByAddress", "Shared/sales"}
        for need in (Rights.READ, Rights.INSERT, Rights.LOOKUP):
            for ref in refs:
                listed = outcome(acc.open_mailbox_listed, pa, ref, need)
                plain = outcome(acc.open_mailbox, pa, ref, need)
                if isinstance(plain, tuple):
                    assert listed == plain, (ref, need)
                else:
                    assert listed == (plain, visible), (ref, need)
        box, msg, tree = outcome(acc.open_message_listed, pa, sales_inbox.id, 1, Rights.READ)
        assert (box, msg) == outcome(acc.open_message, pa, sales_inbox.id, 1, Rights.READ) and tree == visible
        assert outcome(acc.open_message_listed, pa, ids["Private"], 1, Rights.READ) == \
            outcome(acc.open_message, pa, ids["Private"], 1, Rights.READ)


def test_create_target_checks_the_nearest_existing_parent():
    """RFC 4314 4: CREATE needs "k" on the parent; a missing level is skipped to the nearest existing ancestor,
    and a parent the principal has no "k" on refuses it (as a missing one)."""
    mine = [_mailbox(1, ALICE.account_id, "A"), _mailbox(2, ALICE.account_id, "A/B")]
    assert A._create_target(ALICE, mine, "A/B/C/D", Rights.CREATE) == ALICE.account_id
    assert A._create_target(ALICE, mine, "Top", Rights.CREATE) == ALICE.account_id
    others = [_mailbox(1, ALICE.account_id, "A"), _mailbox(2, BOB.account_id, "A/B")]
    with pytest.raises(MailboxNotFound):
        A._create_target(ALICE, others, "A/B/C/D", Rights.CREATE)
    assert A._create_target(ALICE, others, "A/X", Rights.CREATE) == ALICE.account_id


# -- change-hub subscriptions by mailbox ---------------------------------------------------------------------

def test_mailbox_subscription_gets_the_mailboxs_changes_whoever_made_them():
    """A per-mailbox listener hears every change of that mailbox (any account's), and only of it; account listeners
    keep hearing their account; unsubscribing stops it."""
    hub = ChangeHub()
    seen_mb, seen_acct = [], []
    stop = hub.subscribe_mailbox(10, seen_mb.extend)
    hub.subscribe(1, seen_acct.extend)
    changes = [Change(EXISTS, 1, 10, uid=1), Change(EXISTS, 1, 11, uid=1), Change(EXPUNGE, 2, 10, uid=1)]
    hub.publish(changes)
    assert seen_mb == [changes[0], changes[2]]
    assert seen_acct == [changes[0], changes[1]]
    stop()
    stop()  # idempotent
    hub.publish([Change(EXISTS, 1, 10, uid=2)])
    assert len(seen_mb) == 2
    assert hub._mailbox_listeners == {}


def test_a_failing_mailbox_listener_does_not_stop_the_others():
    hub = ChangeHub()
    got = []

    def broken(_changes):
        raise RuntimeError("boom")

    hub.subscribe_mailbox(3, broken)
    hub.subscribe_mailbox(3, got.extend)
    hub.publish([Change(EXISTS, 1, 3, uid=1)])
    assert len(got) == 1


def test_principal_is_a_frozen_value():
    p = Principal(1, "a@example.test")
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.account_id = 2  # type: ignore[misc]
    assert p == Principal(1, "a@example.test")
