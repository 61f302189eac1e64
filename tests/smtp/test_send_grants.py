"""Send-as and send-on-behalf grants over real submission (587 with STARTTLS, 465 with implicit TLS).

A ``send-as`` grant lets the account use the address as MAIL FROM and From; ``send-on-behalf`` only as From, and the
message then names the real account in ``Sender:`` (added when missing). Everyone else is refused as before: MAIL
FROM with 553 5.7.1, the header at the end of DATA with 550 5.7.1."""

from __future__ import annotations

import smtplib
import ssl

import pytest

from mailserver.delivery.sender_headers import header_senders, sender_verdict
from storage.sendgrants import OWN, SEND_AS, SEND_ON_BEHALF
from tests.harness import running_server

ALICE, BOB, CAROL, DAVE = "alice@example.test", "bob@example.test", "carol@example.test", "dave@example.test"
SALES = "sales@example.test"  # a shared address that is no account's own
TEAM = "team@example.test"  # an alias of carol's
PW = "secret"


def _tls() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


@pytest.fixture
def srv(tmp_path, database_url):
    with running_server(tmp_path, listeners=("submission", "submissions"), database_url=database_url) as s:
        for user in (ALICE, BOB, CAROL, DAVE):
            s.add_user(user, PW)
        s.store.add_alias(TEAM, CAROL)
        s.store.grant_send(ALICE, SALES, SEND_AS)
        s.store.grant_send(ALICE, TEAM, SEND_AS)
        s.store.grant_send(ALICE, BOB, SEND_ON_BEHALF)
        yield s


def _client(srv, port: str) -> smtplib.SMTP:
    if port == "submissions":
        c = smtplib.SMTP_SSL("127.0.0.1", srv.port("submissions"), timeout=30, context=_tls())
    else:
        c = smtplib.SMTP("127.0.0.1", srv.port("submission"), timeout=30)
        c.starttls(context=_tls())
    return c


def _send(srv, user: str, mail_from: str, headers: str, port: str = "submission"):
    """(MAIL reply, DATA reply or None when MAIL was refused)."""
    with _client(srv, port) as c:
        c.login(user, PW)
        mail = c.mail(mail_from)
        if mail[0] != 250:
            return mail, None
        assert c.rcpt(DAVE)[0] == 250
        return mail, c.data(f"{headers}To: {DAVE}\r\nSubject: grants\r\n\r\nbody\r\n".encode())


def _dave(srv) -> list[bytes]:
    mb = srv.store.get_mailbox(srv.store.get_account(DAVE).id, "INBOX")
    uids = [m.uid for m in srv.store.list_messages(mb.id)]
    return [srv.store.read_blob(m.blob_id) for m in srv.store.get_messages(mb.id, uids)]


def _header(raw: bytes) -> bytes:
    return raw.split(b"\r\n\r\n", 1)[0]


@pytest.mark.parametrize("port", ["submission", "submissions"])
def test_send_as_grant_allows_mail_from_and_from(srv, port):
    """alice holds send-as on sales@: MAIL FROM and From may both be sales@, and nothing is added."""
    mail, data = _send(srv, ALICE, SALES, f"From: Sales <{SALES}>\r\n", port)
    assert mail[0] == 250 and data[0] == 250, (mail, data)
    (raw,) = _dave(srv)
    assert b"From: Sales <sales@example.test>" in raw
    assert b"\r\nSender:" not in _header(raw)


def test_send_as_an_alias_of_another_account(srv):
    mail, data = _send(srv, ALICE, TEAM, f"From: {TEAM}\r\n")
    assert mail[0] == 250 and data[0] == 250
    assert _send(srv, CAROL, TEAM, f"From: {TEAM}\r\n")[1][0] == 250  # still carol's own


def test_send_as_covers_a_subaddress_and_case(srv):
    mail, data = _send(srv, ALICE, "Sales+Orders@Example.test", "From: SALES+orders@example.test\r\n")
    assert mail[0] == 250 and data[0] == 250


