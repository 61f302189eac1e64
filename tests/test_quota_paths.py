"""Every path that adds a message to an account checks its quota, on the real listeners and the real command:
SMTP (at RCPT with SIZE=, at the end of DATA without it), authenticated submission, IMAP APPEND, MULTIAPPEND,
COPY into another mailbox and into the same one, the webmail's send (its Sent copy) and its drafts, and
`mailserver mail import` (routed and into a named mailbox). MOVE only relocates messages (RFC 6851: the account
holds the same), so a full account may still move mail, to Trash in particular, and its usage does not change.
Each refusal leaves the account exactly as it was."""

from __future__ import annotations

import re
import smtplib

from tests.harness import running_server
from tests.imap.imap_client import PASSWORD, Raw, message
from tests.webmail.test_http import Client

ALICE, BOB = "alice@example.test", "bob@example.test"
QUOTA = 20_000
BIG = 6_000  # more than what is left once the account holds FILL
FILL = 16_000


def _used(srv) -> int:
    return srv.store.quota(srv.store.get_account(ALICE).id)[0]


def _mailbox_full(code: int, text: bytes) -> bool:
    """RFC 3463 X.2.2 "mailbox full", as 452 (try later) or 552."""
    return code in (452, 552) and text[1:6] == b".2.2 "


def _counts(srv) -> dict[str, int]:
    acct = srv.store.get_account(ALICE)
    return {mb.name: mb.message_count for mb in srv.store.list_mailboxes(acct.id)}


def test_every_path_that_adds_a_message_checks_the_quota(tmp_path):
    with running_server(tmp_path, listeners=("smtp", "submission", "imap", "https")) as srv:
        srv.add_user(ALICE, PASSWORD, quota_bytes=QUOTA)
        srv.add_user(BOB, PASSWORD)
        srv.deliver(ALICE, message("fill", body="f" * FILL))
        before_used, before = _used(srv), _counts(srv)
        big = message("big", body="b" * BIG)

        def unchanged(path: str) -> None:
            assert (_used(srv), _counts(srv)) == (before_used, before), path

        # SMTP, port 25: refused at RCPT when SIZE= says it will not fit, at the end of DATA when it does not say.
        with smtplib.SMTP("127.0.0.1", srv.port("smtp"), timeout=30) as c:
            c.ehlo("client.example.net")
            assert c.mail("bob@example.org", ["SIZE=%d" % len(big)])[0] == 250
            code, text = c.rcpt(ALICE)
            assert _mailbox_full(code, text), (code, text)
            c.rset()
            assert c.mail("bob@example.org")[0] == 250 and c.rcpt(ALICE)[0] == 250
            code, text = c.data(big)
            assert _mailbox_full(code, text), (code, text)
        unchanged("smtp")
        # Authenticated submission from bob to alice: the same pipeline, the same refusal.
        with smtplib.SMTP("127.0.0.1", srv.port("submission"), timeout=30) as c:
            c.ehlo("client.example.net")
            c.login(BOB, PASSWORD)
            c.mail(BOB)
            c.rcpt(ALICE)
            code, text = c.data(message("big", sender=BOB, body="b" * BIG))
            assert _mailbox_full(code, text), (code, text)
        unchanged("submission")

        raw = Raw(srv.port("imap"))
        raw.login(ALICE)
        # APPEND (a non-synchronising literal: nothing refuses it before it arrived) and MULTIAPPEND.
        raw.send(b"a APPEND INBOX {%d+}\r\n" % len(big) + big + b"\r\n")
        assert raw.until(b"a")[-1].startswith(b"a NO [OVERQUOTA]")
        small = message("small")
        raw.send(b"b APPEND Archive {%d+}\r\n" % len(small) + small + b" {%d+}\r\n" % len(big) + big + b"\r\n")
        assert raw.until(b"b")[-1].startswith(b"b NO [OVERQUOTA]")  # all or nothing: the small one neither
        unchanged("append")
        # COPY into another mailbox and into the same one (the 16 KB message twice over the 20 KB quota).
        raw.cmd("s", "SELECT INBOX")
        assert raw.cmd("c", "COPY 1 Archive")[-1].startswith(b"c NO [OVERQUOTA]")
        assert raw.cmd("d", "UID COPY 1:* INBOX")[-1].startswith(b"d NO [OVERQUOTA]")
        unchanged("copy")

        # The webmail: a send whose Sent copy would not fit is refused before anything leaves; a draft too.
        web = Client(srv)
        web.login(ALICE, PASSWORD)
        token = web.csrf("/compose")
        base = {"_csrf": token, "from": ALICE, "to": BOB, "subject": "hello", "body": "y" * BIG}
        r, page = web.post("/compose", dict(base, action="send"))
        assert r.status == 400 and b"mailbox is full" in page
        assert srv.store.get_mailbox(srv.store.get_account(BOB).id, "INBOX").message_count == 0
        r, page = web.post("/compose", dict(base, action="save"))
        assert r.status == 400 and b"could not be saved" in page
        unchanged("webmail")

        # `mailserver mail import`, routed like incoming mail and placed into a named mailbox.
        from tests.test_cli import run

        conf = tmp_path / "cli.toml"
        conf.write_text(f'hostname = "mail.example.test"\ndata_dir = "{srv.config.data_dir}"\n'
                        f'database_url = "{srv.config.db_url}"\n[[domain]]\nname = "example.test"\n')
        (tmp_path / "big.eml").write_bytes(big)
        for extra in ((), ("--mailbox", "Archive")):
            r = run(conf, "mail", "import", ALICE, *extra, str(tmp_path / "big.eml"))
            assert r.returncode == 1 and "imported 0" in r.stdout and re.search(r"5\.2\.2|full", r.stderr), r
        unchanged("import")

        # MOVE at a full account: allowed (it adds nothing), and the usage stays what it was.
        srv.deliver(ALICE, message("tops up", body="t" * (QUOTA - before_used - 1500)))
        used = _used(srv)
        assert used > QUOTA - 2000
        out = raw.cmd("m", "UID MOVE 1 Archive")
        assert out[-1].startswith(b"m OK"), out
        assert _used(srv) == used
        archive = srv.store.get_mailbox(srv.store.get_account(ALICE).id, "Archive")
        assert archive.message_count == 1
        # ... and from the webmail: delete moves to Trash, still at full quota.
        inbox = srv.store.get_mailbox(srv.store.get_account(ALICE).id, "INBOX")
        r, _ = web.post(f"/m/{inbox.id}/action", {"_csrf": web.csrf(), "action": "delete", "uid": "2"})
        assert r.status == 303
        assert _used(srv) == used
        assert _counts(srv)["Trash"] == 1 and _counts(srv)["INBOX"] == 0
        raw.close()
