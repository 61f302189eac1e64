"""parse_command: every command's grammar, good and bad, from bytes on the wire to typed commands."""

from datetime import date, datetime, timedelta, timezone

import pytest

from mailserver.imap import commands as c
from mailserver.imap import searchkeys as k
from mailserver.imap.parser import is_idle_done, parse_append_prefix, parse_command, parse_sasl_response
from mailserver.imap.seqset import SeqSet
from mailserver.imap.wire import (
    CommandReady,
    Frame,
    ImapReader,
    LiteralAnnounced,
    ParseError,
    ParserLimits,
    StreamedLiteral,
)


def frame_of(raw: bytes, **reader_kw) -> Frame:
    """Run ``raw`` through an ImapReader (accepting every literal, no streaming) and return its one frame."""
    reader = ImapReader(stream_commands=(), **reader_kw)
    found = []
    pending = [raw]
    while pending:
        for event in reader.feed(pending.pop()):
            if isinstance(event, LiteralAnnounced):
                reader.accept_literal()
                pending.append(b"")
            elif isinstance(event, CommandReady):
                found.append(event.frame)
    assert len(found) == 1, found
    return found[0]


def parse(raw: bytes, **kw) -> c.Command:
    return parse_command(frame_of(raw + b"\r\n"), **kw)


S = SeqSet.parse
T = "t"

