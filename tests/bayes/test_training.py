"""Training through every path of the running server: a real IMAP MOVE into Junk and back, COPY + EXPUNGE, the
$Junk / $NotJunk keywords, a store move as the webmail makes it; never twice the same way; then the per-recipient
verdict over SMTP (one message, two accounts, two verdicts), correspondents, and a 10 MB single-token message."""

from __future__ import annotations

import base64

from mailserver.inbound.classifier import token_ids
from tests.bayes.corpus import Corpus
from tests.harness import running_server
from tests.imap.imap_client import PASSWORD, login
from tests.inbound.mail import PW, copies, send


def _idle(srv):
    """Wait until the server's trainer has done what the store recorded (the store kicks it before it replies)."""
    srv.call(srv.server.trainer.when_idle)


def _blob(srv, address, mailbox="INBOX"):
    acct = srv.store.get_account(address)
    box = srv.store.get_mailbox(acct.id, mailbox)
    msgs = srv.store.get_messages(box.id, range(1, box.uid_next))
    return [m.blob_id for m in msgs]


def _stats(srv, address):
    return srv.store.bayes_stats(srv.store.get_account(address).id)[:2]


def _trained(srv, address, blob_id):
    return srv.store.bayes_trained_as(srv.store.get_account(address).id, blob_id)


def test_imap_move_to_junk_trains_spam_and_back_trains_ham_once_each(tmp_path):
    with running_server(tmp_path, listeners=("imap",)) as srv:
        srv.add_user("bob@example.test", PASSWORD)
        srv.deliver("bob@example.test", Corpus().message("spam", 1))
        (blob,) = _blob(srv, "bob@example.test")
        c = login(srv, "bob@example.test", select="INBOX")
        try:
            typ, _ = c.uid("MOVE", "1", "Junk")
            assert typ == "OK"
            _idle(srv)
            assert _trained(srv, "bob@example.test", blob) == "spam"
            assert _stats(srv, "bob@example.test") == (1, 0)
            c.select("Junk")
            assert c.uid("MOVE", "1", "INBOX")[0] == "OK"
            _idle(srv)
            assert _trained(srv, "bob@example.test", blob) == "ham"
            assert _stats(srv, "bob@example.test") == (0, 1)  # flipped, not added
            # COPY + EXPUNGE (a client without MOVE): trains as spam again, the expunge teaches nothing.
            c.select("INBOX")
            assert c.uid("COPY", "2", "Junk")[0] == "OK"
            c.uid("STORE", "2", "+FLAGS.SILENT", r"(\Deleted)")
            c.expunge()
            _idle(srv)
            assert _stats(srv, "bob@example.test") == (1, 0)
            # A second copy of the same message into Junk is not a second training.
            srv.deliver("bob@example.test", Corpus().message("spam", 1))
            c.select("INBOX")
            assert c.uid("MOVE", "1:*", "Junk")[0] == "OK"
            _idle(srv)
            assert _stats(srv, "bob@example.test") == (1, 0)
            # Deleting spam (Junk -> Trash) says nothing about it.
            c.select("Junk")
            assert c.uid("MOVE", "1:*", "Trash")[0] == "OK"
            _idle(srv)
            assert _stats(srv, "bob@example.test") == (1, 0)
        finally:
            c.logout()


def test_junk_and_notjunk_keywords_train_and_a_store_move_trains_whoever_calls_it(tmp_path):
    with running_server(tmp_path, listeners=("imap",)) as srv:
        srv.add_user("bob@example.test", PASSWORD)
        corpus = Corpus()
        srv.deliver("bob@example.test", corpus.message("spam", 1))
        srv.deliver("bob@example.test", corpus.message("ham", 2))
        first, second = _blob(srv, "bob@example.test")
        c = login(srv, "bob@example.test", select="INBOX")
        try:
            c.uid("STORE", "1", "+FLAGS", "($Junk)")
            _idle(srv)
            assert _trained(srv, "bob@example.test", first) == "spam"
            c.uid("STORE", "1", "+FLAGS", r"(\Seen $Junk)")  # already set: no second training
            c.uid("STORE", "1", "FLAGS", r"(\Flagged $Junk)")  # a replace naming it again: still no
            _idle(srv)
            assert _stats(srv, "bob@example.test") == (1, 0)
            c.uid("STORE", "1", "+FLAGS", "($NotJunk)")  # before $Junk is removed, as some clients do
            c.uid("STORE", "1", "-FLAGS", "($Junk)")
            _idle(srv)
            assert _trained(srv, "bob@example.test", first) == "ham"
            assert _stats(srv, "bob@example.test") == (0, 1)
        finally:
            c.logout()
        # The webmail (and the quarantine's buttons) move with the store's own copy(move=True), plus a keyword.
        acct = srv.store.get_account("bob@example.test")
        inbox, junk = srv.store.get_mailbox(acct.id, "INBOX"), srv.store.get_mailbox(acct.id, "Junk")
        astore = srv.services.astore
        srv.call(astore.set_flags, inbox.id, [2], "add", 0, ["$Junk"])
        srv.call(astore.copy, inbox.id, [2], junk.id, move=True)
        _idle(srv)
        assert _trained(srv, "bob@example.test", second) == "spam"
        assert _stats(srv, "bob@example.test") == (1, 1)  # the keyword and the move: one training


