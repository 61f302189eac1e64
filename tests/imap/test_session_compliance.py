"""IMAP behaviour found missing by a compliance run (RFC 3501 / RFC 9051 / RFC 5258 rules), each over real sockets."""

from __future__ import annotations

import pytest

from tests.imap.imap_client import Raw, imap_server, message, new_user


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    with imap_server(tmp_path_factory.mktemp("imap-compliance")) as s:
        yield s


def _raw(srv, user) -> Raw:
    raw = Raw(srv.port("imap"))
    raw.login(user)
    return raw


def _append(raw: Raw, mailbox: str, data: bytes) -> None:
    raw.send(b"ap APPEND " + mailbox.encode() + b" {%d+}\r\n" % len(data) + data + b"\r\n")
    out = raw.until(b"ap")
    assert out[-1].startswith(b"ap OK"), out


def test_recreated_mailbox_messages_are_recent_again(srv):
    """A mailbox deleted and created again (new UIDVALIDITY) has \\Recent messages, even if it reuses a row id."""
    user = new_user(srv)
    raw = _raw(srv, user)
    for round_ in range(2):
        assert raw.cmd("c", "CREATE again")[-1].startswith(b"c OK")
        _append(raw, "again", message("one"))
        _append(raw, "again", message("two"))
        out = b"".join(raw.cmd("e", "EXAMINE again"))
        assert b"* 2 EXISTS" in out and b"* 2 RECENT" in out, (round_, out)
        assert raw.cmd("x", "CLOSE")[-1].startswith(b"x OK")
        assert b"RECENT 2" in b"".join(raw.cmd("st", "STATUS again (RECENT)"))
        out = b"".join(raw.cmd("s", "SELECT again"))
        assert b"* 2 RECENT" in out, (round_, out)
        assert b"* SEARCH 1 2" in b"".join(raw.cmd("r", "SEARCH RECENT"))
        assert raw.cmd("x", "CLOSE")[-1].startswith(b"x OK")
        assert b"RECENT 0" in b"".join(raw.cmd("st", "STATUS again (RECENT)"))
        assert raw.cmd("d", "DELETE again")[-1].startswith(b"d OK")
    raw.close()


def test_name_not_modified_utf7_is_no_and_pattern_matches_nothing(srv):
    """SELECT of a name that is not modified UTF-7 answers NO (not BAD); such a LIST pattern lists nothing, OK."""
    raw = _raw(srv, new_user(srv))
    name = "!#$&'+,-.0123456789:;<=>?@^_`|[}"
    out = raw.cmd("s", f"SELECT {name}")
    assert out[-1].startswith(b"s NO"), out
    out = raw.cmd("l", f'LIST "" {name}%*')
    assert len(out) == 1 and out[0].startswith(b"l OK"), out
    out = raw.cmd("u", f'LSUB "" {name}%*')
    assert len(out) == 1 and out[0].startswith(b"u OK"), out
    assert raw.cmd("n", "NOOP")[-1].startswith(b"n OK")
    raw.close()


def _lines(out: list[bytes]) -> list[bytes]:
    return [ln.rstrip(b"\r\n") for ln in out[:-1]]


def test_create_does_not_subscribe_and_lsub_shows_noselect_parents(srv):
    """RFC 9051 6.3.4: CREATE (and the parents it makes) leaves subscriptions alone; LSUB "%" shows an unsubscribed
    parent of a subscribed mailbox as \\Noselect (RFC 3501 6.3.9)."""
    raw = _raw(srv, new_user(srv))
    for name in ("t/a", "t/b/", "t/b/x", "t/c/y"):
        assert raw.cmd("c", f"CREATE {name}")[-1].startswith(b"c OK")
    assert _lines(raw.cmd("l", 'LSUB "" t*')) == []
    assert _lines(raw.cmd("l", 'LIST (SUBSCRIBED) "" t*')) == []
    assert raw.cmd("s", "SUBSCRIBE t/a")[-1].startswith(b"s OK")
    assert raw.cmd("s", "SUBSCRIBE t/b/x")[-1].startswith(b"s OK")
    assert _lines(raw.cmd("l", 'LSUB "" t/%')) == [b'* LSUB () "/" "t/a"', b'* LSUB (\\Noselect) "/" "t/b"']
    out = _lines(raw.cmd("l", 'LIST "" t/% RETURN (SUBSCRIBED)'))
    assert [ln for ln in out if b"\\Subscribed" in ln] == [b'* LIST (\\HasNoChildren \\Subscribed) "/" "t/a"']
    raw.close()


def test_recursivematch_childinfo_only_for_unmatched_subscribed_children(srv):
    """RFC 5258 3: with RECURSIVEMATCH a parent gets CHILDINFO only when a subscribed descendant is not matched by
    the patterns itself."""
    raw = _raw(srv, new_user(srv))
    for name in ("r/p/q", "r/s/s"):
        assert raw.cmd("c", f"CREATE {name}")[-1].startswith(b"c OK")
        assert raw.cmd("s", f"SUBSCRIBE {name}")[-1].startswith(b"s OK")
    out = _lines(raw.cmd("l", 'LIST (SUBSCRIBED RECURSIVEMATCH) "" r/%'))
    assert b'* LIST (\\HasChildren) "/" "r/p" ("CHILDINFO" ("SUBSCRIBED"))' in out
    assert len(out) == 2 and all(b"CHILDINFO" in ln for ln in out), out
    out = _lines(raw.cmd("l", 'LIST (SUBSCRIBED RECURSIVEMATCH) "" r*s'))
    assert out == [b'* LIST (\\HasNoChildren \\Subscribed) "/" "r/s/s"'], out
    out = _lines(raw.cmd("l", 'LIST (SUBSCRIBED RECURSIVEMATCH) "" (r/p r/p/q)'))
    assert out == [b'* LIST (\\HasNoChildren \\Subscribed) "/" "r/p/q"'], out
    assert raw.cmd("b", 'LIST (RECURSIVEMATCH REMOTE) "" ""')[-1].startswith(b"b BAD")
    raw.close()


def test_condstore_enabled_while_selected_sends_highestmodseq_once(srv):
    """RFC 7162 3.1: the first CONDSTORE-enabling command in the selected state (here FETCH MODSEQ) is preceded by an
    untagged OK [HIGHESTMODSEQ]; later ones are not."""
    user = new_user(srv)
    srv.deliver(user, message("one"))
    raw = _raw(srv, user)
    sel = b"".join(raw.cmd("s", "SELECT INBOX"))
    highest = sel.split(b"[HIGHESTMODSEQ ")[1].split(b"]")[0]
    out = raw.cmd("f", "FETCH 1 (MODSEQ)")
    assert out[0] == b"* OK [HIGHESTMODSEQ " + highest + b"] highest\r\n", out
    assert out[1].startswith(b"* 1 FETCH (MODSEQ (") and out[2].startswith(b"f OK"), out
    out = raw.cmd("g", "FETCH 1 (MODSEQ)")
    assert len(out) == 2 and b"HIGHESTMODSEQ" not in out[0], out
    raw.close()


def test_sequence_number_of_thousands_of_digits_is_bad(srv):
    """Found by tests/fuzz: a sequence number of 5,000 digits (before login too: commands are parsed first) raised
    Python's int-conversion ValueError through the session and dropped the connection; it is a BAD and the session
    goes on."""
    raw = Raw(srv.port("imap"))
    out = raw.cmd("a", "UID COPY " + "9" * 5000 + " INBOX")
    assert out[-1].startswith(b"a BAD"), out
    assert raw.cmd("b", "NOOP")[-1].startswith(b"b OK")
    raw.close()