@pytest.mark.parametrize("port", ["submission", "submissions"])
def test_send_on_behalf_gets_sender_naming_the_account(srv, port):
    """alice may write From: bob (on behalf): her own envelope, and Sender: alice is added to the copy."""
    mail, data = _send(srv, ALICE, ALICE, f"From: Bob <{BOB}>\r\n", port)
    assert mail[0] == 250 and data[0] == 250, (mail, data)
    (raw,) = _dave(srv)
    head = _header(raw)
    assert b"From: Bob <bob@example.test>" in head
    assert head.count(b"Sender: alice@example.test") == 1
    assert froms_and_senders(raw) == ([BOB], [ALICE])


def test_send_on_behalf_keeps_a_sender_of_her_own(srv):
    mail, data = _send(srv, ALICE, ALICE, f"From: {BOB}\r\nSender: Alice <{ALICE}>\r\n")
    assert data[0] == 250
    (raw,) = _dave(srv)
    assert froms_and_senders(raw) == ([BOB], [ALICE])  # hers kept, none added


def froms_and_senders(raw: bytes):
    return header_senders(_header(raw) + b"\r\n\r\n")


@pytest.mark.parametrize("headers", [
    f"From: {BOB}\r\nSender: {SALES}\r\n",  # on behalf: Sender must be her own, not another granted address
    f"From: {BOB}\r\nSender: {CAROL}\r\n",
    f"From: {SALES}\r\nSender: {BOB}\r\n",  # on-behalf is not enough for Sender
    f"From: {CAROL}\r\n",  # no grant on carol
    f"From: {SALES}, {CAROL}\r\n",
    f"FROM : {CAROL}\r\n",  # the reading rules are those of the header check (RFC 5322 4.5.3)
    f"From: Alice\r\n <{CAROL}>\r\n",
])
def test_headers_beyond_the_grants_are_refused_at_data(srv, headers):
    mail, data = _send(srv, ALICE, ALICE, headers)
    assert mail[0] == 250
    assert data[0] == 550 and data[1].startswith(b"5.7.1"), data
    assert _dave(srv) == []


@pytest.mark.parametrize("port", ["submission", "submissions"])
def test_send_on_behalf_is_not_enough_for_mail_from(srv, port):
    """The envelope sender of an on-behalf message stays the account's own: MAIL FROM:<bob> is 553 5.7.1."""
    mail, data = _send(srv, ALICE, BOB, f"From: {BOB}\r\n", port)
    assert mail[0] == 553 and mail[1].startswith(b"5.7.1"), mail
    assert _dave(srv) == []


@pytest.mark.parametrize("mail_from,headers", [
    (SALES, f"From: {CAROL}\r\n"),  # MAIL FROM may be sales@ (send-as), the From still has to pass
    (ALICE, f"From: {CAROL}\r\n"),
])
def test_mail_from_and_from_are_both_checked(srv, mail_from, headers):
    mail, data = _send(srv, ALICE, mail_from, headers)
    assert mail[0] == 250 and data[0] == 550
    assert _dave(srv) == []


@pytest.mark.parametrize("user", [BOB, CAROL, DAVE])
def test_accounts_without_a_grant_are_refused(srv, user):
    """Other accounts, the on-behalf address's own one included, do not get alice's grants: refused as before."""
    mail, _ = _send(srv, user, SALES, f"From: {SALES}\r\n")
    assert mail[0] == 553
    mail, data = _send(srv, user, user, f"From: {SALES}\r\n")
    assert mail[0] == 250 and data[0] == 550 and data[1].startswith(b"5.7.1")
    if user != BOB:
        mail, data = _send(srv, user, user, f"From: {BOB}\r\n")
        assert data[0] == 550
    assert _dave(srv) == []


