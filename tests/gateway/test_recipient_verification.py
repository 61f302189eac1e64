"""Gateway mode: recipients of a relay domain are verified at RCPT, by a callout to its relay_to host (a real SMTP
server on loopback) or by a static list, so unknown users get 550 5.1.1 instead of a later bounce."""

from __future__ import annotations

import smtplib
from contextlib import contextmanager

from twisted.internet import task

from tests import harness
from tests.outbound.receiver import receiver

ANSWERS = {"known@relay.test": "250 2.1.5 OK", "Mixed@relay.test": "250 2.1.5 OK",
           "gone@relay.test": "550 5.1.1 no such user", "busy@relay.test": "451 4.3.0 try later",
           "slow@relay.test": "hang"}


def answer(address: str) -> str:
    return ANSWERS.get(address, "550 5.1.1 unknown")


@contextmanager
def gateway(tmp_path, verify: dict, rcpt=answer, **config):
    with receiver(rcpt=rcpt) as rx:
        domains = [{"name": "example.test"},
                   {"name": "relay.test", "mode": "relay", "relay_to": f"127.0.0.1:{rx.port}"},
                   {"name": "open.test", "mode": "relay", "relay_to": f"127.0.0.1:{rx.port}"}]
        with harness.running_server(tmp_path, domain=domains,
                                    gateway={"domain": {"relay.test": verify}, "callout_timeout": 20.0,
                                             "positive_ttl": 600.0, "negative_ttl": 60.0}, **config) as srv:
            clock = task.Clock()
            clock.advance(1_800_000_000)
            srv.services.verifier.clock = clock
            yield srv, rx, clock


def rcpt(srv, *addresses) -> list[tuple[int, bytes]]:
    with smtplib.SMTP("127.0.0.1", srv.port("smtp"), timeout=60) as c:
        c.ehlo("client.test")
        assert c.mail("someone@elsewhere.test")[0] == 250
        return [c.rcpt(a) for a in addresses]


def test_callout_valid_invalid_and_cached(tmp_path):
    asked = []
    with gateway(tmp_path, {"verify": "callout"}, rcpt=lambda a: (asked.append(a), answer(a))[1]) as (srv, rx, clock):
        assert rcpt(srv, "known@relay.test", "gone@relay.test") == [
            (250, b"2.1.5 Recipient OK"), (550, b"5.1.1 Mailbox does not exist")]
        assert asked == ["known@relay.test", "gone@relay.test"]
        # the probe sent no message
        assert rx.transactions == []
        # cache hits: no new probe, for the positive and the negative answer, case-insensitively
        assert [r[0] for r in rcpt(srv, "KNOWN@relay.test", "gone@RELAY.test")] == [250, 550]
        assert asked == ["known@relay.test", "gone@relay.test"]
        assert srv.services.verifier.probes == 2
        # the cache is the store's (shared by every node)
        assert srv.store.callout_cached("known@relay.test", clock.seconds()) is True
        assert srv.store.callout_cached("gone@relay.test", clock.seconds()) is False
        # past the negative TTL the unknown address is asked again, the known one is not (positive TTL 600 s)
        clock.advance(61)
        assert [r[0] for r in rcpt(srv, "known@relay.test", "gone@relay.test")] == [250, 550]
        assert asked == ["known@relay.test", "gone@relay.test", "gone@relay.test"]
        clock.advance(600)
        assert rcpt(srv, "known@relay.test")[0][0] == 250
        assert asked[-1] == "known@relay.test" and len(asked) == 4


def test_callout_tempfail_answers_451_and_is_not_remembered(tmp_path):
    asked = []
    with gateway(tmp_path, {"verify": "callout"}, rcpt=lambda a: (asked.append(a), answer(a))[1]) as (srv, rx, clock):
        assert rcpt(srv, "busy@relay.test") == [(451, b"4.4.3 Recipient verification failed, try again later")]
        assert rcpt(srv, "busy@relay.test")[0][0] == 451
        assert asked == ["busy@relay.test", "busy@relay.test"]
        assert srv.store.callout_cached("busy@relay.test", clock.seconds()) is None


