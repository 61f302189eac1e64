"""A shared mailbox in a real browser (Playwright driving Debian's Chromium against a real server on 127.0.0.1):
bob sees Shared/sales in the folder tree, a message delivered to sales@ over SMTP arrives live on the open page,
and his reply from it goes out From sales@ (the delivered copy is checked) with its Sent copy in sales' Sent."""

from __future__ import annotations

import re
import smtplib
import time

from playwright.sync_api import expect, sync_playwright

from storage.sendgrants import SEND_AS
from tests.harness import running_server
from tests.webmail.test_browser import ARTIFACTS, CHROMIUM_ARGS, PW, _login

BOB, DAVE, SALES = "bob@example.test", "dave@example.test", "sales@example.test"


def _messages(srv, account_id: int, mailbox: str) -> list[bytes]:
    mb = srv.store.get_mailbox(account_id, mailbox)
    uids = [m.uid for m in srv.store.list_messages(mb.id)]
    return [srv.store.read_blob(m.blob_id) for m in srv.store.get_messages(mb.id, uids)]


def _wait_for_stream(srv, account_id: int) -> None:
    """Until the page's event stream is open on the server (a deadline, not a fixed sleep)."""
    deadline = time.monotonic() + 15
    while srv.services.state.webmail_streams.get(account_id, 0) < 1:
        assert time.monotonic() < deadline, "the page's event stream did not open"
        time.sleep(0.05)


def test_shared_mailbox_in_chromium(tmp_path):
    with running_server(tmp_path, listeners=("https", "smtp")) as srv:
        bob = srv.add_user(BOB, PW)
        dave = srv.add_user(DAVE, PW)
        sales = srv.store.create_shared_mailbox(SALES)
        box = srv.store.get_mailbox(sales.id, "INBOX")
        srv.store.set_acl(box.id, BOB, "lrswi")
        srv.store.create_mailbox(sales.id, "Sent", "\\Sent")
        srv.store.grant_send(BOB, SALES, SEND_AS)
        srv.deliver(SALES, b"From: Dave <dave@example.test>\r\nTo: sales@example.test\r\nSubject: First order\r\n"
                           b"Message-ID: <o1@example.test>\r\n\r\nten boxes\r\n")
        base = f"https://127.0.0.1:{srv.port('https')}"
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            try:
                context = browser.new_context(ignore_https_errors=True, viewport={"width": 1280, "height": 860})
                context.route(re.compile(r"^(?!https://127\.0\.0\.1).*"), lambda route: route.abort())
                page = context.new_page()
                _login(page, base, BOB)
                link = page.locator(f'#folders a[data-mailbox="{box.id}"]')
                expect(link).to_contain_text("Shared/sales")
                expect(link.locator(".count")).to_have_text("1")
                link.click()
                page.wait_for_url(re.compile(rf"/m/{box.id}"))
                expect(page.locator("#message-list tr.msg")).to_have_count(1)
                _wait_for_stream(srv, bob.id)
                with smtplib.SMTP("127.0.0.1", srv.port("smtp")) as mx:  # a real SMTP delivery from outside
                    mx.sendmail("customer@example.org", [SALES],
                                b"From: Customer <customer@example.org>\r\nTo: sales@example.test\r\n"
                                b"Subject: Live order\r\nMessage-ID: <live-1@example.org>\r\n\r\nfive crates\r\n")
                expect(page.locator("#message-list tr.msg").first).to_contain_text("Live order", timeout=10000)
                expect(link.locator(".count")).to_have_text("2")
                ARTIFACTS.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(ARTIFACTS / "shared-live.png"), full_page=True)

                page.goto(base + f"/m/{box.id}/1")
                page.click("#reply")
                expect(page.locator("#from")).to_have_value(SALES)
                page.fill("#body", "Shipped today.")
                page.click("#send")
                page.wait_for_url(re.compile(r"notice=sent"))
            finally:
                browser.close()
        (got,) = _messages(srv, dave.id, "INBOX")
        head = got.split(b"\r\n\r\n", 1)[0]
        assert re.search(rb"(?m)^From: sales@example\.test\r?$", head), head
        assert b"In-Reply-To: <o1@example.test>" in head and b"Shipped today." in got
        (copy,) = _messages(srv, sales.id, "Sent")
        assert b"Shipped today." in copy
        assert srv.store.get_mailbox(bob.id, "Sent") is None or _messages(srv, bob.id, "Sent") == []
