"""The quarantine digest and its links: the schedule on an injected clock (once a day at the account's hour, its
own setting over its domain's over the server's, nothing when off), delivered through the pipeline into INBOX;
the links work without a login, a GET only shows a confirm page, the POST acts once; a second use, a tampered
signature, another copy's or another account's signature and an expired link are refused with a clear page."""

from __future__ import annotations

import email
import email.policy
import re
import time

import pytest
from twisted.internet import task

from mailserver import digest
from mailserver.digest import DigestRunner
from mailserver.mime import parse_message
from storage.quarantine import HoldSpec
from tests.harness import running_server
from tests.webmail.test_http import ALICE, BOB, PW, Client

DAY = 86400
#: A recent midnight UTC (held copies expire 30 days after arriving, and links check the real time).
T0 = digest.slot(time.time(), 0) - DAY


def raw(subject: str) -> bytes:
    return (f"From: Spammer <s@spam.test>\r\nTo: {ALICE}\r\nSubject: {subject}\r\n"
            f"Message-ID: <{subject.replace(' ', '.')}@spam.test>\r\n\r\nbuy {subject}\r\n").encode()


def hold(srv, address, subject, arrived, expires=None):
    acct = srv.store.get_account(address)
    body = raw(subject)
    (qid,) = srv.store.hold_quarantined([HoldSpec(
        acct.id, srv.store.blobs.put(body), parse_message(body).to_json(), address, "s@spam.test",
        {"sender": "s@spam.test"}, {"ip": "192.0.2.1"}, "spam", "Spam score 9.00 (X)", [], "QID", arrived,
        expires if expires is not None else arrived + 30 * DAY)])
    return qid


@pytest.fixture
def srv(tmp_path):
    with running_server(tmp_path, listeners=("https", "imap"), domains=("example.test", "other.test"),
                        quarantine={"base_url": "https://mail.example.test",
                                    "domain": {"other.test": {"digest": "off"}}}) as s:
        s.add_user(ALICE, PW)
        s.add_user(BOB, PW)
        yield s


def runner(srv, now):
    clock = task.Clock()
    clock.advance(now)
    return DigestRunner(clock, srv.services.astore, srv.services.pipeline, srv.config), clock


def inbox(srv, address=ALICE):
    acct = srv.store.get_account(address)
    box = srv.store.get_mailbox(acct.id, "INBOX")
    msgs = srv.store.get_messages(box.id, [m.uid for m in srv.store.list_messages(box.id)])
    return [srv.store.read_blob(m.blob_id) for m in msgs]


def links(message: bytes) -> dict[str, list[str]]:
    text = email.message_from_bytes(message, policy=email.policy.default).get_content()
    out: dict[str, list[str]] = {"release": [], "delete": []}
    for action, url in re.findall(r"(Release|Delete): +(\S+)", text):
        assert url.startswith("https://mail.example.test/q/")
        out[action.lower()].append(url.removeprefix("https://mail.example.test"))
    return out


def test_slot_is_the_latest_hour_not_after_now():
    assert T0 % DAY == 0
    assert digest.slot(T0 + 8 * 3600, 8) == T0 + 8 * 3600
    assert digest.slot(T0 + 8 * 3600 - 1, 8) == T0 + 8 * 3600 - DAY
    assert digest.slot(T0 + 23 * 3600, 8) == T0 + 8 * 3600


def test_the_digest_goes_out_once_a_day_at_the_hour_on_an_injected_clock(srv):
    hold(srv, ALICE, "first offer", T0 + 3600)
    r, clock = runner(srv, T0 + 8 * 3600 - 1)
    assert srv.call(r.tick) == 0 and inbox(srv) == []  # 07:59:59: not yet
    srv.call(clock.advance, 1)
    assert srv.call(r.tick) == 1  # 08:00
    (mail,) = inbox(srv)
    head = mail.split(b"\r\n\r\n", 1)[0]
    assert b"Subject: Quarantine: 1 new held message" in head and b"Auto-Submitted: auto-generated" in head
    assert b"first offer" in mail and len(links(mail)["release"]) == 1
    hold(srv, ALICE, "second offer", T0 + 9 * 3600)
    srv.call(clock.advance, 10 * 3600)
    assert srv.call(r.tick) == 0  # one a day; what came after 08:00 waits for tomorrow
    srv.call(clock.advance, DAY - 10 * 3600)
    assert srv.call(r.tick) == 1
    second = inbox(srv)[1]
    assert b"second offer" in second and b"first offer" not in second  # only what no digest listed