GOOD = [
    # any state
    (b"t CAPABILITY", c.Capability(tag=T)),
    (b"t capability", c.Capability(tag=T)),
    (b"t NOOP", c.Noop(tag=T)),
    (b"t LOGOUT", c.Logout(tag=T)),
    (b"t ID NIL", c.Id(tag=T, params=None)),
    (b't ID ("name" "mutt" "version" NIL)', c.Id(tag=T, params=(("name", "mutt"), ("version", None)))),
    (b"t ID ()", c.Id(tag=T, params=())),
    (b"t XLIST \"\" *", c.Unknown(tag=T, command="XLIST")),
    (b"t FOO", c.Unknown(tag=T, command="FOO")),
    # not authenticated
    (b"t STARTTLS", c.StartTLS(tag=T)),
    (b"t AUTHENTICATE PLAIN", c.Authenticate(tag=T, mechanism="PLAIN", initial_response=None)),
    (b"t AUTHENTICATE plain AGZyZWQAc2VjcmV0", c.Authenticate(tag=T, mechanism="PLAIN",
                                                              initial_response="AGZyZWQAc2VjcmV0")),
    (b"t AUTHENTICATE PLAIN =", c.Authenticate(tag=T, mechanism="PLAIN", initial_response="=")),
    (b"t LOGIN fred secret", c.Login(tag=T, username="fred", password="secret")),
    (b't LOGIN "fred@example.org" "se\\"cr et"', c.Login(tag=T, username="fred@example.org", password='se"cr et')),
    (b"t LOGIN {4}\r\nfred {6+}\r\nsecret", c.Login(tag=T, username="fred", password="secret")),
    (b"$&'-.,/!#~|] NOOP", c.Noop(tag="$&'-.,/!#~|]")),
    # authenticated
    (b"t ENABLE CONDSTORE utf8=accept", c.Enable(tag=T, capabilities=("CONDSTORE", "UTF8=ACCEPT"))),
    (b"t SELECT INBOX", c.Select(tag=T, mailbox="INBOX")),
    (b"t select inbox", c.Select(tag=T, mailbox="INBOX")),
    (b"t EXAMINE \"Entw&APw-rfe\"", c.Select(tag=T, mailbox="Entwürfe", readonly=True)),
    (b"t SELECT INBOX (CONDSTORE)", c.Select(tag=T, mailbox="INBOX", condstore=True)),
    (b"t SELECT INBOX (QRESYNC (67890007 20050715194045000))",
     c.Select(tag=T, mailbox="INBOX", qresync=c.QresyncParams(uid_validity=67890007, modseq=20050715194045000))),
    (b"t SELECT INBOX (QRESYNC (67890007 90060115194045000 41:211,214:541))",
     c.Select(tag=T, mailbox="INBOX", qresync=c.QresyncParams(
         uid_validity=67890007, modseq=90060115194045000, known_uids=S("41:211,214:541")))),
    (b"t EXAMINE INBOX (QRESYNC (67890007 90060115194045000 1:29997 (5000,7500,9000,9990:9999 "
     b"15000,22500,27000,29970,29973,29976,29979,29982,29985,29988,29991,29994,29997)))",
     c.Select(tag=T, mailbox="INBOX", readonly=True, qresync=c.QresyncParams(
         uid_validity=67890007, modseq=90060115194045000, known_uids=S("1:29997"),
         seq_match=(S("5000,7500,9000,9990:9999"),
                    S("15000,22500,27000,29970,29973,29976,29979,29982,29985,29988,29991,29994,29997"))))),
    (b"t SELECT INBOX (QRESYNC (1 2 (1:2 3:4)))",
     c.Select(tag=T, mailbox="INBOX", qresync=c.QresyncParams(uid_validity=1, modseq=2,
                                                             seq_match=(S("1:2"), S("3:4"))))),
    (b"t CREATE foo/bar", c.Create(tag=T, mailbox="foo/bar")),
    (b"t CREATE MyDrafts (USE (\\Drafts))", c.Create(tag=T, mailbox="MyDrafts", special_use=("\\Drafts",))),
    (b"t DELETE \"a b\"", c.Delete(tag=T, mailbox="a b")),
    (b"t RENAME old {3+}\r\nnew", c.Rename(tag=T, mailbox="old", new_mailbox="new")),
    (b"t SUBSCRIBE &-", c.Subscribe(tag=T, mailbox="&")),
    (b"t UNSUBSCRIBE x", c.Unsubscribe(tag=T, mailbox="x")),
    (b't LIST "" *', c.List(tag=T, reference="", patterns=("*",))),
    (b't LIST "" ""', c.List(tag=T, reference="", patterns=("",))),
    (b"t LIST ~/Mail/ %", c.List(tag=T, reference="~/Mail/", patterns=("%",))),
    (b'T LIST "" "Entw&APw-rfe/%"', c.List(tag="T", reference="", patterns=("Entwürfe/%",))),
    (b't LIST (SUBSCRIBED RECURSIVEMATCH) "" (INBOX* "Foo/%") RETURN (CHILDREN STATUS (MESSAGES UNSEEN))',
     c.List(tag=T, reference="", patterns=("INBOX*", "Foo/%"), selection=frozenset({"SUBSCRIBED", "RECURSIVEMATCH"}),
            return_options=frozenset({"CHILDREN", "STATUS"}), return_status=("MESSAGES", "UNSEEN"), extended=True)),
    (b't LIST () "" % RETURN ()', c.List(tag=T, reference="", patterns=("%",), extended=True)),
    (b't LIST (SPECIAL-USE) "" *',
     c.List(tag=T, reference="", patterns=("*",), selection=frozenset({"SPECIAL-USE"}),
            return_options=frozenset({"SPECIAL-USE"}), extended=True)),
    (b't LIST "" * RETURN (SPECIAL-USE SUBSCRIBED)',
     c.List(tag=T, reference="", patterns=("*",), return_options=frozenset({"SPECIAL-USE", "SUBSCRIBED"}),
            extended=True)),
    (b't LSUB "" *', c.Lsub(tag=T, reference="", pattern="*")),
    (b"t NAMESPACE", c.Namespace(tag=T)),
    (b"t STATUS INBOX (MESSAGES UIDNEXT UIDVALIDITY UNSEEN DELETED SIZE RECENT HIGHESTMODSEQ APPENDLIMIT)",
     c.Status(tag=T, mailbox="INBOX", items=("MESSAGES", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "DELETED", "SIZE",
                                             "RECENT", "HIGHESTMODSEQ", "APPENDLIMIT"))),
    (b"t STATUS blurdybloop (uidnext messages)", c.Status(tag=T, mailbox="blurdybloop", items=("UIDNEXT", "MESSAGES"))),
    (b"t APPEND INBOX {5+}\r\nhello",
     c.Append(tag=T, mailbox="INBOX", messages=(c.AppendMessage(data=b"hello"),))),
    (b't APPEND saved-messages (\\Seen $Label1) " 7-Feb-1994 21:52:25 -0800" {3}\r\nabc',
     c.Append(tag=T, mailbox="saved-messages", messages=(c.AppendMessage(
         flags=("\\Seen", "$Label1"),
         internal_date=datetime(1994, 2, 7, 21, 52, 25, tzinfo=timezone(timedelta(hours=-8))),
         data=b"abc"),))),
    (b't APPEND x "17-Feb-1994 21:52:25 +0000" {1+}\r\na',
     c.Append(tag=T, mailbox="x", messages=(c.AppendMessage(
         internal_date=datetime(1994, 2, 17, 21, 52, 25, tzinfo=timezone.utc), data=b"a"),))),
    (b"t APPEND x () ~{3+}\r\na\x00b", c.Append(tag=T, mailbox="x", messages=(c.AppendMessage(
        data=b"a\x00b", binary=True),))),
    (b"t APPEND x {1+}\r\na (\\Seen) {1+}\r\nb ~{1+}\r\nc", c.Append(tag=T, mailbox="x", messages=(
        c.AppendMessage(data=b"a"), c.AppendMessage(flags=("\\Seen",), data=b"b"),
        c.AppendMessage(data=b"c", binary=True)))),
    (b"t APPEND x UTF8 (~{2+}\r\nhi)", c.Append(tag=T, mailbox="x", messages=(
        c.AppendMessage(data=b"hi", binary=True, utf8=True),))),
    (b"t IDLE", c.Idle(tag=T)),
    (b"t GETQUOTA \"\"", c.GetQuota(tag=T, root="")),
    (b"t GETQUOTAROOT INBOX", c.GetQuotaRoot(tag=T, mailbox="INBOX")),
    (b't SETQUOTA "" (STORAGE 512 MESSAGE 1000)', c.SetQuota(tag=T, root="", limits=(("STORAGE", 512),
                                                                                      ("MESSAGE", 1000)))),
    (b't SETQUOTA "" ()', c.SetQuota(tag=T, root="", limits=())),
    (b"t COMPRESS DEFLATE", c.Compress(tag=T, mechanism="DEFLATE")),
    # selected
    (b"t CHECK", c.Check(tag=T)),
    (b"t CLOSE", c.Close(tag=T)),
    (b"t UNSELECT", c.Unselect(tag=T)),
    (b"t EXPUNGE", c.Expunge(tag=T)),
    (b"t UID EXPUNGE 3000:3002", c.Expunge(tag=T, uid_set=S("3000:3002"))),
    (b"t COPY 2:4 MEETING", c.Copy(tag=T, seq_set=S("2:4"), mailbox="MEETING")),
    (b"t UID COPY 1:* \"Entw&APw-rfe\"", c.Copy(tag=T, uid=True, seq_set=S("1:*"), mailbox="Entwürfe")),
    (b"t MOVE 1 Trash", c.Move(tag=T, seq_set=S("1"), mailbox="Trash")),
    (b"t uid move 5:1 inbox", c.Move(tag=T, uid=True, seq_set=S("5:1"), mailbox="INBOX")),
    (b"t STORE 2:4 +FLAGS (\\Deleted)",
     c.Store(tag=T, seq_set=S("2:4"), mode=c.StoreMode.ADD, flags=("\\Deleted",))),
    (b"t STORE 1 -FLAGS.SILENT \\Seen $Junk",
     c.Store(tag=T, seq_set=S("1"), mode=c.StoreMode.REMOVE, silent=True, flags=("\\Seen", "$Junk"))),
    (b"t UID STORE 1:* FLAGS ()", c.Store(tag=T, uid=True, seq_set=S("1:*"), mode=c.StoreMode.REPLACE, flags=())),
    (b"t STORE 7,5,9 (UNCHANGEDSINCE 320162338) +FLAGS.SILENT (\\Deleted)",
     c.Store(tag=T, seq_set=S("7,5,9"), mode=c.StoreMode.ADD, silent=True, flags=("\\Deleted",),
             unchanged_since=320162338)),
    (b"t SORT (SUBJECT) UTF-8 SINCE 1-Feb-1994",
     c.Sort(tag=T, criteria=(c.SortCriterion(key="SUBJECT"),), charset="UTF-8",
            keys=k.DateKey("INTERNAL", "SINCE", date(1994, 2, 1)))),
    (b"t UID SORT (REVERSE DATE size) US-ASCII UNDELETED SUBJECT \"afp\"",
     c.Sort(tag=T, uid=True, criteria=(c.SortCriterion(key="DATE", reverse=True), c.SortCriterion(key="SIZE")),
            charset="US-ASCII", keys=k.And((k.FlagKey("\\Deleted", False), k.HeaderKey("SUBJECT", "afp"))))),
    (b"t SORT RETURN (MIN) (ARRIVAL) UTF-8 ALL",
     c.Sort(tag=T, criteria=(c.SortCriterion(key="ARRIVAL"),), charset="UTF-8", keys=k.All(),
            return_options=("MIN",))),
    (b"t THREAD ORDEREDSUBJECT UTF-8 SINCE 5-MAR-2000",
     c.Thread(tag=T, algorithm="ORDEREDSUBJECT", charset="UTF-8", keys=k.DateKey("INTERNAL", "SINCE",
                                                                                  date(2000, 3, 5)))),
    (b"t UID THREAD REFERENCES US-ASCII ALL",
     c.Thread(tag=T, uid=True, algorithm="REFERENCES", charset="US-ASCII", keys=k.All())),
]


