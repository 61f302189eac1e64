"""Webmail authorization over real HTTPS: every route that takes a mailbox or message id answers another account's
id with the same 404 (status, type and body byte for byte) as an id that does not exist, and changes nothing of the
other account's mail."""

from __future__ import annotations

import pytest

from tests.harness import running_server
from tests.webmail.test_http import ALICE, BOB, PW, Client

ATTACHED = (b"From: Carol <carol@example.org>\r\nTo: bob@example.test\r\nSubject: for bob only\r\n"
            b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b1\r\n\r\n--b1\r\n"
            b"Content-Type: text/html\r\n\r\n<p>bob's html <img src=\"cid:pic@x\"></p>\r\n--b1\r\n"
            b"Content-Type: image/png\r\nContent-ID: <pic@x>\r\nContent-Transfer-Encoding: base64\r\n\r\n"
            b"iVBORw0KGgo=\r\n--b1\r\nContent-Type: text/plain; name=a.txt\r\n"
            b"Content-Disposition: attachment; filename=a.txt\r\n\r\nbob's attachment\r\n--b1--\r\n")
PLAIN = b"From: Bob <bob@example.test>\r\nTo: alice@example.test\r\nSubject: for alice\r\n\r\nHello Alice\r\n"
SECRET_WORDS = (b"for bob only", b"bob's html", b"bob's attachment", b"bob draft")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    with running_server(tmp_path_factory.mktemp("webmail-authz"), listeners=("https",)) as srv:
        srv.add_user(ALICE, PW)
        srv.add_user(BOB, PW)
        srv.deliver(ALICE, PLAIN)
        srv.deliver(BOB, ATTACHED)
        srv.deliver(BOB, b"From: bob@example.test\r\nTo: x@example.org\r\nSubject: bob draft\r\n\r\nbob draft\r\n",
                    mailbox="Drafts")
        c = Client(srv)
        c.login()
        yield srv, c


def _ids(srv):
    st = srv.store
    a, b = st.get_account(ALICE).id, st.get_account(BOB).id
    mine = {m.name: m.id for m in st.list_mailboxes(a)}
    theirs = {m.name: m.id for m in st.list_mailboxes(b)}
    missing = max(m.id for acct in st.list_accounts() for m in st.list_mailboxes(acct.id)) + 1000
    return mine, theirs, missing


def _bob_state(srv):
    st = srv.store
    b = st.get_account(BOB).id
    boxes = st.list_mailboxes(b)
    return [(m.name, m.message_count, m.highest_modseq) for m in boxes]


def _same_404(answers):
    """All answers are 404 with identical type and body; returns the body."""
    first = answers[0]
    for label, (r, body) in answers:
        assert r.status == 404, (label, r.status)
        assert r.headers["Content-Type"] == first[1][0].headers["Content-Type"], label
        assert body == first[1][1], label
        for word in SECRET_WORDS:
            assert word not in body, label
    return first[1][1]


GET_MESSAGE_ROUTES = ("/m/{mb}/{uid}", "/m/{mb}/{uid}/html/1", "/m/{mb}/{uid}/part/3", "/m/{mb}/{uid}/part/2",
                      "/m/{mb}/{uid}/cid/pic@x", "/m/{mb}/{uid}/source", "/m/{mb}/{uid}/source?download=1",
                      "/compose?reply={mb}:{uid}&mode=reply", "/compose?reply={mb}:{uid}&mode=all",
                      "/compose?reply={mb}:{uid}&mode=forward", "/compose?reply={mb}:{uid}&mode=forward_att",
                      "/compose?draft={mb}:{uid}")
GET_MAILBOX_ROUTES = ("/m/{mb}", "/m/{mb}?page=2&sort=subject", "/search?q=bob&mb={mb}", "/search?q=x&in=body&mb={mb}")


def test_get_routes_answer_anothers_ids_as_missing_ones(site):
    """GET with another account's mailbox/message id is the same 404 as a missing mailbox or a missing message."""
    srv, c = site
    mine, theirs, missing = _ids(srv)
    before = _bob_state(srv)
    for route in GET_MESSAGE_ROUTES:
        mb_of = {"INBOX": theirs["INBOX"]} if "draft" not in route else {"INBOX": theirs["Drafts"]}
        _same_404([
            ("theirs", c.get(route.format(mb=mb_of["INBOX"], uid=1))),
            ("missing mailbox", c.get(route.format(mb=missing, uid=1))),
            ("missing message", c.get(route.format(mb=mine["INBOX"], uid=999))),
        ])
    for route in GET_MAILBOX_ROUTES:
        _same_404([(name, c.get(route.format(mb=mb))) for name, mb in
                   (("theirs", theirs["INBOX"]), ("their drafts", theirs["Drafts"]), ("missing", missing))])
    # The owner's own ids work (the 404s above are not a broken set-up).
    r, page = c.get(f"/m/{mine['INBOX']}/1")
    assert r.status == 200 and b"Hello Alice" in page
    assert _bob_state(srv) == before


