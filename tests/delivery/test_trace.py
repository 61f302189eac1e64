"""The Received stamp's date: made once per second, the same text formatdate makes."""

import email.utils

from mailserver.delivery.envelope import ClientInfo
from mailserver.delivery.trace import received_date, received_header


def test_received_date_is_formatdate_of_each_moment():
    """Every moment of a second, and the seconds around it, read as email.utils.formatdate(localtime=True) does."""
    base = 1_764_650_000.0
    for now in (base, base + 0.25, base + 0.999, base + 1.0, base + 1.5, base - 0.5, base + 86_400 * 180.3):
        assert received_date(now) == email.utils.formatdate(now, localtime=True)


def test_received_header_carries_the_date_of_now():
    """The field ends with the date of the ``now`` given, after the recipient."""
    info = ClientInfo(ip="192.0.2.1", helo="client.example", esmtp=True)
    now = 1_764_650_123.7
    field = received_header("mx.example.test", info, smtputf8=False, queue_id="Q1", recipient="a@example.test",
                            show_auth_user=False, now=now)
    assert field.endswith(f"\tfor <a@example.test>; {email.utils.formatdate(now, localtime=True)}\r\n")
    assert field.startswith("Received: from client.example ([192.0.2.1])\r\n\tby mx.example.test with ESMTP id Q1")