@pytest.mark.parametrize("raw, expected", GOOD, ids=[g[0][:40].decode("latin-1") for g in GOOD])
def test_good_commands(raw, expected):
    assert parse(raw) == expected


def fa(name, section=None, partial=None, peek=False):
    return c.FetchAtt(name=name, section=section, partial=partial, peek=peek)


FETCH_GOOD = [
    (b"1 FLAGS", (fa("FLAGS"),)),
    (b"1:* ALL", (fa("FLAGS"), fa("INTERNALDATE"), fa("RFC822.SIZE"), fa("ENVELOPE"))),
    (b"1 FAST", (fa("FLAGS"), fa("INTERNALDATE"), fa("RFC822.SIZE"))),
    (b"1 full", (fa("FLAGS"), fa("INTERNALDATE"), fa("RFC822.SIZE"), fa("ENVELOPE"), fa("BODY"))),
    (b"1 (UID RFC822.SIZE FLAGS INTERNALDATE ENVELOPE BODYSTRUCTURE BODY MODSEQ)",
     tuple(fa(n) for n in ("UID", "RFC822.SIZE", "FLAGS", "INTERNALDATE", "ENVELOPE", "BODYSTRUCTURE", "BODY",
                           "MODSEQ"))),
    (b"1 (RFC822 RFC822.HEADER RFC822.TEXT)", (fa("RFC822"), fa("RFC822.HEADER"), fa("RFC822.TEXT"))),
    (b"1 BODY[]", (fa("BODY", c.Section()),)),
    (b"1 BODY.PEEK[]<0.2048>", (fa("BODY", c.Section(), (0, 2048), True),)),
    (b"1 body[header]", (fa("BODY", c.Section(text="HEADER")),)),
    (b"1 BODY[TEXT]", (fa("BODY", c.Section(text="TEXT")),)),
    (b"1 BODY[1.2.3]", (fa("BODY", c.Section(part=(1, 2, 3))),)),
    (b"1 BODY[4.2.HEADER]", (fa("BODY", c.Section(part=(4, 2), text="HEADER")),)),
    (b"1 BODY[3.MIME]", (fa("BODY", c.Section(part=(3,), text="MIME")),)),
    (b"1 BODY[1.TEXT]", (fa("BODY", c.Section(part=(1,), text="TEXT")),)),
    (b"1 (BODY.PEEK[HEADER.FIELDS (DATE FROM Subject)])",
     (fa("BODY", c.Section(text="HEADER.FIELDS", fields=("DATE", "FROM", "SUBJECT")), peek=True),)),
    (b"1 BODY[HEADER.FIELDS.NOT (\"X-Spam\" {8}\r\nReceived)]<10.20>",
     (fa("BODY", c.Section(text="HEADER.FIELDS.NOT", fields=("X-SPAM", "RECEIVED")), (10, 20)),)),
    (b"1 BINARY[]", (fa("BINARY", c.Section()),)),
    # Section text after BINARY is outside RFC 9051's grammar, but Dovecot (and imaptest) accept it.
    (b"1 BINARY[1.MIME]", (fa("BINARY", c.Section(part=(1,), text="MIME")),)),
    (b"1 BINARY.PEEK[1.2]<5.10>", (fa("BINARY", c.Section(part=(1, 2)), (5, 10), True),)),
    (b"1 BINARY.SIZE[2]", (fa("BINARY.SIZE", c.Section(part=(2,))),)),
    (b"1 (FLAGS FLAGS)", (fa("FLAGS"),)),
]