def test_the_runner_looks_every_check_interval_on_its_clock(srv):
    hold(srv, ALICE, "looped", T0 + 3600)
    r, clock = runner(srv, T0 + 8 * 3600)
    srv.call(r.start)
    try:
        assert inbox(srv) == []
        srv.call(clock.advance, srv.config.quarantine.digest_check_interval)
        srv.wait_for(lambda: len(inbox(srv)) == 1)
    finally:
        srv.call(r.stop)


def test_an_account_or_its_domain_may_turn_digests_off_or_choose_the_hour(srv):
    srv.store.add_account("carol@other.test", "x")
    hold(srv, "carol@other.test", "carols", T0 + 60)  # other.test: digest = "off"
    hold(srv, ALICE, "alices", T0 + 60)
    alice = srv.store.get_account(ALICE)
    srv.store.set_digest_setting(alice.id, False, None)
    r, clock = runner(srv, T0 + 12 * 3600)
    assert srv.call(r.tick) == 0
    srv.store.set_digest_setting(alice.id, None, 13)  # default (on), at 13:00
    assert srv.call(r.tick) == 0
    srv.call(clock.advance, 3600)
    assert srv.call(r.tick) == 1 and len(inbox(srv)) == 1
    carol = srv.store.get_account("carol@other.test")
    srv.store.set_digest_setting(carol.id, True, None)  # her own setting beats the domain's
    assert srv.call(r.tick) == 1 and len(inbox(srv, "carol@other.test")) == 1


def _digest_links(srv, *subjects):
    for i, s in enumerate(subjects):
        hold(srv, ALICE, s, T0 + 60 + i)
    r, _ = runner(srv, T0 + 8 * 3600)
    assert srv.call(r.tick) == 1
    return links(inbox(srv)[-1])


def _confirm(page: bytes) -> str:
    return re.search(rb'name="confirm" value="([0-9a-f]{64})"', page).group(1).decode()


def test_a_release_link_get_only_shows_a_confirm_page_and_the_post_releases_once(srv):
    ls = _digest_links(srv, "link offer")
    (release,), (delete,) = ls["release"], ls["delete"]
    c = Client(srv)  # not signed in
    for _ in range(3):  # a scanner prefetching the link releases nothing
        r, page = c.get(release)
        assert r.status == 200 and b"Release this message?" in page and b"link offer" in page
    alice = srv.store.get_account(ALICE)
    assert srv.store.count_quarantined(alice.id) == 1 and len(inbox(srv)) == 1  # only the digest
    r, page = c.post(release, {})  # a bare POST without the confirm page's field
    assert r.status == 403 and srv.store.count_quarantined(alice.id) == 1
    token = _confirm(c.get(release)[1])
    r, page = c.post(release, {"confirm": token})
    assert r.status == 200 and b"Released" in page
    assert srv.store.count_quarantined(alice.id) == 0
    assert raw("link offer") in inbox(srv)[1]  # byte-exact after our trace fields? held copies have none
    r, page = c.post(release, {"confirm": token})
    assert r.status == 410 and b"no longer" in page
    r, page = c.get(delete)
    assert r.status == 410 and b"no longer in the quarantine" in page
    assert len(inbox(srv)) == 2


def test_a_delete_link_deletes_after_confirming(srv):
    ls = _digest_links(srv, "to delete")
    (delete,) = ls["delete"]
    c = Client(srv)
    r, page = c.post(delete, {"confirm": _confirm(c.get(delete)[1])})
    assert r.status == 200 and b"Deleted" in page
    assert srv.store.count_quarantined(srv.store.get_account(ALICE).id) == 0
    assert len(inbox(srv)) == 1  # only the digest


def test_a_second_use_of_one_link_is_refused_even_while_the_copy_is_held(srv):
    """The link's use is recorded before it acts: a link whose release failed cannot be replayed."""
    ls = _digest_links(srv, "replayed")
    (release,) = ls["release"]
    item = srv.store.list_quarantined(account_ids=[srv.store.get_account(ALICE).id])[1][0]
    sig = release.rsplit("/", 1)[1]
    assert srv.store.use_quarantine_token(digest.token_id("release", item.id, sig), item.expires)
    c = Client(srv)
    r, page = c.post(release, {"confirm": _confirm(c.get(release)[1])})
    assert r.status == 410 and b"used already" in page
    assert srv.store.count_quarantined(item.account_id) == 1


