"""The quarantine in a real browser (Playwright driving Debian's Chromium against a real server on 127.0.0.1): the
view of a copy held by a DMARC policy with its reason, release (checked over IMAP, byte-exact), delete, the
"Why is this junk?" panel with "Not junk", and a digest's release link opened without signing in: a confirm page,
the release once, then a clear refusal.  Screenshots go to test-artifacts/quarantine/."""

from __future__ import annotations

import imaplib
import re
import time
from pathlib import Path

from playwright.sync_api import expect, sync_playwright
from twisted.internet import task

from mailserver.digest import DigestRunner, link_path, slot
from mailserver.mime import parse_message
from storage.quarantine import HoldSpec
from tests.harness import running_server
from tests.inbound.mail import message, send
from tests.inbound.test_policy import _plug_scorer
from tests.quarantine.test_digest import links
from tests.webmail.test_browser import CHROMIUM_ARGS, _login
from tests.webmail.test_http import ALICE, PW

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "quarantine"
DMARC_HELD = (b"From: Bank <alerts@bank.test>\r\nTo: alice@example.test\r\nSubject: Verify your account\r\n"
              b"Message-ID: <dmarc-1@bank.test>\r\nAuthentication-Results: mail.example.test; spf=fail "
              b"smtp.mailfrom=bank.test; dkim=none; dmarc=fail header.from=bank.test\r\n\r\n"
              b"Please log in at our new site.\r\n")
DIGESTED = (b"From: Shop <deals@shop.test>\r\nTo: alice@example.test\r\nSubject: Weekly deals\r\n"
            b"Message-ID: <deals-1@shop.test>\r\n\r\nDeals!\r\n")
JUNKY = message("Junky offer", body=b"meh\r\n", extra=b"X-Score: 6\r\n")


def _shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def _hold(srv, raw: bytes, reason: str, text: str, facts) -> int:
    acct = srv.store.get_account(ALICE)
    now = time.time()
    (qid,) = srv.store.hold_quarantined([HoldSpec(
        acct.id, srv.store.blobs.put(raw), parse_message(raw).to_json(), ALICE, "bounce@bank.test",
        {"sender": "bounce@bank.test"}, {"ip": "192.0.2.7", "helo": "mx.bank.test"}, reason, text, facts, "Q1",
        now, now + 86400)])
    return qid


def _inbox(srv) -> list[bytes]:
    c = imaplib.IMAP4("127.0.0.1", srv.port("imap"))
    try:
        c.login(ALICE, PW)
        typ, data = c.select("INBOX")
        n = int(data[0])
        if not n:
            return []
        typ, data = c.fetch(f"1:{n}", "(BODY.PEEK[])")
        return [d[1] for d in data if isinstance(d, tuple)]
    finally:
        c.logout()