def test_callout_to_a_host_that_is_down_tempfails(tmp_path):
    from tests.outbound.receiver import closed_port

    port = closed_port()
    domains = [{"name": "example.test"}, {"name": "relay.test", "mode": "relay", "relay_to": f"127.0.0.1:{port}"}]
    with harness.running_server(tmp_path, domain=domains, gateway={"domain": {"relay.test": {"verify": "callout"}}}) \
            as srv:
        assert rcpt(srv, "known@relay.test")[0][0] == 451


def test_callout_time_limit(tmp_path):
    """A relay host that never answers RCPT: the probe is cut at callout_timeout (the injected clock) -> 451, and
    the reactor kept serving meanwhile (a second session is answered while the first waits)."""
    asked = []
    with gateway(tmp_path, {"verify": "callout"}, rcpt=lambda a: (asked.append(a), answer(a))[1]) as (srv, rx, clock):
        import threading

        out = []
        t = threading.Thread(target=lambda: out.append(rcpt(srv, "slow@relay.test")))
        t.start()
        srv.wait_for(lambda: "slow@relay.test" in asked)
        # the reactor is free: another client gets its answer at once
        assert rcpt(srv, "postmaster@open.test")[0][0] == 250
        assert t.is_alive()
        harness.call(clock.advance, 20.0)
        t.join(30)
        assert out == [[(451, b"4.4.3 Recipient verification failed, try again later")]]
        srv.wait_for(lambda: rx.connections == 0)


def test_static_list(tmp_path):
    with gateway(tmp_path, {"verify": "list", "recipients": ["known@relay.test", "Boss@Relay.test"]}) \
            as (srv, rx, _clock):
        assert [r[0] for r in rcpt(srv, "known@relay.test", "boss@relay.test", "gone@relay.test",
                                   "anyone@open.test")] == [250, 250, 550, 250]
        assert srv.services.verifier.probes == 0 and rx.connections == 0


def test_static_list_with_a_wildcard(tmp_path):
    with gateway(tmp_path, {"verify": "list", "recipients": ["@relay.test"]}) as (srv, _rx, _clock):
        assert rcpt(srv, "whoever@relay.test")[0][0] == 250


def test_accepted_recipient_is_relayed(tmp_path):
    """A verified recipient's message is queued for the relay host as before."""
    with gateway(tmp_path, {"verify": "callout"}) as (srv, rx, _clock):
        with smtplib.SMTP("127.0.0.1", srv.port("smtp"), timeout=60) as c:
            refused = c.sendmail("someone@elsewhere.test", ["known@relay.test"], b"Subject: hi\r\n\r\nhello\r\n")
        assert refused == {}
        from storage.queue import QueueStore

        (row,) = QueueStore(srv.store).list()
        assert "known@relay.test" in str(row)


def test_relay_host_refusing_the_null_sender_or_talking_garbage_is_not_a_no(tmp_path):
    """Only the relay host's answer to RCPT itself can make an address invalid: a refused MAIL FROM:<> or a
    greeting that is not SMTP is a temporary failure (451), never 550."""
    with receiver(mail_reply="550 5.7.1 no null senders") as rx:
        domains = [{"name": "example.test"}, {"name": "relay.test", "mode": "relay", "relay_to": f"127.0.0.1:{rx.port}"}]
        with harness.running_server(tmp_path / "a", domain=domains,
                                    gateway={"domain": {"relay.test": {"verify": "callout"}}}) as srv:
            assert rcpt(srv, "known@relay.test")[0][0] == 451
    with receiver(greeting="\x00\xff garbage " + "x" * 5000) as rx:
        domains = [{"name": "example.test"}, {"name": "relay.test", "mode": "relay", "relay_to": f"127.0.0.1:{rx.port}"}]
        with harness.running_server(tmp_path / "b", domain=domains,
                                    gateway={"domain": {"relay.test": {"verify": "callout"}}}) as srv:
            assert rcpt(srv, "known@relay.test")[0][0] == 451