def test_tampered_forged_and_other_accounts_links_are_refused(srv):
    ls = _digest_links(srv, "one", "two")
    mine, other = ls["release"]
    bobs = hold(srv, BOB, "bobs", T0)
    c = Client(srv)
    _, action, qid, sig = mine.split("/")[1:]
    flipped = sig[:-1] + ("A" if sig[-1] != "A" else "B")
    other_sig = other.rsplit("/", 1)[1]
    for path in (f"/q/{action}/{qid}/{flipped}",  # tampered signature
                 f"/q/{action}/{other.split('/')[3]}/{sig}",  # another copy's id with this signature
                 f"/q/delete/{qid}/{sig}",  # another action
                 f"/q/{action}/{bobs}/{sig}", f"/q/{action}/{bobs}/{other_sig}"):  # another account's copy
        r, page = c.get(path)
        assert r.status == 404 and b"not valid" in page, path
        r, _ = c.post(path, {"confirm": "0" * 64})
        assert r.status == 404, path
    assert srv.store.count_quarantined(srv.store.get_account(ALICE).id) == 2
    assert srv.store.count_quarantined(srv.store.get_account(BOB).id) == 1
    assert c.get("/q/release/1/short")[0].status == 404


def test_an_expired_link_is_refused_before_the_collector_removed_the_copy(srv):
    now = time.time()
    qid = hold(srv, ALICE, "expired", now - 100, expires=now - 1)
    item = srv.store.quarantined(qid)
    secret = srv.store.server_key(digest.LINK_SECRET)
    path = digest.link_path(secret, "release", item)
    c = Client(srv)
    r, page = c.get(path)
    assert r.status == 410 and b"expired" in page
    r, page = c.post(path, {"confirm": "0" * 64})
    assert r.status == 410 and srv.store.quarantined(qid) is not None


def test_the_secret_is_made_once_and_kept(srv):
    a = srv.store.server_key(digest.LINK_SECRET)
    assert len(a) == 32 and srv.store.server_key(digest.LINK_SECRET) == a
    assert srv.store.server_key("other") != a


def test_the_server_runs_the_digests_with_its_maintenance_jobs(srv):
    assert srv.server._digests is not None and srv.server._digests._loop.running


@pytest.mark.parametrize("table, key", [
    ({"digest_hour": 24}, "quarantine.digest_hour"),
    ({"digest_check_interval": 0}, "quarantine.digest_check_interval"),
    ({"base_url": "mail.example.test"}, "quarantine.base_url"),
    ({"base_url": "https://mail.example.test/path"}, "quarantine.base_url"),
    ({"domain": {"d.test": {"digest": "yes"}}}, "quarantine.domain.d.test.digest"),
    ({"domain": {"d.test": {"digest_hour": 30}}}, "quarantine.domain.d.test.digest_hour"),
])
def test_bad_digest_settings_are_config_errors(tmp_path, table, key):
    from mailserver.config import ConfigError, load_dict

    with pytest.raises(ConfigError) as e:
        load_dict({"hostname": "mail.example.test", "data_dir": str(tmp_path), "quarantine": table}, "t")
    assert key in str(e.value)


def test_domain_and_server_digest_defaults(tmp_path):
    from mailserver.config import load_dict

    cfg = load_dict({"hostname": "h.test", "data_dir": str(tmp_path), "quarantine": {
        "digest_hour": 9, "domain": {"Off.test": {"digest": "off"}, "early.test": {"digest_hour": 5}}}}, "t")
    assert cfg.quarantine.digest_for("off.test") == (False, 9)
    assert cfg.quarantine.digest_for("early.test") == (True, 5)
    assert cfg.quarantine.digest_for("any.test") == (True, 9)


def test_a_link_post_from_another_site_acts_on_nothing(srv):
    ls = _digest_links(srv, "cross site")
    (release,) = ls["release"]
    c = Client(srv)
    token = _confirm(c.get(release)[1])
    for headers in ({"Sec-Fetch-Site": "cross-site"}, {"Origin": "https://evil.test"}):
        r, _ = c.post(release, {"confirm": token}, headers=headers)
        assert r.status == 403, headers
    assert srv.store.count_quarantined(srv.store.get_account(ALICE).id) == 1
