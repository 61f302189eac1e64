"""Filters in a real browser (Playwright + Debian's Chromium): a rule "subject contains invoice -> file into
Invoices" made in the webmail files an SMTP delivery into Invoices (seen over IMAP); vacation set in the webmail
sends one reply, which arrives at a loopback receiver (the test MX of remote.test)."""

from __future__ import annotations

import imaplib
import re
import smtplib
from email import message_from_bytes, policy

from playwright.sync_api import expect, sync_playwright

from storage.queue import QueueStore
from tests.dnsserver import dns_server
from tests.harness import running_server
from tests.outbound.helpers import wait_for
from tests.outbound.receiver import receiver
from tests.webmail.test_browser import ALICE, CHROMIUM_ARGS, PW, _login, _shot

ZONES = {"remote.test": {"": [("MX", 10, "mx.remote.test")], "mx": [("A", "127.0.0.1")]}}


def _send(srv, sender: str, subject: str) -> None:
    with smtplib.SMTP("127.0.0.1", srv.port("smtp")) as c:
        c.sendmail(sender, [ALICE], (f"From: {sender}\r\nTo: {ALICE}\r\nSubject: {subject}\r\n"
                                     f"Message-ID: <{subject.replace(' ', '.')}@remote.test>\r\n\r\nhello\r\n").encode())


def _subjects(srv, mailbox: str) -> list[str]:
    im = imaplib.IMAP4("127.0.0.1", srv.port("imap"))
    try:
        im.login(ALICE, PW)
        typ, data = im.select(mailbox, readonly=True)
        assert typ == "OK", data
        if int(data[0]) == 0:
            return []
        typ, data = im.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        return [p[1].decode().split(":", 1)[1].strip() for p in data if isinstance(p, tuple)]
    finally:
        im.logout()


def test_rule_and_vacation_made_in_the_browser(tmp_path):
    with dns_server(ZONES) as dns, receiver() as rx:
        with running_server(tmp_path, listeners=("https", "smtp", "imap"), queue={"run": True},
                            dns={"nameservers": [dns.address], "timeout": 2.0},
                            queue_options={"port_map": {"mx.remote.test": rx.port}}) as srv:
            acct = srv.add_user(ALICE, PW)
            srv.store.create_mailbox(acct.id, "Invoices")
            base = f"https://127.0.0.1:{srv.port('https')}"
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
                context = browser.new_context(ignore_https_errors=True, viewport={"width": 1280, "height": 900})
                context.route(re.compile(r"^(?!https://127\.0\.0\.1).*"), lambda route: route.abort())
                page = context.new_page()
                _login(page, base)
                page.goto(base + "/settings")
                page.click("#filters-link")
                expect(page.locator("#rules-form")).to_be_visible()

                # --- the rule
                page.fill("input[name=r0_name]", "Invoices")
                page.select_option("select[name=r0_c0_field]", "subject")
                page.select_option("select[name=r0_c0_op]", "contains")
                page.fill("input[name=r0_c0_value]", "invoice")
                page.select_option("select[name=r0_a0_kind]", "fileinto")
                page.fill("input[name=r0_a0_arg]", "Invoices")
                page.click("#save-rules")
                expect(page.locator("p.notice")).to_have_text("Filters saved.")
                expect(page.locator("#rule-0 legend")).to_have_text("Rule: Invoices")
                _shot(page, "filters-rule")
                _send(srv, "billing@remote.test", "Your invoice 2026-07")
                _send(srv, "friend@remote.test", "lunch")
                wait_for(lambda: _subjects(srv, "Invoices") == ["Your invoice 2026-07"])
                wait_for(lambda: _subjects(srv, "INBOX") == ["lunch"])

                # --- vacation
                page.check("input[name=v_enabled]")
                page.fill("input[name=v_subject]", "Out of office")
                page.fill("textarea[name=v_text]", "I am away until Monday.")
                page.click("#save-rules")
                expect(page.locator("p.notice")).to_have_text("Filters saved.")
                expect(page.locator("input[name=v_enabled]")).to_be_checked()
                expect(page.locator("#rule-0 legend")).to_have_text("Rule: Invoices")  # the rule is kept
                _shot(page, "filters-vacation")
                browser.close()

            _send(srv, "carol@remote.test", "are you there")
            wait_for(lambda: rx.transactions, timeout=30)
            _send(srv, "carol@remote.test", "still there")  # once per sender per period: no second reply
            wait_for(lambda: _subjects(srv, "INBOX") == ["lunch", "are you there", "still there"])
            wait_for(lambda: not QueueStore(srv.store).list(), timeout=30)
            assert len(rx.transactions) == 1
            tx = rx.transactions[0]
            assert tx.rcpts == ["carol@remote.test"] and tx.mail_from == ""  # RFC 5230 5.3: null sender
            reply = message_from_bytes(tx.data, policy=policy.default)
            assert reply["Subject"] == "Out of office"
            assert reply["To"] == "carol@remote.test" or "carol@remote.test" in reply["To"]
            assert reply["Auto-Submitted"].startswith("auto-replied")
            assert "I am away until Monday." in reply.get_body(("plain",)).get_content()