@pytest.mark.parametrize("args, items", FETCH_GOOD, ids=[g[0].decode("latin-1") for g in FETCH_GOOD])
def test_fetch_items(args, items):
    cmd = parse(b"t FETCH " + args)
    assert isinstance(cmd, c.Fetch)
    assert cmd.items == items


def test_fetch_modifiers():
    """RFC 7162: CHANGEDSINCE and VANISHED (the latter only on UID FETCH with CHANGEDSINCE)."""
    cmd = parse(b"t UID FETCH 1:* (FLAGS) (CHANGEDSINCE 12345 VANISHED)")
    assert cmd == c.Fetch(tag=T, uid=True, seq_set=S("1:*"), items=(fa("FLAGS"),), changed_since=12345,
                          vanished=True)
    assert parse(b"t FETCH 1 FLAGS (CHANGEDSINCE 1)").changed_since == 1
    for bad in (b"t FETCH 1:* FLAGS (VANISHED CHANGEDSINCE 1)", b"t UID FETCH 1:* FLAGS (VANISHED)",
                b"t UID FETCH 1 FLAGS (CHANGEDSINCE 0)", b"t UID FETCH 1 FLAGS (FOO)", b"t UID FETCH 1 FLAGS ()"):
        with pytest.raises(ParseError):
            parse(bad)


def test_fetch_response_names():
    """Response item names drop .PEEK and show only the partial origin (RFC 3501 7.4.2)."""
    items = parse(b"t FETCH 1 (BODY.PEEK[HEADER.FIELDS (From To)]<0.100> BODY[1.MIME] BINARY.SIZE[1] UID)").items
    assert [i.response_name() for i in items] == ["BODY[HEADER.FIELDS (FROM TO)]<0>", "BODY[1.MIME]",
                                                  "BINARY.SIZE[1]", "UID"]
    assert [i.sets_seen for i in items] == [False, True, False, False]
    assert parse(b"t FETCH 1 RFC822").items[0].sets_seen
    assert not parse(b"t FETCH 1 RFC822.HEADER").items[0].sets_seen


def sk(text: bytes):
    return parse(b"t SEARCH " + text).keys


