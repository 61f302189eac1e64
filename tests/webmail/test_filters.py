"""The webmail's filters: rules -> script -> rules round trips, a hand-written script shown raw and saved unchanged,
the parse error at its line, and what a saved filter does to the next SMTP delivery."""

from __future__ import annotations

import re
import smtplib

import pytest

from mailserver.sieve import compile_script
from tests.harness import running_server
from tests.webmail.test_http import ALICE, PW, Client
from webmail import filters as F

ROUND_TRIP = [
    F.Filters(),
    F.Filters(rules=(F.Rule("Invoices", (F.Condition("subject", "contains", "invoice"),),
                            (F.Action("fileinto", "Invoices"),)),)),
    F.Filters(rules=(
        F.Rule("Lists", (F.Condition("header", "is", "dev@lists.example", header="List-Id"),
                         F.Condition("from", "not_contains", 'qu"ote\\d'),
                         F.Condition("to", "not_is", "me@example.test"),
                         F.Condition("size", "under", "102400"),
                         F.Condition("body", "contains", "unsubscribe")),
               (F.Action("read"), F.Action("flag"), F.Action("fileinto", "Lists/Dev"), F.Action("stop")), "any"),
        F.Rule("Everything", (), (F.Action("forward", "copy@remote.test"),)),
        F.Rule("Nope", (F.Condition("size", "over", "10485760"),), (F.Action("reject", "Too big.\nSorry."),)),
        F.Rule("Bin", (F.Condition("from", "is", "spam@remote.test"),), (F.Action("discard"),)))),
    F.Filters(vacation=F.Vacation(True, "Away", "Back on Monday.\n\n-- \nAlice", "2026-07-01", "2026-07-31", True,
                                  ("bob@example.test", "carol@remote.test"))),
    F.Filters(vacation=F.Vacation(False, "", "kept while off", "", "2026-01-02")),
    F.Filters(vacation=F.Vacation(True, "", "no contacts yet", contacts_only=True)),
    F.Filters(forwarding=F.Forwarding(("a@remote.test", "b@remote.test"), keep=False)),
    F.Filters(rules=(F.Rule("x", (F.Condition("subject", "is", "é ü"),), (F.Action("fileinto", "Ä"),)),),
              forwarding=F.Forwarding(("a@remote.test",), keep=True),
              vacation=F.Vacation(True, "S", "T")),
]


@pytest.mark.parametrize("filters", ROUND_TRIP)
def test_rules_to_script_to_rules(filters):
    script = F.render(filters)
    compile_script(script)  # what the editor writes runs
    assert F.parse(script) == filters
    assert F.render(F.parse(script)) == script


HAND_WRITTEN = [
    'require "fileinto";\nif header :contains "subject" "x" { fileinto "X"; }\n',
    # our header line, but a hand edit afterwards
    F.render(ROUND_TRIP[1]).replace('fileinto "Invoices";', 'fileinto "Invoices"; # mine'),
    F.render(ROUND_TRIP[1]).replace("  fileinto", "    fileinto"),
    F.render(ROUND_TRIP[1]) + "keep;\n",
    F.render(ROUND_TRIP[1]).replace(":contains", ":matches"),
    F.render(ROUND_TRIP[1]).replace("\n", "\r\n"),
    F.render(ROUND_TRIP[1]) + "if true {\n",  # not even valid
]


@pytest.mark.parametrize("script", HAND_WRITTEN)
def test_scripts_the_editor_did_not_write_are_not_represented(script):
    assert F.parse(script) is None


def test_check_rule_orders_flags_first_and_stop_last_and_refuses_bad_rules():
    r = F.check_rule(F.Rule("r", (), (F.Action("stop"), F.Action("fileinto", "A"), F.Action("read"))))
    assert [a.kind for a in r.actions] == ["read", "fileinto", "stop"]
    for bad in (F.Rule("", (), (F.Action("stop"),)), F.Rule("r", (), ()),
                F.Rule("r", (), (F.Action("fileinto", " "),)), F.Rule("r", (), (F.Action("forward", "nobody"),)),
                F.Rule("r", (F.Condition("size", "over", "12K"),), (F.Action("stop"),)),
                F.Rule("r", (F.Condition("header", "is", "x", header="a b"),), (F.Action("stop"),))):
        with pytest.raises(F.FilterError):
            F.check_rule(bad)


# --------------------------------------------------------------------------------------------- over HTTP


@pytest.fixture
def srv(tmp_path):
    with running_server(tmp_path, listeners=("https", "smtp", "imap")) as s:
        s.add_user(ALICE, PW)
        yield s


def _account(srv):
    return srv.store.get_account(ALICE)


def test_a_hand_written_script_is_shown_raw_and_saved_unchanged(srv):
    acct = _account(srv)
    script = 'require ["fileinto", "variables"];\r\n# mine\r\nset "x" "y";\r\nif header :matches "subject" "*" {\r\n' \
             '  fileinto "INBOX";\r\n}\r\n'
    srv.store.put_sieve_script(acct.id, "mine", script)
    srv.store.activate_sieve_script(acct.id, "mine")
    c = Client(srv)
    c.login()
    r, page = c.get("/filters")
    assert r.status == 200
    assert b'id="raw-notice"' in page and b"rules-form" not in page
    shown = re.search(rb'<textarea name="script"[^>]*>\n(.*?)</textarea>', page, re.S).group(1).decode()
    assert shown.replace("&#34;", '"').replace("&lt;", "<").replace("&gt;", ">") == script
    csrf = c.csrf("/filters")
    # the rule editor cannot overwrite it
    r, _ = c.post("/filters", {"_csrf": csrf, "op": "rules", "r0_name": "x", "r0_a0_kind": "stop"})
    assert r.status == 409
    # a browser sends the textarea back with CRLF line ends: the stored script stays byte for byte
    r, _ = c.post("/filters", {"_csrf": csrf, "op": "raw", "script": script.replace("\r\n", "\n")
                               .replace("\n", "\r\n")})
    assert r.status == 303
    assert srv.store.get_sieve_script(acct.id, "mine").content == script
    assert [s.name for s in srv.store.list_sieve_scripts(acct.id)] == ["mine"]


