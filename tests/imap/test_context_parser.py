"""The RFC 5267 grammar: CONTEXT, UPDATE and PARTIAL return options of SEARCH and SORT, and CANCELUPDATE, good and
bad, from bytes on the wire to typed commands."""

from __future__ import annotations

import pytest

from mailserver.imap import commands as c
from mailserver.imap import searchkeys as k
from mailserver.imap.parser import parse_command
from mailserver.imap.wire import ImapReader, ParseError

T = "t"
ARRIVAL = (c.SortCriterion(key="ARRIVAL"),)


def parse(raw: bytes) -> c.Command:
    events = list(ImapReader(stream_commands=()).feed(raw + b"\r\n"))
    assert len(events) == 1, events
    return parse_command(events[0].frame)


GOOD = [
    (b"t SEARCH RETURN (CONTEXT COUNT) UNDELETED",
     c.Search(tag=T, keys=k.FlagKey("\\Deleted", False), return_options=("CONTEXT", "COUNT"))),
    (b"t UID SEARCH RETURN (UPDATE COUNT) DELETED",
     c.Search(tag=T, uid=True, keys=k.FlagKey("\\Deleted"), return_options=("UPDATE", "COUNT"))),
    (b"t SEARCH RETURN (update) SEEN", c.Search(tag=T, keys=k.FlagKey("\\Seen"), return_options=("UPDATE",))),
    (b"t SEARCH RETURN (PARTIAL 1:500) ALL",
     c.Search(tag=T, keys=k.All(), return_options=(), partial=(1, 500))),
    # RFC 5267 5: "A range 500:400 is the same as 400:500."
    (b"t SEARCH RETURN (partial 4:2) ALL", c.Search(tag=T, keys=k.All(), return_options=(), partial=(2, 4))),
    (b"t SEARCH RETURN (COUNT PARTIAL 7:7 UPDATE CONTEXT MIN) SEEN",
     c.Search(tag=T, keys=k.FlagKey("\\Seen"), return_options=("COUNT", "UPDATE", "CONTEXT", "MIN"),
              partial=(7, 7))),
    (b"t SEARCH RETURN (PARTIAL 4294967295:1) ALL",
     c.Search(tag=T, keys=k.All(), return_options=(), partial=(1, 4294967295))),
    (b"t SEARCH RETURN (UPDATE UPDATE) ALL", c.Search(tag=T, keys=k.All(), return_options=("UPDATE",))),
    (b"t SORT RETURN (PARTIAL 2:4) (ARRIVAL) US-ASCII ALL",
     c.Sort(tag=T, criteria=ARRIVAL, charset="US-ASCII", keys=k.All(), return_options=(), partial=(2, 4))),
    (b"t UID SORT RETURN (UPDATE CONTEXT ALL) (REVERSE DISPLAYFROM) UTF-8 UNSEEN",
     c.Sort(tag=T, uid=True, criteria=(c.SortCriterion(key="DISPLAYFROM", reverse=True),), charset="UTF-8",
            keys=k.FlagKey("\\Seen", False), return_options=("UPDATE", "CONTEXT", "ALL"))),
    (b't CANCELUPDATE "B01"', c.CancelUpdate(tag=T, tags=("B01",))),
    (b't cancelupdate "B01" "a b" "B01" "q\\"t"', c.CancelUpdate(tag=T, tags=("B01", "a b", 'q"t'))),
]


@pytest.mark.parametrize("raw, command", GOOD, ids=[g[0].decode() for g in GOOD])
def test_good(raw, command):
    assert parse(raw) == command


BAD = [
    b"t SEARCH RETURN (PARTIAL) ALL",  # the range is mandatory
    b"t SEARCH RETURN (PARTIAL 1) ALL",
    b"t SEARCH RETURN (PARTIAL 1:*) ALL",  # partial-range cannot contain "*"
    b"t SEARCH RETURN (PARTIAL *:1) ALL",
    b"t SEARCH RETURN (PARTIAL 0:5) ALL",  # nz-number
    b"t SEARCH RETURN (PARTIAL -1:-5) ALL",  # RFC 9394's negative ranges are not offered
    b"t SEARCH RETURN (PARTIAL 1:4294967296) ALL",
    b"t SEARCH RETURN (PARTIAL 1:2 PARTIAL 3:4) ALL",
    b"t SEARCH RETURN (PARTIAL 1:2 ALL) ALL",  # RFC 5267 4.4: one PARTIAL or one ALL
    b"t SEARCH RETURN (ALL PARTIAL 1:2) ALL",
    b"t SORT RETURN (ALL PARTIAL 1:2) (ARRIVAL) UTF-8 ALL",
    b"t SEARCH RETURN (SAVE) ALL",  # SEARCHRES is not offered
    b"t SEARCH RETURN (PARTIAL 1:2COUNT) ALL",
    b"t CANCELUPDATE",
    b"t CANCELUPDATE B01",  # quoted, RFC 5267 5
    b't CANCELUPDATE "B01"  "B02"',
    b"t UID CANCELUPDATE \"B01\"",
]


@pytest.mark.parametrize("raw", BAD, ids=[b.decode() for b in BAD])
def test_bad(raw):
    with pytest.raises(ParseError) as e:
        parse(raw)
    assert e.value.status == "BAD"
    assert e.value.tag == T