SEARCH_GOOD = [
    (b"ALL", k.All()),
    (b"ANSWERED DELETED DRAFT FLAGGED SEEN RECENT",
     k.And(tuple(k.FlagKey(f) for f in ("\\Answered", "\\Deleted", "\\Draft", "\\Flagged", "\\Seen", "\\Recent")))),
    (b"UNANSWERED UNDELETED UNDRAFT UNFLAGGED UNSEEN OLD",
     k.And(tuple(k.FlagKey(f, False) for f in ("\\Answered", "\\Deleted", "\\Draft", "\\Flagged", "\\Seen",
                                                "\\Recent")))),
    (b"NEW", k.And((k.FlagKey("\\Recent"), k.FlagKey("\\Seen", False)))),
    (b"KEYWORD $Junk UNKEYWORD Work", k.And((k.FlagKey("$Junk"), k.FlagKey("Work", False)))),
    (b'BCC a CC "b c" FROM {3}\r\nd e SUBJECT "" TO x',
     k.And((k.HeaderKey("BCC", "a"), k.HeaderKey("CC", "b c"), k.HeaderKey("FROM", "d e"),
            k.HeaderKey("SUBJECT", ""), k.HeaderKey("TO", "x")))),
    (b'HEADER Message-ID "<x@y>"', k.HeaderKey("MESSAGE-ID", "<x@y>")),
    (b"BODY hello TEXT world", k.And((k.BodyKey("hello"), k.TextKey("world")))),
    (b'BEFORE 1-Feb-1994 ON "01-feb-1994" SINCE 28-Feb-2024',
     k.And((k.DateKey("INTERNAL", "BEFORE", date(1994, 2, 1)), k.DateKey("INTERNAL", "ON", date(1994, 2, 1)),
            k.DateKey("INTERNAL", "SINCE", date(2024, 2, 28))))),
    (b"SENTBEFORE 1-Jan-2000 SENTON 2-Jan-2000 SENTSINCE 3-Jan-2000",
     k.And((k.DateKey("SENT", "BEFORE", date(2000, 1, 1)), k.DateKey("SENT", "ON", date(2000, 1, 2)),
            k.DateKey("SENT", "SINCE", date(2000, 1, 3))))),
    (b"LARGER 100 SMALLER 9223372036854775807",
     k.And((k.SizeKey("LARGER", 100), k.SizeKey("SMALLER", 2**63 - 1)))),
    (b"1:3,5 UID 7:* *", k.And((k.SeqKey(S("1:3,5")), k.UidKey(S("7:*")), k.SeqKey(S("*"))))),
    (b"NOT SEEN", k.Not(k.FlagKey("\\Seen"))),
    (b"OR SEEN (FLAGGED DELETED)",
     k.Or(k.FlagKey("\\Seen"), k.And((k.FlagKey("\\Flagged"), k.FlagKey("\\Deleted"))))),
    (b"OR OR 1 2 NOT NOT 3", k.Or(k.Or(k.SeqKey(S("1")), k.SeqKey(S("2"))), k.Not(k.Not(k.SeqKey(S("3")))))),
    (b"((SEEN))", k.FlagKey("\\Seen")),
    (b"MODSEQ 620162338", k.ModSeqKey(620162338)),
    (b'MODSEQ "/flags/\\\\draft" all 620162338', k.ModSeqKey(620162338, "/flags/\\draft", "all")),
    (b"OLDER 3600 YOUNGER 60", k.And((k.WithinKey("OLDER", 3600), k.WithinKey("YOUNGER", 60)))),
    ('SUBJECT "Grüße"'.encode(), k.HeaderKey("SUBJECT", "Grüße")),
]


@pytest.mark.parametrize("text, keys", SEARCH_GOOD, ids=[g[0].decode("latin-1")[:40] for g in SEARCH_GOOD])
def test_search_keys(text, keys):
    assert sk(text) == keys


def test_search_return_and_charset():
    cmd = parse(b"t UID SEARCH RETURN (MIN MAX COUNT ALL) CHARSET utf-8 TEXT {6}\r\n\xc3\xa4bcde")
    assert cmd == c.Search(tag=T, uid=True, charset="UTF-8", keys=k.TextKey("äbcde"),
                           return_options=("MIN", "MAX", "COUNT", "ALL"))
    assert parse(b"t SEARCH RETURN () ALL").return_options == ()
    assert parse(b"t SEARCH ALL").return_options is None
    assert parse(b"t SEARCH CHARSET US-ASCII ALL").charset == "US-ASCII"


def test_search_unknown_charset_is_no_badcharset():
    """RFC 9051 6.4.4: an unsupported charset is NO [BADCHARSET (...)], not BAD."""
    with pytest.raises(ParseError) as e:
        parse(b"t SEARCH CHARSET KOI8-R ALL")
    assert e.value.status == "NO"
    assert e.value.code == "BADCHARSET (US-ASCII UTF-8)"
    assert e.value.tag == "t"
    with pytest.raises(ParseError) as e:
        parse(b"t SORT (DATE) ISO-8859-1 ALL")
    assert e.value.status == "NO"