def test_raw_sieve_with_an_error_is_refused_at_its_line(srv):
    c = Client(srv)
    c.login()
    csrf = c.csrf("/filters")
    broken = 'require "fileinto";\n\nif true {\n  fileinto;\n}\n'
    r, page = c.post("/filters", {"_csrf": csrf, "op": "raw", "script": broken})
    assert r.status == 400
    assert b"line 4, column 3: " in page
    assert re.search(rb'<li class="error-line" id="error-line">\s*fileinto;</li>', page)
    assert srv.store.list_sieve_scripts(_account(srv).id) == []


def test_rules_from_the_form_become_the_active_script_and_the_next_delivery_follows(srv):
    acct = _account(srv)
    srv.store.create_mailbox(acct.id, "Invoices")
    c = Client(srv)
    c.login()
    r, page = c.get("/filters")
    assert b'id="rules-form"' in page
    csrf = c.csrf("/filters")
    r, _ = c.post("/filters", {"_csrf": csrf, "op": "rules", "r0_name": "Invoices", "r0_match": "all",
                               "r0_c0_field": "subject", "r0_c0_op": "contains", "r0_c0_value": "invoice",
                               "r0_a0_kind": "fileinto", "r0_a0_arg": "Invoices", "r0_a1_kind": "read",
                               "fwd_keep": "1"})
    assert r.status == 303
    active = srv.store.active_sieve_script(acct.id)
    assert active.name == "webmail"
    assert F.parse(active.content).rules == (F.Rule("Invoices", (F.Condition("subject", "contains", "invoice"),),
                                                    (F.Action("read"), F.Action("fileinto", "Invoices"))),)
    with smtplib.SMTP("127.0.0.1", srv.port("smtp")) as s:
        s.sendmail("a@remote.test", [ALICE], b"From: a@remote.test\r\nSubject: Invoice 7\r\n\r\npay\r\n")
    box = srv.store.get_mailbox(acct.id, "Invoices")
    srv.wait_for(lambda: len(srv.store.list_messages(box.id)) == 1)
    r, page = c.get("/filters")
    assert b'value="Invoices"' in page
    # a rule with no action is a form error, nothing is stored
    r, page = c.post("/filters", {"_csrf": csrf, "op": "rules", "r0_name": "Empty"})
    assert r.status == 400 and b"has no action" in page
    assert srv.store.active_sieve_script(acct.id).content == active.content


def test_only_my_contacts_learns_the_addresses_the_user_writes_to(srv):
    """The vacation's contact list is written into the script; sending to someone new from the webmail rewrites it,
    so the next message from them gets the reply, and a stranger's does not."""
    acct = _account(srv)
    for who in ("carol@example.test", "dave@example.test"):
        srv.add_user(who, PW)
    c = Client(srv)
    c.login()
    csrf = c.csrf("/filters")
    r, _ = c.post("/filters", {"_csrf": csrf, "op": "rules", "v_enabled": "1", "v_subject": "Away",
                               "v_text": "back soon", "v_contacts": "1", "fwd_keep": "1"})
    assert r.status == 303
    before = F.parse(srv.store.active_sieve_script(acct.id).content).vacation
    assert before.contacts_only and "carol@example.test" not in before.contacts
    r, _ = c.post("/compose", {"_csrf": c.csrf("/compose"), "action": "send", "from": ALICE,
                               "to": "Carol <Carol@example.test>", "subject": "hello", "body": "hi"})
    assert r.status == 303
    after = F.parse(srv.store.active_sieve_script(acct.id).content).vacation
    assert after.contacts_only and after.contacts == ("carol@example.test",)
    assert (after.enabled, after.subject, after.text) == (before.enabled, before.subject, before.text)

    def inbox_count(address):
        return len(srv.store.list_messages(srv.store.get_mailbox(srv.store.get_account(address).id, "INBOX").id))

    for who in ("dave@example.test", "carol@example.test"):  # the stranger first: carol's reply comes after
        with smtplib.SMTP("127.0.0.1", srv.port("smtp")) as s:
            s.sendmail(who, [ALICE], f"From: {who}\r\nTo: {ALICE}\r\nSubject: ping\r\n"
                                     f"Message-ID: <{who}>\r\n\r\nhi\r\n".encode())
    srv.wait_for(lambda: inbox_count(ALICE) == 2)
    srv.wait_for(lambda: inbox_count("carol@example.test") == 2)  # "hello" and the vacation reply
    assert inbox_count("dave@example.test") == 0  # not a contact: no reply
    # a hand-written script is never rewritten
    srv.store.put_sieve_script(acct.id, "webmail", 'require "vacation";\nvacation "mine";\n')
    r, _ = c.post("/compose", {"_csrf": c.csrf("/compose"), "action": "send", "from": ALICE,
                               "to": "erin@remote.test", "subject": "x", "body": "y"})
    assert r.status == 303
    assert srv.store.active_sieve_script(acct.id).content == 'require "vacation";\nvacation "mine";\n'
