"""IMAP authenticated-state mailbox commands over real sockets: LIST (patterns, LIST-EXTENDED, LIST-STATUS,
SPECIAL-USE, CHILDREN), LSUB, CREATE, DELETE, RENAME, SUBSCRIBE, STATUS, APPEND/MULTIAPPEND, QUOTA."""

from __future__ import annotations

import imaplib

import pytest

from tests.imap.imap_client import PASSWORD, Raw, imap_server, login, message, new_user


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    with imap_server(tmp_path_factory.mktemp("imap-mb"), limits={"imap_max_literal": 100_000}) as s:
        yield s


def _raw(srv, user=None):
    raw = Raw(srv.port("imap"))
    raw.login(user or new_user(srv))
    return raw


def test_list_all_has_special_use_and_children(srv):
    """LIST "" "*" shows the default mailboxes with \\HasNoChildren and their special-use attributes."""
    raw = _raw(srv)
    out = raw.cmd("a", 'LIST "" "*"')
    text = b"".join(out)
    assert b'* LIST (\\HasNoChildren) "/" "INBOX"' in text
    assert b'* LIST (\\HasNoChildren \\Sent) "/" "Sent"' in text
    assert b'\\Trash) "/" "Trash"' in text and b'\\Drafts) "/" "Drafts"' in text
    assert out[-1].startswith(b"a OK")
    raw.close()


def test_list_empty_pattern_gives_delimiter(srv):
    raw = _raw(srv)
    out = raw.cmd("a", 'LIST "" ""')
    assert out[0] == b'* LIST (\\Noselect) "/" ""\r\n'
    raw.close()


def test_create_hierarchy_and_percent_pattern(srv):
    """CREATE a/b/c creates the parents; % stops at the separator; \\HasChildren is set."""
    raw = _raw(srv)
    assert raw.cmd("a", "CREATE Work/Projects/Alpha")[-1].startswith(b"a OK")
    out = b"".join(raw.cmd("b", 'LIST "" "Work/%"'))
    assert b'(\\HasChildren) "/" "Work/Projects"' in out
    assert b"Alpha" not in out
    out = b"".join(raw.cmd("c", 'LIST "Work/" "*"'))
    assert b'"Work/Projects/Alpha"' in out
    out = b"".join(raw.cmd("d", 'LIST "" "inbox"'))
    assert b'"INBOX"' in out  # RFC 9051 5.1: INBOX is case-insensitive
    raw.close()


def test_create_existing_and_inbox_are_alreadyexists(srv):
    raw = _raw(srv)
    assert raw.cmd("a", "CREATE INBOX")[-1].startswith(b"a NO [ALREADYEXISTS]")
    assert raw.cmd("b", "CREATE Trash")[-1].startswith(b"b NO [ALREADYEXISTS]")
    raw.close()


def test_create_special_use(srv):
    """RFC 6154 CREATE-SPECIAL-USE: an unsupported attribute is NO [USEATTR]."""
    raw = _raw(srv)
    assert raw.cmd("a", "CREATE Old (USE (\\All))")[-1].startswith(b"a NO [USEATTR]")
    raw.cmd("x", "DELETE Archive")
    assert raw.cmd("b", "CREATE MyArchive (USE (\\Archive))")[-1].startswith(b"b OK")
    out = b"".join(raw.cmd("c", 'LIST (SPECIAL-USE) "" "*"'))
    assert b'\\Archive) "/" "MyArchive"' in out and b'"INBOX"' not in out
    raw.close()


def test_delete_rules(srv):
    """DELETE INBOX is NO; a mailbox with children is NO [HASCHILDREN]; a missing one NO [NONEXISTENT]."""
    raw = _raw(srv)
    assert raw.cmd("a", "DELETE INBOX")[-1].startswith(b"a NO")
    raw.cmd("b", "CREATE P/C")
    assert raw.cmd("c", "DELETE P")[-1].startswith(b"c NO [HASCHILDREN]")
    assert raw.cmd("d", "DELETE P/C")[-1].startswith(b"d OK")
    assert raw.cmd("e", "DELETE P")[-1].startswith(b"e OK")
    assert raw.cmd("f", "DELETE Nope")[-1].startswith(b"f NO [NONEXISTENT]")
    raw.close()


def test_rename_with_children_and_inbox(srv):
    """RENAME moves children along; RENAME INBOX moves its messages and leaves INBOX empty (RFC 9051 6.3.6)."""
    user = new_user(srv)
    srv.deliver(user, message("one"))
    raw = _raw(srv, user)
    raw.cmd("a", "CREATE A/B")
    assert raw.cmd("b", "RENAME A Z")[-1].startswith(b"b OK")
    out = b"".join(raw.cmd("c", 'LIST "" "Z*"'))
    assert b'"Z/B"' in out
    assert raw.cmd("d", "RENAME INBOX Old")[-1].startswith(b"d OK")
    out = b"".join(raw.cmd("e", "STATUS INBOX (MESSAGES)"))
    assert b"MESSAGES 0" in out
    out = b"".join(raw.cmd("f", "STATUS Old (MESSAGES)"))
    assert b"MESSAGES 1" in out
    assert raw.cmd("g", "RENAME Z Trash")[-1].startswith(b"g NO [ALREADYEXISTS]")
    raw.close()