def test_revoked_grants_are_refused_from_the_next_message(srv):
    assert _send(srv, ALICE, SALES, f"From: {SALES}\r\n")[1][0] == 250
    srv.store.revoke_send(ALICE, SALES)
    srv.store.revoke_send(ALICE, BOB)
    mail, _ = _send(srv, ALICE, SALES, f"From: {SALES}\r\n")
    assert mail[0] == 553
    mail, data = _send(srv, ALICE, ALICE, f"From: {SALES}\r\n")
    assert data[0] == 550
    mail, data = _send(srv, ALICE, ALICE, f"From: {BOB}\r\n")
    assert data[0] == 550
    assert len(_dave(srv)) == 1


def test_a_grant_changed_to_on_behalf_no_longer_covers_mail_from(srv):
    srv.store.grant_send(ALICE, SALES, SEND_ON_BEHALF)
    assert _send(srv, ALICE, SALES, f"From: {SALES}\r\n")[0][0] == 553
    mail, data = _send(srv, ALICE, ALICE, f"From: {SALES}\r\n")
    assert data[0] == 250
    (raw,) = _dave(srv)
    assert froms_and_senders(raw) == ([SALES], [ALICE])


def test_removing_the_account_of_a_granted_address_removes_the_grant(srv):
    """A later account of the same address must not inherit who may send as it."""
    srv.store.remove_account(BOB)
    assert srv.store.list_send_grants(address=BOB) == []
    srv.add_user(BOB, PW)
    assert _send(srv, ALICE, ALICE, f"From: {BOB}\r\n")[1][0] == 550


# ------------------------------------------------------------------------------ the decision, without sockets

_RIGHTS = {ALICE: OWN, "a2@example.test": OWN, SALES: SEND_AS, BOB: SEND_ON_BEHALF}


@pytest.mark.parametrize("froms,senders,expect", [
    ([ALICE], [], None),
    ([SALES], [], None),
    ([SALES], [ALICE], None),
    ([SALES], [SALES], None),
    ([BOB], [], ("accept", (("Sender", ALICE),))),
    ([BOB, ALICE], [], ("accept", (("Sender", ALICE),))),
    ([BOB], ["a2@example.test"], None),  # an alias of hers is her own
    ([BOB], [SALES], ("refuse", ())),
    ([SALES], [BOB], ("refuse", ())),
    ([CAROL], [], ("refuse", ())),
    ([], [CAROL], ("refuse", ())),
    ([], [], None),
])
def test_sender_verdict_table(froms, senders, expect):
    v = sender_verdict(froms, senders, _RIGHTS.get, ALICE)
    if expect is None:
        assert v is None
    else:
        assert (v.action, v.add_headers) == expect
        if v.action == "refuse":
            assert v.status == "5.7.1"


def test_header_senders_keeps_from_and_sender_apart():
    head = b"From: A <a@x.test>, b@y.test\r\nSENDER : s@z.test\r\nFrom: c@x.test\r\nTo: t@t.test\r\n\r\n"
    assert header_senders(head) == (["a@x.test", "b@y.test", "c@x.test"], ["s@z.test"])


def test_on_behalf_mail_to_another_domain_is_queued_with_sender(srv):
    """The added Sender: is on the queued (outgoing) copy too, and its envelope sender is the account's own."""
    from storage.queue import QueueStore

    with _client(srv, "submission") as c:
        c.login(ALICE, PW)
        assert c.mail(ALICE)[0] == 250
        assert c.rcpt("someone@elsewhere.test")[0] == 250
        assert c.data(f"From: {BOB}\r\nTo: someone@elsewhere.test\r\nSubject: out\r\n\r\nbody\r\n".encode())[0] == 250
    q = QueueStore(srv.store)
    (item,) = q.list()
    assert item.message.sender == ALICE
    raw = q.read_blob(item.message.blob_id)
    assert froms_and_senders(raw) == ([BOB], [ALICE])