def test_quarantine_in_chromium(tmp_path):
    """The quarantine view, its reason panel, release, delete, the Junk reason panel and a digest link."""
    with running_server(tmp_path, listeners=("https", "smtp", "imap"),
                        antispam={"junk": 5.0, "quarantine": 8.0, "refuse": 0.0},
                        quarantine={"base_url": "https://mail.example.test"}) as srv:
        srv.add_user(ALICE, PW)
        _plug_scorer(srv)
        facts = [{"check": "spf", "name": "result", "result": "fail"},
                 {"check": "dkim", "name": "result", "result": "none"},
                 {"check": "dmarc", "name": "policy", "result": "quarantine", "detail": "p=quarantine"}]
        held = _hold(srv, DMARC_HELD, "dmarc", "bank.test asks for quarantine; SPF fail, DKIM none", facts)
        doomed = _hold(srv, DMARC_HELD.replace(b"dmarc-1", b"dmarc-2").replace(b"Verify", b"Confirm"), "dmarc",
                       "bank.test asks for quarantine", facts)
        assert send(srv, JUNKY, rcpts=(ALICE,))[0] == 250  # score 6: to Junk
        base = f"https://127.0.0.1:{srv.port('https')}"
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            try:
                context = browser.new_context(ignore_https_errors=True, viewport={"width": 1280, "height": 860})
                context.route(re.compile(r"^(?!https://127\.0\.0\.1).*"), lambda route: route.abort())
                page = context.new_page()
                _login(page, base)

                # --- the list and the reason panel
                page.click("#quarantine-link")
                rows = page.locator("#quarantine tbody tr")
                expect(rows).to_have_count(2)
                expect(page.locator(f"tr[data-id='{held}'] .reason")).to_contain_text("(DMARC)")
                _shot(page, "01-quarantine-view")
                page.click(f"tr[data-id='{held}'] a")
                expect(page.locator("#reason .plain")).to_have_text(
                    "The sender's domain asks for mail that fails its checks (DMARC) to be held, and this message "
                    "failed SPF and DKIM.")
                expect(page.locator("#reason table.facts")).to_contain_text("spf")
                expect(page.locator("#preview")).to_have_text(re.compile("Please log in at our new site"))
                _shot(page, "02-reason-panel")

                # --- release: in INBOX, byte-exact
                page.click("#release")
                expect(page.locator("p.notice")).to_have_text("Released to your inbox.")
                assert _inbox(srv) == [DMARC_HELD]

                # --- delete
                page.click(f"tr[data-id='{doomed}'] a")
                page.click("#delete")
                expect(page.locator("p.notice")).to_have_text("Deleted.")
                expect(page.locator("#quarantine tbody tr")).to_have_count(0)
                assert srv.store.quarantined(doomed) is None and len(_inbox(srv)) == 1

                # --- Why is this junk?
                page.click("#folders a:has-text('Junk')")
                page.click("text=Junky offer")
                panel = page.locator("#junk-reason")
                expect(panel).to_contain_text("Why is this junk?")
                expect(page.locator("#junk-score")).to_contain_text("6.00")
                _shot(page, "03-junk-reason")
                page.click("#not-junk")
                expect(page).to_have_url(re.compile(r"/m/\d+$"))
                assert len(_inbox(srv)) == 2

                # --- the digest and its release link, opened without signing in
                _hold(srv, DIGESTED, "spam", "Spam score 9.00", [])
                clock = task.Clock()
                clock.advance(slot(time.time(), srv.config.quarantine.digest_hour) + 86400)  # the next digest hour
                runner = DigestRunner(clock, srv.services.astore, srv.services.pipeline, srv.config)
                assert srv.call(runner.tick) == 1
                digest_mail = _inbox(srv)[-1]
                (release,) = links(digest_mail)["release"]
                anon = browser.new_context(ignore_https_errors=True, viewport={"width": 1000, "height": 700})
                anon.route(re.compile(r"^(?!https://127\.0\.0\.1).*"), lambda route: route.abort())
                link_page = anon.new_page()
                link_page.goto(base + release)
                expect(link_page.locator("h1")).to_have_text("Release this message?")
                expect(link_page.locator("#link-subject")).to_have_text("Weekly deals")
                _shot(link_page, "04-digest-confirm")
                assert DIGESTED not in _inbox(srv)  # opening the link released nothing
                link_page.click("#confirm")
                expect(link_page.locator("h1")).to_have_text("Released")
                _shot(link_page, "05-digest-released")
                assert _inbox(srv).count(DIGESTED) == 1
                link_page.goto(base + release)
                expect(link_page.locator("h1")).to_have_text("This link no longer works")
                expect(link_page.locator("#link-message")).to_contain_text("no longer in the quarantine")
                still = srv.store.quarantined(_hold(srv, DIGESTED, "spam", "Spam score 9.00", []))
                link_page.goto(base + link_path(b"not our secret".ljust(32), "release", still))  # forged
                expect(link_page.locator("body")).to_contain_text("not valid")
                _shot(link_page, "06-digest-forged")
                assert _inbox(srv).count(DIGESTED) == 1 and srv.store.quarantined(still.id) is not None
            finally:
                browser.close()
