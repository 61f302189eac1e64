"""``mailserver quarantine list | show | release | delete`` on the store a server uses."""

from __future__ import annotations

import time

from mailserver.cli.admin import open_store
from mailserver.config import load
from storage.quarantine import HoldSpec
from tests.test_cli import conf, run  # noqa: F401 (the fixture)

RAW = b"From: s@spam.test\r\nSubject: Cheap pills\r\n\r\nbuy\r\n"


def _hold(config_path, address, raw=RAW):
    class Args:
        config_obj = load(config_path)

    store = open_store(Args())
    acct = store.get_account(address)
    now = time.time()
    (qid,) = store.hold_quarantined([HoldSpec(acct.id, store.blobs.put(raw), {"subject": "Cheap pills",
                                                                             "from_addr": "s@spam.test"},
                                              address, "s@spam.test", {"sender": "s@spam.test"}, {"ip": "192.0.2.1"},
                                              "spam", "Spam score 9.00 (X)", [{"check": "rspamd", "name": "X",
                                                                               "score": 9.0}], "QID", now, now + 99)])
    return store, qid


def test_list_show_release_delete(conf):  # noqa: F811
    assert run(conf, "domain", "add", "example.test").returncode == 0
    assert run(conf, "domain", "add", "other.test").returncode == 0
    for a in ("alice@example.test", "bob@other.test"):
        assert run(conf, "user", "add", a, "--password-stdin", input="pw12345678\n").returncode == 0
    store, qid = _hold(conf, "alice@example.test")
    _, bobs = _hold(conf, "bob@other.test", RAW + b"2")
    r = run(conf, "quarantine", "list")
    assert r.returncode == 0 and "2 held copies" in r.stdout
    r = run(conf, "quarantine", "list", "--domain", "example.test")
    assert "alice@example.test" in r.stdout and "bob@other.test" not in r.stdout
    r = run(conf, "quarantine", "list", "--account", "bob@other.test")
    assert "bob@other.test" in r.stdout and "alice@" not in r.stdout
    r = run(conf, "quarantine", "show", str(qid))
    assert r.returncode == 0 and "spam: Spam score 9.00 (X)" in r.stdout and "fact: rspamd X  9.0" in r.stdout
    r = run(conf, "quarantine", "release", str(qid))
    assert r.returncode == 0 and "released" in r.stdout, r.stderr
    inbox = store.get_mailbox(store.get_account("alice@example.test").id, "INBOX")
    (m,) = store.list_messages(inbox.id)
    assert store.read_blob(store.get_messages(inbox.id, [m.uid])[0].blob_id) == RAW
    r = run(conf, "quarantine", "release", str(qid))
    assert r.returncode == 1 and "no quarantined message" in r.stderr
    assert run(conf, "quarantine", "delete", str(bobs)).returncode == 0
    assert "quarantine is empty" in run(conf, "quarantine", "list").stdout
    assert run(conf, "quarantine", "show", "nope").returncode == 1