BAD = [
    (b"", "tag"),
    (b"+ NOOP", "tag"),
    (b"t", "missing command"),
    (b"t ", "missing command"),
    (b"t NOOP extra", "end of command"),
    (b"t  NOOP", "missing command"),
    (b"t UID NOOP", "UID NOOP"),
    (b"t UID", "SP"),
    (b"t LOGIN fred", "SP"),
    (b"t LOGIN fred \"open", "unterminated"),
    (b"t LOGIN \xff x", "user name"),
    (b"%t NOOP", "tag"),
    (b"t LOGIN {2}\r\n\xff\xfe x", "UTF-8"),
    (b"t AUTHENTICATE", "SP"),
    (b"t AUTHENTICATE PLAIN abc", "initial response"),
    (b"t AUTHENTICATE PLAIN AAAA$", "end of command"),
    (b"t ENABLE", "SP"),
    (b"t SELECT", "SP"),
    (b"t SELECT INBOX ()", "empty"),
    (b"t SELECT INBOX (FOO)", "SELECT parameter"),
    (b"t SELECT INBOX (QRESYNC (0 1))", "non-zero"),
    (b"t SELECT INBOX (QRESYNC (1 0))", "non-zero"),
    (b"t SELECT INBOX (QRESYNC (1 2 1:*))", "known-uids"),
    (b"t SELECT INBOX (QRESYNC (1 2 3 (1:2)))", "SP"),
    (b"t CREATE x (USE (Drafts))", "special-use"),
    (b"t CREATE x (FOO)", "CREATE parameter"),
    (b"t RENAME a", "SP"),
    (b"t LIST \"\"", "SP"),
    (b"t LIST (FOO) \"\" *", "selection option"),
    (b"t LIST (RECURSIVEMATCH) \"\" *", "RECURSIVEMATCH"),
    (b"t LIST (RECURSIVEMATCH REMOTE) \"\" *", "RECURSIVEMATCH"),
    (b"t LIST \"\" * RETURN (FOO)", "return option"),
    (b"t LIST \"\" * FOO (CHILDREN)", "RETURN"),
    (b"t LIST \"\" * RETURN (STATUS (FOO))", "STATUS item"),
    (b"t LIST \"\" ()", "mailbox pattern"),
    (b"t STATUS INBOX ()", "status item"),
    (b"t STATUS INBOX (MESSAGES FOO)", "STATUS item"),
    (b"t STATUS INBOX MESSAGES", "("),
    (b"t APPEND INBOX", "SP"),
    (b"t APPEND INBOX hello", "literal"),
    (b"t APPEND INBOX (\\Seen {1+}\r\nx", "flag"),
    (b"t APPEND INBOX \"31-Feb-2020 00:00:00 +0000\" {1+}\r\nx", "date-time"),
    (b"t APPEND INBOX \"1-Foo-2020 00:00:00 +0000\" {1+}\r\nx", "date-time"),
    (b"t APPEND INBOX \"1-Jan-2020 00:00 +0000\" {1+}\r\nx", "date-time"),
    (b"t APPEND INBOX \"1-Jan-2020 00:00:00 +0099\" {1+}\r\nx", "zone"),
    (b"t APPEND INBOX {1+}\r\nx extra", "literal"),
    (b"t APPEND INBOX UTF8 ({1+}\r\nx)", "literal8"),
    (b"t APPEND INBOX UTF8 (~{1+}\r\nx", ")"),
    (b"t SEARCH", "SP"),
    (b"t SEARCH FOO", "unknown search key"),
    (b"t SEARCH SEEN  ALL", "search key"),
    (b"t SEARCH (SEEN", ")"),
    (b"t SEARCH ()", "search key"),
    (b"t SEARCH OR SEEN", "SP"),
    (b"t SEARCH NOT", "SP"),
    (b"t SEARCH 0", "0"),
    (b"t SEARCH 1:2:3", "invalid sequence"),
    (b"t SEARCH BEFORE 1-Foo-2000", "date"),
    (b"t SEARCH BEFORE 32-Jan-2000", "date"),
    (b"t SEARCH BEFORE 1-Jan-20", "date"),
    (b"t SEARCH LARGER x", "number"),
    (b"t SEARCH LARGER 9223372036854775808", "range"),
    (b"t SEARCH SUBJECT {2}\r\n\xff\xfe", "UTF-8"),
    (b"t SEARCH RETURN (FOO) ALL", "RETURN option"),
    (b"t SEARCH RETURN (SAVE) ALL", "RETURN option"),
    (b"t SEARCH MODSEQ \"/foo\" all 5", "entry name"),
    (b"t SEARCH MODSEQ \"/flags/x\" some 5", "entry type"),
    (b"t SEARCH HEADER Subject", "SP"),
    (b"t FETCH", "SP"),
    (b"t FETCH 1", "SP"),
    (b"t FETCH x FLAGS", "sequence set"),
    (b"t FETCH 0 FLAGS", "0"),
    (b"t FETCH 1 FOO", "FETCH item"),
    (b"t FETCH 1 ()", "FETCH item"),
    (b"t FETCH 1 (FLAGS", ")"),
    (b"t FETCH 1 (ALL)", "macros"),
    (b"t FETCH 1 BODY[", "section"),
    (b"t FETCH 1 BODY[FOO]", "section text"),
    (b"t FETCH 1 BODY[MIME]", "MIME"),
    (b"t FETCH 1 BODY[0]", "non-zero"),
    (b"t FETCH 1 BODY[1.]", "section"),
    (b"t FETCH 1 BODY[HEADER.FIELDS]", "SP"),
    (b"t FETCH 1 BODY[HEADER.FIELDS ()]", "header field name"),
    (b"t FETCH 1 BODY[]<0>", "."),
    (b"t FETCH 1 BODY[]<0.0>", "non-zero"),
    (b"t FETCH 1 BINARY.SIZE[1]<0.1>", "end of command"),
    (b"t FETCH 1 FLAGS[]", "section"),
    (b"t STORE 1 FLAGS", "SP"),
    (b"t STORE 1 +FLAGZ (\\Seen)", "FLAGS"),
    (b"t STORE 1 FLAGS (\\Seen", "SP"),
    (b"t STORE 1 FLAGS (\\)", "flag"),
    (b"t STORE 1 (FOO 1) FLAGS ()", "STORE modifier"),
    (b"t COPY 1", "SP"),
    (b"t MOVE 1:2", "SP"),
    (b"t UID EXPUNGE", "SP"),
    (b"t SORT DATE UTF-8 ALL", "("),
    (b"t SORT (FOO) UTF-8 ALL", "sort key"),
    (b"t SORT () UTF-8 ALL", "sort key"),
    (b"t SORT (DATE) UTF-8", "SP"),
    (b"t THREAD FOO UTF-8 ALL", "thread algorithm"),
    (b"t THREAD REFERENCES UTF-8", "SP"),
    (b"t ID", "SP"),
    (b"t ID (\"a\")", "SP"),
    (b"t ID (\"a\" \"b\" \"c\")", "SP"),
    (b"t ID (\"" + b"f" * 31 + b"\" NIL)", "RFC 2971"),
    (b"t ID (\"f\" \"" + b"v" * 1025 + b"\")", "RFC 2971"),
    (b"t ID (" + b" ".join(b'"f%d" NIL' % i for i in range(31)) + b")", "RFC 2971"),
    (b"t SETQUOTA \"\" (STORAGE)", "SP"),
    (b"t GETQUOTA", "SP"),
    (b"t COMPRESS", "SP"),
]


