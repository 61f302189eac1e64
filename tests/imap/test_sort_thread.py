"""SORT (RFC 5256 3, RFC 5957) and THREAD (RFC 5256 4: ORDEREDSUBJECT, REFERENCES) engines and responses."""

from __future__ import annotations

import re

import pytest

from mailserver.imap.commands import SortCriterion
from mailserver.imap.sort import esort_response, ordered_set, sort_messages, sort_response
from mailserver.imap.thread import (
    MAX_REFERENCES,
    ThreadNode,
    is_reply_or_forward,
    thread_messages,
    thread_orderedsubject,
    thread_references,
    thread_response,
)
from mailserver.mime import parse_message
from storage.store import MessageInfo

DAY0 = 1748736000  # 1 Jun 2025 00:00:00 UTC


def day(n: float) -> float:
    """Midnight UTC of June n, 2025 (fractions for hours)."""
    return float(DAY0 + (n - 1) * 86400)


def message(uid: int, headers: str, *, internal: float, body: str = "body\n") -> MessageInfo:
    raw = (headers.strip("\n") + "\n\n" + body).replace("\n", "\r\n").encode()
    cols = parse_message(raw).to_json()
    size = cols.pop("size")
    return MessageInfo(id=uid, mailbox_id=1, uid=uid, modseq=1, flags=0, keywords=(), internal_date=internal,
                       size=size, blob_id=str(uid), thread_id=0, **cols)


def crit(text: str) -> tuple[SortCriterion, ...]:
    out = []
    reverse = False
    for word in text.split():
        if word.upper() == "REVERSE":
            reverse = True
            continue
        out.append(SortCriterion(key=word.upper(), reverse=reverse))
        reverse = False
    return tuple(out)


# ------------------------------------------------------------------------------------------------------- SORT

SORT_MSGS = [
    message(1, 'From: "Zed" <zed@example.org>\nTo: bob@b.example\nSubject: Re: [list] Budget (fwd)\n'
               "Date: Tue, 3 Jun 2025 10:00:00 +0000", internal=day(5)),
    message(2, 'From: alice@example.org\nTo: "Zora" <carl@c.example>\nCc: dan@d.example\nSubject: budget\n'
               "Date: Mon, 2 Jun 2025 10:00:00 +0000", internal=day(4)),
    message(3, "From: =?utf-8?q?=C3=89mile?= <emile@e.example>\nTo: Team: x@y.example;\nSubject: Fwd: Agenda",
            internal=day(1)),  # no Date: the internal date is the sent date
    message(4, "From: Bob <BOB@example.org>\nSubject: agenda\nDate: Mon, 2 Jun 2025 12:00:00 +0200",
            internal=day(3)),  # same instant as message 2
    message(5, "Subject:\nDate: Wed, 4 Jun 2025 08:00:00 +0000", internal=day(2)),
]


@pytest.mark.parametrize(
    "criteria, expected",
    [
        ("ARRIVAL", [3, 5, 4, 2, 1]),
        ("REVERSE ARRIVAL", [1, 2, 4, 5, 3]),
        # DATE: Date header in UTC, else the internal date; equal dates in sequence order, even reversed
        ("DATE", [3, 2, 4, 1, 5]),
        ("REVERSE DATE", [5, 1, 2, 4, 3]),
        # FROM/TO/CC: addr-mailbox of the first address, i;ascii-casemap; missing sorts first
        ("FROM", [5, 2, 4, 3, 1]),
        ("REVERSE FROM", [1, 3, 4, 2, 5]),
        ("TO", [4, 5, 1, 2, 3]),  # a group sorts by its name
        ("CC", [1, 3, 4, 5, 2]),
        # RFC 5957: decoded display name, else the addr-spec; non-ASCII after ASCII (octet order)
        ("DISPLAYFROM", [5, 2, 4, 1, 3]),
        ("DISPLAYTO", [4, 5, 1, 3, 2]),
        # SUBJECT: base subject (re/fwd/blobs/(fwd) removed), casemapped
        ("SUBJECT", [5, 3, 4, 1, 2]),
        ("REVERSE SUBJECT", [1, 2, 3, 4, 5]),
        ("SUBJECT REVERSE DATE", [5, 4, 3, 1, 2]),
        ("SUBJECT ARRIVAL", [5, 3, 4, 2, 1]),
    ],
)
def test_sort_keys(criteria, expected):
    assert sort_messages(crit(criteria), SORT_MSGS) == expected