def test_subscribe_lsub_and_list_subscribed(srv):
    raw = _raw(srv)
    raw.cmd("a", "CREATE Lists/One")
    raw.cmd("b", "UNSUBSCRIBE Lists")
    assert raw.cmd("c", "UNSUBSCRIBE Lists/One")[-1].startswith(b"c OK")
    out = b"".join(raw.cmd("d", 'LSUB "" "*"'))
    assert b"Lists" not in out and b'"INBOX"' in out
    assert raw.cmd("e", "SUBSCRIBE Lists/One")[-1].startswith(b"e OK")
    out = b"".join(raw.cmd("f", 'LSUB "" "%"'))
    assert b'* LSUB (\\Noselect) "/" "Lists"' in out  # RFC 3501 6.3.9
    out = b"".join(raw.cmd("g", 'LIST (SUBSCRIBED RECURSIVEMATCH) "" "%"'))
    assert b'"Lists" ("CHILDINFO" ("SUBSCRIBED"))' in out
    out = b"".join(raw.cmd("h", 'LIST "" "*" RETURN (SUBSCRIBED CHILDREN)'))
    assert b'\\Subscribed) "/" "Lists/One"' in out
    # RFC 9051 6.3.7: a subscription outlives its mailbox, and a name may be subscribed before it exists.
    assert raw.cmd("i", "SUBSCRIBE Missing")[-1].startswith(b"i OK")
    raw.cmd("j", "CREATE Gone")
    raw.cmd("k", "SUBSCRIBE Gone")
    assert raw.cmd("l", "DELETE Gone")[-1].startswith(b"l OK")
    out = b"".join(raw.cmd("m", 'LIST (SUBSCRIBED) "" "*"'))
    assert b'* LIST (\\NonExistent \\HasNoChildren \\Subscribed) "/" "Gone"' in out
    assert b'* LIST (\\NonExistent \\HasNoChildren \\Subscribed) "/" "Missing"' in out
    assert b'"Gone"' not in b"".join(raw.cmd("n", 'LIST "" "*"'))
    raw.cmd("o", "CREATE Gone")  # re-created: still subscribed
    out = b"".join(raw.cmd("p", 'LIST "" "Gone" RETURN (SUBSCRIBED)'))
    assert b'\\Subscribed) "/" "Gone"' in out
    raw.close()


def test_list_status(srv):
    """RFC 5819: LIST ... RETURN (STATUS (MESSAGES UNSEEN)) puts a STATUS after each LIST line."""
    user = new_user(srv)
    srv.deliver(user, message("s1"))
    raw = _raw(srv, user)
    out = raw.cmd("a", 'LIST "" "INBOX" RETURN (STATUS (MESSAGES UNSEEN))')
    assert out[0].startswith(b"* LIST") and out[1] == b'* STATUS "INBOX" (MESSAGES 1 UNSEEN 1)\r\n'
    raw.close()


def test_status_items(srv):
    user = new_user(srv)
    body = message("st")
    srv.deliver(user, body)
    raw = _raw(srv, user)
    out = raw.cmd("a", "STATUS INBOX (MESSAGES RECENT UIDNEXT UIDVALIDITY UNSEEN DELETED SIZE HIGHESTMODSEQ "
                       "APPENDLIMIT)")
    line = out[0].decode()
    assert "MESSAGES 1" in line and "UIDNEXT 2" in line and "UNSEEN 1" in line and "DELETED 0" in line
    assert f"SIZE {len(body)}" in line and "HIGHESTMODSEQ" in line and "APPENDLIMIT 100000" in line
    assert "RECENT 1" in line
    assert raw.cmd("b", "STATUS Nope (MESSAGES)")[-1].startswith(b"b NO [NONEXISTENT]")
    raw.close()


def test_append_appenduid_flags_date(srv):
    user = new_user(srv)
    c = login(srv, user)
    typ, data = c.append("Drafts", "(\\Draft $Label1)", '"01-Feb-2026 10:00:00 +0100"', message("draft"))
    assert typ == "OK" and b"[APPENDUID " in data[0]
    uv, uid = data[0].split(b"APPENDUID ")[1].split(b"]")[0].split()
    c.select("Drafts")
    typ, data = c.uid("FETCH", uid.decode(), "(FLAGS INTERNALDATE)")
    assert b"\\Draft" in data[0] and b"$Label1" in data[0] and b" 1-Feb-2026 09:00:00 +0000" in data[0]  # stored as an instant, told in UTC
    c.logout()


def test_append_to_missing_mailbox_is_trycreate(srv):
    raw = _raw(srv)
    raw.send(b"a APPEND Nope {5}\r\n")
    assert raw.line().startswith(b"a NO [TRYCREATE]")
    assert raw.cmd("b", "NOOP")[-1].startswith(b"b OK")
    raw.close()