@pytest.mark.parametrize("raw, message", BAD, ids=[b[0][:40].decode("latin-1") for b in BAD])
def test_bad_commands(raw, message):
    with pytest.raises(ParseError) as e:
        parse_command(Frame((raw,)) if b"{" not in raw else frame_of(raw + b"\r\n"))
    assert message.lower() in e.value.message.lower()
    assert e.value.status == "BAD"
    if raw.startswith(b"t"):
        assert e.value.tag == "t"
    else:
        assert e.value.tag == "*"


@pytest.mark.parametrize("raw", [b't SELECT "&Jjo"', b't SELECT "caf\xc3\xa9"', b"t CREATE a&'+,-b",
                                 b"t LIST a&b %"])
def test_mailbox_name_not_modified_utf7_is_no(raw):
    """A well-formed astring that is not modified UTF-7 (RFC 3501 5.1.3) names no mailbox: NO, not BAD."""
    with pytest.raises(ParseError) as e:
        parse_command(Frame((raw,)))
    assert e.value.status == "NO" and e.value.tag == "t"
    assert "mailbox name" in e.value.message


def test_list_pattern_not_modified_utf7_matches_nothing():
    """LIST/LSUB patterns that are not modified UTF-7 are dropped (they match no mailbox), not a syntax error."""
    assert parse_command(Frame((b"t LIST \"\" !#$&'+,-.0123456789:;<=>?@^_`|[}%*",))).patterns == ()
    cmd = parse_command(Frame((b't LIST "" (&Jjo INBOX)',)))
    assert cmd.patterns == ("INBOX",) and cmd.extended
    assert parse_command(Frame((b't LSUB "" a&b%',))).pattern is None


def test_id_limits_at_the_boundary():
    """RFC 2971 3.3 limits: 30 pairs, 30-octet fields, 1024-octet values pass."""
    cmd = parse(b"t ID (" + b" ".join(b'"f%d" NIL' % i for i in range(30)) + b")")
    assert len(cmd.params) == 30
    assert parse(b"t ID (\"" + b"f" * 30 + b"\" \"" + b"v" * 1024 + b"\")").params[0][1] == "v" * 1024


def test_utf8_mailbox_names_after_enable():
    """RFC 6855 3 / RFC 9051: with UTF-8 names enabled, mailbox arguments are UTF-8 and "&" is literal."""
    raw = frame_of('t SELECT "Entwürfe"\r\n'.encode())
    assert parse_command(raw, utf8=True) == c.Select(tag=T, mailbox="Entwürfe")
    assert parse(b"t SELECT A&B", utf8=True) == c.Select(tag=T, mailbox="A&B")
    with pytest.raises(ParseError):
        parse_command(raw)  # 8-bit is not modified UTF-7


def test_nesting_limit_in_search():
    """max_nesting levels of parentheses/NOT pass; one more is BAD."""
    limits = ParserLimits(max_nesting=4)
    ok = b"t SEARCH " + b"(" * 4 + b"SEEN" + b")" * 4
    assert parse_command(Frame((ok,)), limits=limits).keys == k.FlagKey("\\Seen")
    with pytest.raises(ParseError, match="nested"):
        parse_command(Frame((b"t SEARCH " + b"(" * 5 + b"SEEN" + b")" * 5,)), limits=limits)
    assert parse_command(Frame((b"t SEARCH NOT NOT NOT NOT SEEN",)), limits=limits)
    with pytest.raises(ParseError, match="nested"):
        parse_command(Frame((b"t SEARCH NOT NOT NOT NOT NOT SEEN",)), limits=limits)


