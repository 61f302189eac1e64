"""Sequence sets: parsing, resolution against the mailbox size, compact rendering."""

import pytest

from mailserver.imap.seqset import SeqSet, SeqSetError, compact, intersect


@pytest.mark.parametrize(
    "text, ranges",
    [
        ("1", ((1, 1),)),
        ("*", ((None, None),)),
        ("1:3,5,7:*", ((1, 3), (5, 5), (7, None))),
        ("5:1", ((5, 1),)),
        ("*:4", ((None, 4),)),
        ("4294967295", ((4294967295, 4294967295),)),
        ("1:4294967295", ((1, 4294967295),)),
    ],
)
def test_parse_good(text, ranges):
    seq = SeqSet.parse(text)
    assert seq.ranges == ranges
    assert str(seq) == text
    assert SeqSet.parse(text.encode()) == seq


@pytest.mark.parametrize(
    "text",
    ["", "0", "0:5", "5:0", "4294967296", "1,", ",1", "1::2", "1:2:3", "a", "1.5", "-1", "1,,2", " 1", "١"],
)
def test_parse_bad(text):
    with pytest.raises(SeqSetError):
        SeqSet.parse(text)


@pytest.mark.parametrize("digits", [11, 4301, 65000])
def test_huge_number_is_a_seqset_error(digits):
    """Found by tests/fuzz: a number of thousands of digits gave Python's int-conversion ValueError (not a
    SeqSetError), which escaped the parser and the session; leading zeros still count as the number they spell."""
    for text in ("9" * digits, "1:" + "9" * digits, "*," + "9" * digits):
        with pytest.raises(SeqSetError, match="out of range"):
            SeqSet.parse(text)
    assert SeqSet.parse("0" * digits + "7").ranges == ((7, 7),)


def test_max_ranges_limit():
    """max_ranges elements pass; one more is refused."""
    text = ",".join(str(i) for i in range(1, 11))
    assert len(SeqSet.parse(text, max_ranges=10).ranges) == 10
    with pytest.raises(SeqSetError, match="too many"):
        SeqSet.parse(text + ",11", max_ranges=10)


def test_resolve_orders_merges_and_replaces_star():
    seq = SeqSet.parse("7:*,5:1,3,20")
    assert seq.resolve(10) == [(1, 5), (7, 10), (20, 20)]
    assert seq.resolve(10, clip=True) == [(1, 5), (7, 10)]
    assert list(seq.iter(8, clip=True)) == [1, 2, 3, 4, 5, 7, 8]
    assert seq.count(10, clip=True) == 9


def test_uid_range_beyond_largest_includes_largest():
    """RFC 9051 6.4.8: "n:*" with n above the largest UID still names the largest UID."""
    seq = SeqSet.parse("100:*")
    assert seq.resolve(50) == [(50, 100)]
    assert seq.contains(50, 50)
    assert not seq.contains(49, 50)


def test_star_in_empty_mailbox():
    assert SeqSet.parse("*").resolve(0) == []
    assert SeqSet.parse("1:*").resolve(0, clip=True) == []
    assert SeqSet.parse("1:*").resolve(0) == [(1, 1)]


def test_adjacent_ranges_merge():
    assert SeqSet.parse("1:3,4:6,8").resolve(10) == [(1, 6), (8, 8)]


def test_from_numbers_and_compact():
    assert compact([5, 1, 2, 3, 9, 10, 3]) == "1:3,5,9:10"
    assert compact([]) == ""
    assert compact([4294967295]) == "4294967295"
    assert SeqSet.from_numbers([1, 2]).ranges == ((1, 2),)


def test_uses_star():
    assert SeqSet.parse("1:*").uses_star
    assert not SeqSet.parse("1:5").uses_star


def test_intersect_with_existing_uids():
    uids = [2, 4, 6, 8, 10]
    assert intersect(SeqSet.parse("3:8,10:*").resolve(10), uids) == [4, 6, 8, 10]