def _train(srv, address, n=30, invert=False):
    acct = srv.store.get_account(address)
    corpus = Corpus()
    for i in range(n):
        for kind in ("spam", "ham"):
            taught = {"spam": "ham", "ham": "spam"}[kind] if invert else kind
            srv.store.bayes_learn(acct.id, f"{kind}{i}", taught, token_ids(corpus.message(kind, i)))


def test_the_verdict_is_each_recipients_own(tmp_path):
    with running_server(tmp_path, listeners=("smtp",)) as srv:
        srv.add_user("bob@example.test", PW)
        srv.add_user("carol@example.test", PW)
        srv.add_user("dave@example.test", PW)
        _train(srv, "bob@example.test")
        _train(srv, "carol@example.test", invert=True)  # carol taught the opposite
        # dave trained nothing: his classifier does not vote
        raw = Corpus().message("spam", 500)
        code, _ = send(srv, raw, rcpts=("bob@example.test", "carol@example.test", "dave@example.test"))
        assert code == 250
        (bob, kw), = copies(srv, "bob@example.test", "Junk")
        assert "$Junk" in kw and "BAYES_SPAM" in bob["X-Spam-Symbols"]
        assert float(bob["X-Spam-Score"]) >= 6.0
        (carol, _), = copies(srv, "carol@example.test")
        assert "BAYES_HAM" in carol["X-Spam-Symbols"] and float(carol["X-Spam-Score"]) < 0
        (dave, _), = copies(srv, "dave@example.test")
        assert dave["X-Spam-Score"] is None  # nothing scored it for him


def test_mail_from_a_correspondent_gets_the_known_sender_symbol(tmp_path):
    with running_server(tmp_path, listeners=("smtp", "submission"),
                        antispam={"known_sender_needs_auth": False}) as srv:
        srv.add_user("alice@example.test", PW)
        code, _ = send(srv, b"From: alice@example.test\r\nTo: pen@pal.test\r\nSubject: hi\r\n\r\nhello\r\n",
                       rcpts=("pen@pal.test",), sender="alice@example.test", submission=True)
        assert code == 250
        reply = b"From: Pen <pen@pal.test>\r\nTo: alice@example.test\r\nSubject: Re: hi\r\n\r\nhello back\r\n"
        assert send(srv, reply, rcpts=("alice@example.test",), sender="pen@pal.test")[0] == 250
        assert send(srv, reply.replace(b"pen@pal", b"other@pal"), rcpts=("alice@example.test",),
                    sender="other@pal.test")[0] == 250
        (known, _), (stranger, _) = copies(srv, "alice@example.test")
        assert "BAYES_KNOWN_SENDER" in known["X-Spam-Symbols"] and float(known["X-Spam-Score"]) < 0
        assert stranger["X-Spam-Score"] is None


def test_a_10_mb_single_token_message_is_classified_and_delivered(tmp_path):
    with running_server(tmp_path, listeners=("smtp",)) as srv:
        srv.add_user("bob@example.test", PW)
        _train(srv, "bob@example.test")
        # base64 lines on the wire, one 10 MB word once decoded.
        body = base64.encodebytes(b"Z" * (10 * 1024 * 1024)).replace(b"\n", b"\r\n")
        raw = (b"From: x@remote.test\r\nTo: bob@example.test\r\nSubject: big\r\nMIME-Version: 1.0\r\n"
               b"Content-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n" + body)
        assert send(srv, raw)[0] == 250
        (msg, _), = copies(srv, "bob@example.test")
        assert msg["Subject"] == "big"
        assert msg["X-Spam-Score"] is not None  # the classifier ran for bob (on the first 256 KiB only)
        assert len(msg.get_payload(decode=True)) == 10 * 1024 * 1024


def test_the_webmail_junk_buttons_and_a_plain_move_train(tmp_path):
    from tests.webmail.test_http import Client

    with running_server(tmp_path, listeners=("https",)) as srv:
        srv.add_user("bob@example.test", PASSWORD)
        corpus = Corpus()
        for i in range(3):
            srv.deliver("bob@example.test", corpus.message("ham", i))
        blobs = _blob(srv, "bob@example.test")
        acct = srv.store.get_account("bob@example.test")
        inbox, junk = srv.store.get_mailbox(acct.id, "INBOX"), srv.store.get_mailbox(acct.id, "Junk")
        archive = srv.store.get_mailbox(acct.id, "Archive")
        c = Client(srv)
        c.login("bob@example.test", PASSWORD)
        token = c.csrf()
        r, _ = c.post(f"/m/{inbox.id}/action", {"_csrf": token, "action": "junk", "uid": ["1", "2"]})
        assert r.status == 303
        _idle(srv)
        assert [_trained(srv, "bob@example.test", b) for b in blobs] == ["spam", "spam", None]
        assert _stats(srv, "bob@example.test") == (2, 0)
        r, _ = c.post(f"/m/{junk.id}/action", {"_csrf": token, "action": "notjunk", "uid": "1"})
        assert r.status == 303
        r, _ = c.post(f"/m/{junk.id}/action", {"_csrf": token, "action": "move", "uid": "2", "to": str(archive.id)})
        assert r.status == 303
        _idle(srv)
        assert [_trained(srv, "bob@example.test", b) for b in blobs] == ["ham", "ham", None]
        assert _stats(srv, "bob@example.test") == (0, 2)