def test_deep_nesting_with_default_limit_is_bad_not_recursion_error():
    deep = b"t SEARCH " + b"NOT " * 100000 + b"SEEN"
    with pytest.raises(ParseError):
        parse_command(Frame((deep,)))
    deep = b"t SEARCH " + b"(" * 100000
    with pytest.raises(ParseError):
        parse_command(Frame((deep,)))


def test_sequence_range_limit():
    """max_sequence_ranges elements pass; one more is BAD."""
    limits = ParserLimits(max_sequence_ranges=5)
    assert parse_command(Frame((b"t FETCH 1,2,3,4,5 FLAGS",)), limits=limits).seq_set == S("1,2,3,4,5")
    with pytest.raises(ParseError, match="too many"):
        parse_command(Frame((b"t FETCH 1,2,3,4,5,6 FLAGS",)), limits=limits)
    with pytest.raises(ParseError, match="too many"):
        parse_command(Frame((b"t SEARCH UID 1,2,3,4,5,6",)), limits=limits)


def test_seqset_edge_cases_in_commands():
    assert parse(b"t FETCH * FLAGS").seq_set == S("*")
    assert parse(b"t FETCH 5:1 FLAGS").seq_set.ranges == ((5, 1),)
    assert parse(b"t UID FETCH 4294967295 FLAGS").seq_set == S("4294967295")
    with pytest.raises(ParseError):
        parse(b"t UID FETCH 4294967296 FLAGS")


def test_append_prefix_for_streaming():
    """The session learns mailbox, flags and date of each streamed APPEND message before its data."""
    reader = ImapReader()
    prefixes = []
    stream = (b't APPEND {5}\r\nDraft (\\Seen) "1-Jan-2024 00:00:00 +0000" {3}\r\nabc'
              b" UTF8 (~{2+}\r\nhi) {1+}\r\nz\r\n")
    events = []
    pending = [stream]
    while pending:
        for e in reader.feed(pending.pop()):
            events.append(e)
            if isinstance(e, LiteralAnnounced):
                if e.streamed:
                    prefixes.append(parse_append_prefix(e.prefix))
                reader.accept_literal()
                pending.append(b"")
    assert [p.index for p in prefixes] == [0, 1, 2]
    assert {p.mailbox for p in prefixes} == {"Draft"}
    assert prefixes[0].message.flags == ("\\Seen",)
    assert prefixes[0].message.internal_date == datetime(2024, 1, 1, tzinfo=timezone.utc)
    assert prefixes[0].message.data == StreamedLiteral(3, False)
    assert prefixes[1].message.utf8 and prefixes[1].message.binary
    assert prefixes[2].message == c.AppendMessage(data=StreamedLiteral(1, False))
    cmd = parse_command(events[-1].frame)
    assert [m.data for m in cmd.messages] == [StreamedLiteral(3, False), StreamedLiteral(2, True),
                                              StreamedLiteral(1, False)]


def test_append_prefix_rejects_other_commands():
    with pytest.raises(ParseError):
        parse_append_prefix(Frame((b"t LOGIN {3}",)))
    with pytest.raises(ParseError):
        parse_append_prefix(Frame((b"t NOOP",)))


def test_idle_done_and_sasl_lines():
    assert is_idle_done(Frame((b"DONE",)))
    assert is_idle_done(Frame((b"done",)))
    assert not is_idle_done(Frame((b"DONE x",)))
    assert not is_idle_done(Frame((b"t NOOP",)))
    assert parse_sasl_response(Frame((b"AGZyZWQAc2VjcmV0",))) == b"\x00fred\x00secret"
    assert parse_sasl_response(Frame((b"",))) == b""
    assert parse_sasl_response(Frame((b"*",))) is None
    with pytest.raises(ParseError):
        parse_sasl_response(Frame((b"abc",)))
    with pytest.raises(ParseError):
        parse_sasl_response(Frame((b"{3}", b""), (b"abc",)))


def test_literals_anywhere_an_astring_is_allowed():
    """Mailbox names, search strings and header names may all be literals."""
    cmd = parse(b"t UID COPY 1 {5+}\r\nTrash")
    assert cmd.mailbox == "Trash"
    cmd = parse(b"t SEARCH HEADER {7+}\r\nSubject {3+}\r\nfoo")
    assert cmd.keys == k.HeaderKey("SUBJECT", "foo")
    cmd = parse(b"t STATUS {5}\r\ninbox (MESSAGES)")
    assert cmd.mailbox == "INBOX"


def test_streamed_literal_where_a_string_is_expected_is_bad():
    with pytest.raises(ParseError):
        parse_command(Frame((b"t LOGIN {3}", b" x"), (StreamedLiteral(3, False),)))
