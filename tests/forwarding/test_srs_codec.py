"""SRS addresses (delivery/srs.py) without sockets: the forms, their checks, and hostile local parts."""

from __future__ import annotations

import pytest

from mailserver.delivery import srs
from mailserver.delivery.srs import MAX_LOCAL, Srs, SrsError

NOW = 1_764_547_200.0  # 2025-12-01 00:00 UTC
DAY = 86400
CODEC = Srs("example.test", (b"new secret", b"old secret"), max_age_days=21)


def local(address: str) -> str:
    return address.rpartition("@")[0]


def test_srs0_form_and_reverse():
    """SRS0=HHH=TT=orig-domain=orig-local@our-domain, reversed to the original sender."""
    out = CODEC.forward("Alice.Smith@sender.test", NOW)
    tag, h, tt, domain, user = local(out).split("=")
    assert (tag, domain, user, out.rpartition("@")[2]) == ("SRS0", "sender.test", "Alice.Smith", "example.test")
    assert len(h) == srs.HASH_LENGTH and tt == srs.timestamp(NOW)
    assert CODEC.reverse(local(out), NOW) == "Alice.Smith@sender.test"


def test_reverse_is_case_insensitive():
    """A relay that folds the local part's case does not break the bounce."""
    out = local(CODEC.forward("alice@sender.test", NOW))
    assert CODEC.reverse(out.lower(), NOW) == "alice@sender.test"
    assert CODEC.reverse(out.upper(), NOW) == "ALICE@SENDER.TEST"


def test_local_part_with_separator_survives():
    out = CODEC.forward("a=b=c@sender.test", NOW)
    assert CODEC.reverse(local(out), NOW) == "a=b=c@sender.test"


def test_old_secret_is_accepted_and_unknown_is_not():
    old = Srs("example.test", (b"old secret",))
    out = local(old.forward("alice@sender.test", NOW))
    assert CODEC.reverse(out, NOW) == "alice@sender.test"
    with pytest.raises(SrsError, match="hash"):
        Srs("example.test", (b"another secret",)).reverse(out, NOW)


def test_age_limit():
    out = local(CODEC.forward("alice@sender.test", NOW))
    assert CODEC.reverse(out, NOW + 21 * DAY) == "alice@sender.test"
    with pytest.raises(SrsError, match="expired"):
        CODEC.reverse(out, NOW + 22 * DAY)
    with pytest.raises(SrsError, match="expired"):
        CODEC.reverse(out, NOW - DAY)  # from the future


def test_tampered_parts_are_refused():
    out = local(CODEC.forward("alice@sender.test", NOW))
    tag, h, tt, domain, user = out.split("=")
    for bad in (f"{tag}={h}={tt}={domain}=mallory", f"{tag}={h}={tt}=evil.test={user}",
                f"{tag}={'A' * len(h)}={tt}={domain}={user}", f"{tag}={h[:-1]}={tt}={domain}={user}"):
        with pytest.raises(SrsError, match="hash"):
            CODEC.reverse(bad, NOW)


def test_srs1_for_an_srs0_of_another_forwarder():
    """Shevek 4.3: SRS0 of fwd.test becomes SRS1=HHH=fwd.test==…; its bounce goes back to fwd.test unchanged."""
    first = Srs("fwd.test", (b"their secret",)).forward("alice@sender.test", NOW)
    out = CODEC.forward(first, NOW)
    opaque = local(first)[4:]
    assert local(out).startswith("SRS1=") and local(out).endswith("=fwd.test=" + opaque)
    assert CODEC.reverse(local(out), NOW) == first
    # re-forwarded again (an SRS1 of a third party): the first forwarder and its opaque part are kept
    third = Srs("third.test", (b"third secret",)).forward(first, NOW)
    again = CODEC.forward(third, NOW)
    assert CODEC.reverse(local(again), NOW) == first


@pytest.mark.parametrize("bad", [
    "SRS0=", "SRS0=abc", "SRS0=hhhhhhhh=AA=sender.test", "SRS0=hhhhhhhh=AA==alice", "SRS0=hhhhhhhh=AA=sender.test=",
    "SRS0=hhhhhhhh=A1=sender.test=alice",  # "1" is not base32
    "SRS0=hhhhhhhh=A=sender.test=alice", "SRS0=hhhhhhhh=AAA=sender.test=alice", "SRS0=hhhhhhhh=é!=sender.test=alice",
    "SRS1=", "SRS1=hhhhhhhh", "SRS1=hhhhhhhh=fwd.test", "SRS1=hhhhhhhh=fwd.test=x", "SRS1=hhhhhhhh==",
    "SRS1=hhhhhhhh=fwd.test==", "SRS2=x=y", "alice",
])
def test_hostile_local_parts_are_refused(bad):
    with pytest.raises(SrsError):
        CODEC.reverse(bad, NOW)


def test_bad_timestamps_are_refused_before_the_hash():
    with pytest.raises(SrsError, match="bad timestamp"):
        CODEC.reverse("SRS0=hhhhhhhh=0O=sender.test=alice", NOW)


def test_overlong_local_part():
    """A valid SRS local part of MAX_LOCAL octets is reversed; one octet more is refused before anything else."""
    overhead = len(local(CODEC.forward("x@sender.test", NOW))) - 1
    user = "a" * (MAX_LOCAL - overhead)
    exact = local(CODEC.forward(user + "@sender.test", NOW))
    assert len(exact) == MAX_LOCAL and CODEC.reverse(exact, NOW) == user + "@sender.test"
    longer = local(CODEC.forward(user + "a@sender.test", NOW))
    with pytest.raises(SrsError, match="longer than"):
        CODEC.reverse(longer, NOW)
    with pytest.raises(SrsError, match="longer than"):
        CODEC.reverse("SRS0=" + "=" * 100_000, NOW)


def test_timestamp_wraps():
    assert srs.timestamp_day(srs.timestamp(NOW)) == int(NOW // DAY) % 1024
    out = local(CODEC.forward("alice@sender.test", 1023 * DAY))
    assert CODEC.reverse(out, 1024 * DAY + 3 * DAY) == "alice@sender.test"  # day 1023 -> day 3: four days old


def test_srs_local_parts_may_pass_64_octets_others_may_not():
    """RFC 5321 4.5.3.1.1: 64 octets; SRS local parts carry a whole address, so they may reach 255."""
    from mailserver.address import AddressError, parse_mailbox

    assert parse_mailbox("SRS0=" + "a" * 200 + "@example.test").local_part.startswith("SRS0=")
    assert parse_mailbox("srs1=" + "a" * 240 + "@x.test")
    parse_mailbox("b" * 64 + "@example.test")
    with pytest.raises(AddressError, match="too long"):
        parse_mailbox("b" * 65 + "@example.test")