def test_sort_size_ties_by_sequence_number():
    msgs = [message(uid, "Subject: s", internal=day(1), body=body)
            for uid, body in [(1, "x" * 10), (2, "x" * 20), (3, "x" * 10), (4, "x" * 15)]]
    assert sort_messages(crit("SIZE"), msgs) == [1, 3, 4, 2]
    assert sort_messages(crit("REVERSE SIZE"), msgs) == [2, 4, 1, 3]
    # ties follow sequence numbers, not UIDs or input order
    seq = {1: 4, 2: 3, 3: 2, 4: 1}
    assert sort_messages(crit("SIZE"), msgs, seq_of=seq) == [3, 1, 4, 2]
    assert sort_messages(crit("SIZE"), list(reversed(msgs)), seq_of=seq.__getitem__) == [3, 1, 4, 2]


def test_sort_of_nothing():
    assert sort_messages(crit("DATE"), []) == []


def test_sort_response():
    assert sort_response([]) == b"* SORT\r\n"
    assert sort_response([3, 1, 2]) == b"* SORT 3 1 2\r\n"
    assert sort_response([3, 1], highest_modseq=9) == b"* SORT 3 1 (MODSEQ 9)\r\n"


def test_ordered_set_collapses_only_ascending_runs():
    assert ordered_set([5, 3, 4, 2, 1]) == "5,3:4,2,1"
    assert ordered_set([1, 2, 3, 7, 8]) == "1:3,7:8"
    assert ordered_set([]) == ""


@pytest.mark.parametrize(
    "uid, options, kw, expected",
    [
        (False, ("MIN",), {}, b'* ESEARCH (TAG "s") MIN 5'),
        (False, ("MAX",), {}, b'* ESEARCH (TAG "s") MAX 1'),
        (False, (), {}, b'* ESEARCH (TAG "s") ALL 5,3:4,2,1'),
        (True, ("COUNT", "ALL"), {}, b'* ESEARCH (TAG "s") UID COUNT 5 ALL 5,3:4,2,1'),
        (False, ("MIN",), {"modseq_of": {5: 50, 1: 10, 2: 20, 3: 30, 4: 40}.__getitem__},
         b'* ESEARCH (TAG "s") MIN 5 MODSEQ 50'),
        (False, ("COUNT",), {"partial": (2, 4)}, b'* ESEARCH (TAG "s") COUNT 5 PARTIAL (2:4 3:4,2)'),
        (False, ("COUNT",), {"partial": (6, 9)}, b'* ESEARCH (TAG "s") COUNT 5 PARTIAL (6:9 NIL)'),
    ],
)
def test_esort_response(uid, options, kw, expected):
    assert esort_response("s", uid, [5, 3, 4, 2, 1], options, **kw) == expected + b"\r\n"


def test_esort_response_empty():
    assert esort_response("s", False, [], ("MIN", "COUNT")) == b'* ESEARCH (TAG "s") COUNT 0\r\n'
    assert esort_response("s", True, [], ()) == b'* ESEARCH (TAG "s") UID\r\n'


# ------------------------------------------------------------------------------------------- THREAD responses

def parse_threads(text: str) -> list[ThreadNode]:
    """Test helper: the RFC 5256 4 thread-list grammar back into ThreadNode trees."""
    pos = 0

    def thread_list() -> ThreadNode:
        nonlocal pos
        assert text[pos] == "("
        pos += 1
        root = ThreadNode(None)
        tail = root
        while text[pos] != ")":
            if text[pos] == " ":
                pos += 1
            elif text[pos] == "(":
                while text[pos] == "(":
                    tail.children.append(thread_list())
            else:
                m = re.match(r"\d+", text[pos:])
                node = ThreadNode(int(m.group()))
                pos += m.end()
                tail.children.append(node)
                tail = node
        pos += 1
        # a list starting with a number is that message; one starting with nested lists is a dummy
        return root.children[0] if len(root.children) == 1 and root.children[0].uid is not None else root

    threads = []
    while pos < len(text):
        threads.append(thread_list())
    return threads


@pytest.mark.parametrize(
    "wire",
    [
        # RFC 5256 4 grammar examples
        "(2)(3 6 (4 23)(44 7 96))",
        "((3)(5))",
        # a long response mixing lone messages, chains, nested siblings and dummies
        "(166)(167)((170)(179))(171)(174 (175)(176)(178)(181)(180))(177 (183)(182)(188 (184)(185))(189))"
        "((194)(195 196))(197 198)(205 206 207)(208)",
    ],
)
def test_thread_response_round_trips(wire):
    assert thread_response(parse_threads(wire)) == b"* THREAD " + wire.encode() + b"\r\n"


def test_thread_response_structure_and_numbers():
    tree = [ThreadNode(2), ThreadNode(3, [ThreadNode(6, [ThreadNode(4, [ThreadNode(23)]),
                                                         ThreadNode(44, [ThreadNode(7, [ThreadNode(96)])])])])]
    assert thread_response(tree) == b"* THREAD (2)(3 6 (4 23)(44 7 96))\r\n"
    assert thread_response([ThreadNode(None, [ThreadNode(3), ThreadNode(5)])]) == b"* THREAD ((3)(5))\r\n"
    assert thread_response(tree, number=lambda uid: uid + 100) == b"* THREAD (102)(103 106 (104 123)(144 107 196))\r\n"
    assert thread_response([]) == b"* THREAD\r\n"