def test_post_routes_answer_anothers_ids_as_missing_ones(site):
    """Bulk actions on another's mailbox, moves into it, folder operations on it and attachment references to its
    messages are the same 404 as for a missing id, and leave the other account's mail as it was."""
    srv, c = site
    mine, theirs, missing = _ids(srv)
    token = c.csrf()
    before = _bob_state(srv)
    from webmail.views.mailbox import ACTIONS

    for action in ACTIONS:
        fields = {"_csrf": token, "action": action, "uid": "1", "to": str(mine["Archive"])}
        _same_404([(f"{action} {name}", c.post(f"/m/{mb}/action", fields)) for name, mb in
                   (("theirs", theirs["INBOX"]), ("missing", missing))])
    # Their mailbox as the target of a move out of one's own.
    _same_404([(f"move to {name}", c.post(f"/m/{mine['INBOX']}/action",
                                          {"_csrf": token, "action": "move", "uid": "1", "to": str(to)}))
               for name, to in (("theirs", theirs["Trash"]), ("missing", missing), ("not a number", "x1"))])
    for op, extra in (("create", {"parent": "{mb}", "name": "Sub"}), ("rename", {"mb": "{mb}", "name": "Renamed"}),
                      ("delete", {"mb": "{mb}"}), ("empty", {"mb": "{mb}"})):
        answers = []
        for name, mb in (("theirs", theirs["Archive"]), ("their trash", theirs["Trash"]), ("missing", missing)):
            fields = {"_csrf": token, "op": op, **{k: v.format(mb=mb) for k, v in extra.items()}}
            answers.append((f"{op} {name}", c.post("/folders", fields)))
        _same_404(answers)
    for keep in ("{mb}:1:msg", "{mb}:1:3", "{mb}:1:1"):
        for action in ("send", "save"):
            answers = []
            for name, mb, uid in (("theirs", theirs["INBOX"], 1), ("missing mailbox", missing, 1),
                                  ("missing message", mine["INBOX"], 999)):
                ref = keep.format(mb=mb).replace(":1:", f":{uid}:")
                answers.append((f"{action} {name}", c.post("/compose", {
                    "_csrf": token, "action": action, "from": ALICE, "to": ALICE, "subject": "x", "body": "x",
                    "keep": ref})))
            _same_404(answers)
    assert _bob_state(srv) == before
    assert not any(m.name in ("Sub", "Renamed") or m.name.endswith("/Sub") for m in
                   srv.store.list_mailboxes(srv.store.get_account(ALICE).id))


def test_reply_and_draft_references_to_anothers_messages_change_nothing(site):
    """Sending with a reply reference to another's message does not mark it \\Answered, and saving with a draft
    reference to another's draft does not delete it: answered exactly as with a missing reference."""
    srv, c = site
    mine, theirs, missing = _ids(srv)
    token = c.csrf()
    b = srv.store.get_account(BOB).id
    flags_before = [(m.uid, m.flags) for m in srv.store.list_messages(theirs["INBOX"])]
    drafts_before = srv.store.get_mailbox(b, "Drafts").message_count
    statuses = {}
    for name, mb in (("theirs", theirs["INBOX"]), ("missing", missing)):
        r, _ = c.post("/compose", {"_csrf": token, "action": "send", "from": ALICE, "to": ALICE, "subject": "re",
                                   "body": "x", "reply_ref": f"{mb}:1"})
        statuses[f"send {name}"] = (r.status, r.headers.get("Location"))
    assert statuses["send theirs"] == statuses["send missing"]
    assert statuses["send theirs"][0] in (302, 303)
    for name, mb in (("theirs", theirs["Drafts"]), ("missing", missing)):
        r, _ = c.post("/compose", {"_csrf": token, "action": "save", "from": ALICE, "to": ALICE, "subject": "d",
                                   "body": "x", "draft_ref": f"{mb}:1"})
        assert r.status in (302, 303), name
    assert [(m.uid, m.flags) for m in srv.store.list_messages(theirs["INBOX"])] == flags_before
    assert srv.store.get_mailbox(b, "Drafts").message_count == drafts_before


def test_malformed_and_out_of_range_ids_are_the_same_404(site):
    """Ids that are not numbers, or too large for the database, are missing ids, not server errors."""
    srv, c = site
    mine, theirs, missing = _ids(srv)
    _same_404([(path, c.get(path)) for path in (f"/m/{missing}", f"/m/{10**30}", f"/m/{mine['INBOX']}/{2**40}",
                                                 f"/m/{10**30}/1/source", f"/compose?reply={10**30}:1&mode=reply",
                                                 "/compose?draft=x:1", f"/search?q=x&mb={10**30}",
                                                 f"/search?q=x&mb=-{mine['INBOX']}")])