def test_append_one_byte_over_appendlimit_is_toobig(srv):
    """A literal one byte over the limit is refused before its data is sent."""
    raw = _raw(srv)
    raw.send(b"a APPEND INBOX {100001}\r\n")
    assert raw.line().startswith(b"a NO [TOOBIG]")
    raw.send(b"b APPEND INBOX {100000}\r\n")
    assert raw.line().startswith(b"+ ")
    raw.send(b"x" * 100000 + b"\r\n")
    assert raw.until(b"b")[-1].startswith(b"b OK [APPENDUID")
    raw.close()


def test_append_literal_plus_and_multiappend(srv):
    """RFC 7888 LITERAL+ and RFC 3502 MULTIAPPEND in one pipelined write; APPENDUID names both UIDs."""
    user = new_user(srv)
    raw = _raw(srv, user)
    m1, m2 = message("m1"), message("m2")
    raw.send(b"a APPEND INBOX (\\Seen) {%d+}\r\n" % len(m1) + m1 + b" {%d+}\r\n" % len(m2) + m2 + b"\r\n"
             + b"b STATUS INBOX (MESSAGES UNSEEN)\r\n")
    out = raw.until(b"a")
    assert out[-1].startswith(b"a OK [APPENDUID ") and b" 1:2]" in out[-1]
    out = raw.until(b"b")
    assert b"MESSAGES 2 UNSEEN 1" in out[0]
    raw.close()


def test_multiappend_is_all_or_nothing(srv):
    """RFC 3502: when one message of a MULTIAPPEND cannot be stored (here the quota), none is."""
    m1, m2 = message("m1", body="x" * 900), message("m2", body="y" * 900)
    user = new_user(srv, quota_bytes=len(m1) + len(m2) - 10)  # each fits alone, not both
    raw = _raw(srv, user)
    raw.send(b"a APPEND INBOX {%d+}\r\n" % len(m1) + m1 + b" {%d+}\r\n" % len(m2) + m2 + b"\r\n")
    assert raw.until(b"a")[-1].startswith(b"a NO [OVERQUOTA]")
    out = raw.cmd("b", "STATUS INBOX (MESSAGES)")
    assert b"MESSAGES 0" in out[0]
    raw.close()


def test_append_over_quota(srv):
    """RFC 9208: an APPEND that would pass the account quota answers NO [OVERQUOTA]."""
    user = new_user(srv, quota_bytes=2000)
    raw = _raw(srv, user)
    raw.send(b"a APPEND INBOX {3000}\r\n")
    assert raw.line().startswith(b"a NO [OVERQUOTA]")
    raw.close()


def test_quota_commands(srv):
    user = new_user(srv, quota_bytes=10 * 1024 * 1024)
    srv.deliver(user, message("q", body="x" * 5000))
    raw = _raw(srv, user)
    out = raw.cmd("a", "GETQUOTAROOT INBOX")
    assert out[0] == b'* QUOTAROOT "INBOX" ""\r\n'
    assert out[1] == b'* QUOTA "" (STORAGE %d 10240)\r\n' % ((len(message("q", body="x" * 5000)) + 1023) // 1024)
    out = raw.cmd("b", 'GETQUOTA ""')
    assert out[0].startswith(b'* QUOTA "" (STORAGE ')
    assert raw.cmd("c", 'SETQUOTA "" (STORAGE 1)')[-1].startswith(b"c NO")
    raw.close()


def test_utf8_mailbox_names(srv):
    """Modified UTF-7 on the wire by default; UTF-8 after ENABLE UTF8=ACCEPT."""
    user = new_user(srv)
    c = imaplib.IMAP4("127.0.0.1", srv.port("imap"))
    c.login(user, PASSWORD)
    assert c.create("Entw&APw-rfe")[0] == "OK"
    typ, data = c.list('""', "Entw*")
    assert b'"Entw&APw-rfe"' in data[0]
    c.logout()
    raw = _raw(srv, user)
    raw.cmd("a", "ENABLE UTF8=ACCEPT")
    out = b"".join(raw.cmd("b", 'LIST "" "Entw*"'))
    assert '"Entwürfe"'.encode() in out
    raw.close()


def test_copy_into_the_same_mailbox_checks_the_quota(srv):
    """RFC 9208: COPY 1:* INBOX into INBOX itself adds messages and must be refused past the quota, as into any
    other mailbox (it used to skip the check, so a user could grow past any quota)."""
    user = new_user(srv, quota_bytes=9000)
    srv.deliver(user, message("q1", body="x" * 2000))
    srv.deliver(user, message("q2", body="x" * 2000))
    raw = _raw(srv, user)
    raw.cmd("s", "SELECT INBOX")
    assert raw.cmd("c", "COPY 1:* INBOX")[-1].startswith(b"c OK")  # 4 KB + 4 KB fits in 9 KB
    assert raw.cmd("d", "COPY 1:* INBOX")[-1].startswith(b"d NO [OVERQUOTA]")  # another 8 KB does not
    out = raw.cmd("e", "STATUS INBOX (MESSAGES)")
    assert b"MESSAGES 4" in out[0]
    raw.close()