# ------------------------------------------------------------------------------------------ THREAD algorithms

def mailbox(specs: list[tuple]) -> list[MessageInfo]:
    """specs: (message-id, references, in-reply-to, subject, day) per message; UID = sequence number."""
    out = []
    for uid, (mid, refs, irt, subject, when) in enumerate(specs, start=1):
        lines = [f"Subject: {subject}", f"Date: {format_date(when)}"]
        if mid:
            lines.append(f"Message-ID: {mid}")
        if refs:
            lines.append(f"References: {refs}")
        if irt:
            lines.append(f"In-Reply-To: {irt}")
        out.append(message(uid, "\n".join(lines), internal=day(20)))
    return out


def format_date(when: float) -> str:
    import email.utils

    return email.utils.formatdate(day(when), usegmt=True)


def test_orderedsubject():
    msgs = mailbox([
        ("<1@x>", "", "", "Agenda", 3),
        ("<2@x>", "", "", "Re: budget", 1),
        ("<3@x>", "", "", "Fwd: agenda", 2),
        ("<4@x>", "", "", "budget", 4),
        ("<5@x>", "", "", "Agenda (fwd)", 2),  # same date as 3: sequence order
        ("<6@x>", "", "", "other", 5),
    ])
    # threads by base subject, first message the parent of the rest (no grandchildren), threads by first date
    assert thread_response(thread_orderedsubject(msgs)) == b"* THREAD (2 4)(3 (5)(1))(6)\r\n"


REFERENCES_CASES = [
    # replies are children, siblings sorted by sent date
    ([("<a@x>", "", "", "topic", 1), ("<b@x>", "<a@x>", "", "Re: topic", 3), ("<c@x>", "<a@x>", "", "Re: topic", 2),
      ("<d@x>", "<a@x> <c@x>", "", "Re: topic", 4)],
     "(1 (3 4)(2))"),
    # a missing parent becomes a dummy; with two children at the top it stays
    ([("<p@x>", "<gone@x>", "", "x", 1), ("<q@x>", "<gone@x>", "", "y", 2)], "((1)(2))"),
    # a dummy with one child at the top is dropped
    ([("<p@x>", "<gone@x>", "", "x", 1), ("<q@x>", "", "", "y", 2)], "(1)(2)"),
    # a dummy in the middle of a thread gives its children to its parent
    ([("<a@x>", "", "", "t", 1), ("<c@x>", "<a@x> <gone@x>", "", "u", 2), ("<d@x>", "<a@x> <gone@x>", "", "v", 3)],
     "(1 (2)(3))"),
    # References that loop are not followed into a loop
    ([("<l1@x>", "<l2@x>", "", "loop a", 1), ("<l2@x>", "<l1@x>", "", "loop b", 2)], "(2 1)"),
    ([("<self@x>", "<self@x>", "", "me", 1)], "(1)"),
    # duplicate Message-IDs: the second is a message of its own
    ([("<dup@x>", "", "", "first", 1), ("<dup@x>", "", "", "second", 2), ("<r@x>", "<dup@x>", "", "reply", 3)],
     "(1 3)(2)"),
    # no Message-ID at all
    ([("", "", "", "a", 1), ("", "", "", "b", 2)], "(1)(2)"),
    # In-Reply-To when there are no References
    ([("<p@x>", "", "", "q", 1), ("<r@x>", "", "<p@x> <other@x>", "r", 2)], "(1 2)"),
    # a truncated References list still links
    ([("<r1@x>", "", "", "s", 1), ("<r2@x>", "<r1@x>", "", "s", 2), ("<r3@x>", "<r2@x>", "", "s", 3)], "(1 2 3)"),
    # a later full References line moves a message under its real parent
    ([("<a@x>", "", "", "m", 1), ("<b@x>", "<a@x>", "", "n", 2), ("<c@x>", "<b@x>", "", "o", 3),
      ("<e@x>", "<a@x> <c@x>", "", "p", 4)],
     "(1 2 3 4)"),
    # step 5: a reply with the same base subject joins the original
    ([("<m1@x>", "", "", "Meeting", 1), ("<m2@x>", "", "", "Re: Meeting", 2)], "(1 2)"),
    ([("<m2@x>", "", "", "Re: Meeting", 1), ("<m1@x>", "", "", "Meeting", 2)], "(2 1)"),
    # step 5: two originals with one subject get a dummy parent
    ([("<l1@x>", "", "", "Lunch", 1), ("<l2@x>", "", "", "lunch", 2)], "((1)(2))"),
    # step 5: a dummy thread and a message of the same subject: the message joins the dummy
    ([("<p@x>", "<gone@x>", "", "Plan", 1), ("<q@x>", "<gone@x>", "", "Re: Plan", 3), ("<s@x>", "", "", "Plan", 2)],
     "((1)(3)(2))"),
    # empty subjects are never merged
    ([("<e1@x>", "", "", "", 1), ("<e2@x>", "", "", "Re:", 2)], "(1)(2)"),
    # the top level is ordered by sent date, a dummy by its first child
    ([("<a@x>", "<gone@x>", "", "late", 5), ("<b@x>", "", "", "early", 1), ("<c@x>", "<gone@x>", "", "later", 4)],
     "(2)((3)(1))"),
]


@pytest.mark.parametrize("specs, expected", REFERENCES_CASES)
def test_references(specs, expected):
    msgs = mailbox(specs)
    assert thread_response(thread_references(msgs)) == b"* THREAD " + expected.encode() + b"\r\n"


def test_references_with_a_subset_and_sequence_numbers():
    """THREAD over search results: messages not in the set are dummies; responses may print sequence numbers."""
    msgs = mailbox([("<a@x>", "", "", "t", 1), ("<b@x>", "<a@x>", "", "Re: t", 2), ("<c@x>", "<a@x> <b@x>", "", "t", 3)])
    subset = [msgs[0], msgs[2]]
    threads = thread_messages("references", subset)
    assert thread_response(threads) == b"* THREAD (1 3)\r\n"
    assert thread_response(threads, number={1: 10, 3: 30}.__getitem__) == b"* THREAD (10 30)\r\n"


def quick(uid: int, message_id: str, references: str, subject: str, when: float) -> MessageInfo:
    """A MessageInfo without parsing (for large mailboxes)."""
    return MessageInfo(id=uid, mailbox_id=1, uid=uid, modseq=1, flags=0, keywords=(), internal_date=day(20), size=1,
                       blob_id="", envelope="[]", bodystructure="{}", header_size=0, subject=subject, from_addr="",
                       to_addr="", cc_addr="", date_sent=day(when), message_id=message_id, in_reply_to="",
                       references=references, preview="", has_attachment=False, thread_id=0)


def test_deep_reply_chains_and_wide_trees_do_not_recurse():
    """A 5,000-deep chain (each reply listing its 20 predecessors) threads, sorts and renders without recursion."""
    n = 5000
    chain = [quick(i + 1, f"<m{i}@x>", " ".join(f"<m{j}@x>" for j in range(max(0, i - 20), i)), f"s{i}", 1)
             for i in range(n)]
    expected = b"* THREAD (" + b" ".join(b"%d" % (i + 1) for i in range(n)) + b")\r\n"
    assert thread_response(thread_references(chain)) == expected
    # the same chain arriving newest first
    seq = {m.uid: n - i for i, m in enumerate(chain)}
    assert thread_response(thread_references(list(reversed(chain)), seq_of=seq)) == expected
    # a binary tree 12 levels deep with branching at every level
    tree = [quick(i + 1, f"<b{i}@x>", f"<b{(i - 1) // 2}@x>" if i else "", f"t{i}", 1) for i in range(4095)]
    out = thread_response(thread_references(tree))
    assert out.startswith(b"* THREAD (1 (2 (4 (8 (16 ") and out.count(b"(") == 4095


@pytest.mark.parametrize("extra, expected", [(99, b"* THREAD (1 2)\r\n"), (100, b"* THREAD (1)(2)\r\n")])
def test_only_the_last_max_references_are_linked(extra, expected):
    """MAX_REFERENCES = 100: with 101 msg-ids the first (here the only known parent) is ignored."""
    assert MAX_REFERENCES == 100
    refs = " ".join(["<root@x>"] + [f"<gap{i}@x>" for i in range(extra)])
    msgs = [quick(1, "<root@x>", "", "root", 1), quick(2, "<leaf@x>", refs, "leaf", 2)]
    assert thread_response(thread_references(msgs)) == expected


def test_unknown_algorithm():
    with pytest.raises(ValueError):
        thread_messages("FANCY", [])


@pytest.mark.parametrize(
    "subject, reply",
    [
        ("Re: hello", True),
        ("RE: [list] hello", True),
        ("[list] Re: hello", True),
        ("Fwd: hello", True),
        ("fw: hello", True),
        ("hello (fwd)", True),
        ("[Fwd: hello]", True),
        ("hello", False),
        ("[list] hello", False),
        ("Regarding: hello", False),
        ("=?utf-8?q?Re=3A_hello?=", True),
        ("", False),
    ],
)
def test_is_reply_or_forward(subject, reply):
    assert is_reply_or_forward(subject) is reply
