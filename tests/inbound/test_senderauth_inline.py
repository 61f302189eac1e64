"""The sender checks of a message run on the calling (reactor) thread, without a ``dns`` pool job, when its body is
in memory and every answer they need is in the resolver's cache, and give there exactly what the pool gives: the
same Authentication-Results and disposition over signed, unsigned, failing and quarantined messages; a message
whose answers are not all cached, a large one, an ARC-sealed one or one with many signatures goes to the pool."""

from __future__ import annotations

import dkim
import pytest
from twisted.internet import defer

from mailserver import config as config_mod
from mailserver.delivery import envelope as ev
from mailserver.delivery.router import LOCAL
from mailserver.delivery.runner import result_now
from mailserver.delivery.stages import MessageInfo, Target
from mailserver.dns import DnsResolver
from mailserver.inbound import authresults, senderauth
from mailserver.inbound.lookups import CachedLookups, Lookups
from tests.dnsserver import dns_server
from tests.inbound.senderauth_env import HELO, Keys, message, zones

HOST = "mx.example.test"
ROUTE = type("Route", (), {"kind": LOCAL})()


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    return Keys(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="module")
def dns(keys):
    with dns_server(zones(keys)) as srv:
        yield srv


class CountingRunner:
    """The pipeline's runner as the check uses it: ``dns`` jobs run at once, and are counted."""

    def __init__(self):
        self.jobs = 0

    def dns(self, f, *args):
        self.jobs += 1
        return defer.execute(f, *args)


class NoBlobs:
    def read(self, *args):
        raise AssertionError("the body is in memory: no blob read")


class Blobs:
    """The blob store holding one message (what a check too large to run on the reactor thread reads)."""

    def __init__(self, raw: bytes):
        self.raw = raw

    def read(self, blob_id, start=0, end=None):
        return self.raw[start:end]


def _config(dns, dns_cache: int):
    return config_mod.load_dict({
        "hostname": HOST, "data_dir": "/nonexistent", "listen": {"smtp": ["127.0.0.1:0"]},
        "domain": [{"name": "example.test"}], "dns": {"nameservers": [dns.address], "timeout": 10.0},
        "senderauth": {"dns_cache": dns_cache, "timeout": 30.0}})


def _check(dns, dns_cache: int = 1000):
    cfg = _config(dns, dns_cache)
    runner = CountingRunner()
    return senderauth.SenderAuthCheck(runner, senderauth.Settings(cfg), DnsResolver(cfg.dns, cache_size=dns_cache),
                                      NoBlobs()), runner


def _info(raw: bytes, sender: str = "alice@sender.test", helo: str = HELO) -> MessageInfo:
    def read(start=0, end=None):
        return defer.succeed(raw[start:end])

    rcpt = ev.Recipient(ev.Mailbox("bob", "example.test"))
    reverse = ev.Mailbox(*sender.split("@")) if sender else None
    return MessageInfo(ev.SMTP, "q", ev.Envelope(reverse, (rcpt,)), ev.ClientInfo("127.0.0.1", helo, True),
                       len(raw), "blob", None, read)


def _outcome(check, raw: bytes, **kw) -> tuple[str, str, str]:
    info = _info(raw, **kw)
    rcpt = info.envelope.recipients[0]
    verdict = result_now(defer.ensureDeferred(check.check(info, Target(route=ROUTE, recipient=rcpt))))
    result = info.memo[senderauth.FACTS_KEY]
    return authresults.header_value(HOST, result.clauses()), result.disposition, repr(verdict)


def _signed(keys: Keys, raw: bytes, selector: bytes = b"direct") -> bytes:
    if selector == b"ed":
        return dkim.sign(raw, b"ed", b"sender.test", keys.ed_seed, signature_algorithm=b"ed25519-sha256") + raw
    return dkim.sign(raw, b"direct", b"sender.test", keys.direct_pem) + raw


def _cases(keys: Keys) -> list[tuple[bytes, dict]]:
    plain = message()
    return [
        (plain, {}),
        (_signed(keys, plain), {}),
        (_signed(keys, plain, b"ed"), {}),
        (_signed(keys, plain).replace(b"Hello", b"Jello"), {}),  # body changed: dkim=fail
        (keys.signer.signature_headers(plain) + plain, {}),  # our outbound signer (RSA and Ed25519)
        (_signed(keys, message(sender="x@fail.sender.test")), {"sender": "x@fail.sender.test"}),
        (message(sender="q@quar.test"), {"sender": "q@quar.test"}),
        (message(sender="o@other.test"), {"sender": "o@other.test"}),
        (plain, {"sender": ""}),  # the null reverse path: SPF of the HELO stands for MAIL FROM
        (message(extra="From: Second <b@other.test>\r\n"), {}),
        (b"Subject: no from\r\n\r\nbody\r\n", {}),
    ]


def test_on_this_thread_gives_what_the_pool_gives(keys, dns):
    inline, inline_runner = _check(dns)
    pooled, pooled_runner = _check(dns, dns_cache=0)  # no answer cache: every check in the pool
    for raw, kw in _cases(keys):
        want = _outcome(pooled, raw, **kw)
        first = _outcome(inline, raw, **kw)  # answers not all cached yet: the pool
        jobs = inline_runner.jobs
        again = _outcome(inline, raw, **kw)  # every answer cached: this thread
        assert inline_runner.jobs == jobs, raw
        assert first == want and again == want, raw
    assert pooled_runner.jobs > len(_cases(keys))  # every message in the pool there


def test_a_new_sender_domain_goes_to_the_pool_once(keys, dns):
    check, runner = _check(dns)
    _outcome(check, _signed(keys, message()))
    jobs = runner.jobs
    got = _outcome(check, message(sender="n@nospf.sender.test"), sender="n@nospf.sender.test")
    assert runner.jobs == jobs + 1 and "spf=none" in got[0]
    _outcome(check, message(sender="n@nospf.sender.test"), sender="n@nospf.sender.test")
    assert runner.jobs == jobs + 1


def test_large_sealed_or_many_times_signed_messages_go_to_the_pool(keys, dns):
    check, runner = _check(dns)
    big = _signed(keys, message(body=b"x" * 100 + b"\r\n" * (senderauth.INLINE_MAX_SIZE // 2)))
    many = _signed(keys, message())
    for _ in range(senderauth.INLINE_MAX_SIGNATURES):
        many = _signed(keys, many)
    forward = b"Authentication-Results: fwd.test; dkim=pass header.d=sender.test\r\n" + _signed(keys, message())
    sealed = b"".join(dkim.arc_sign(forward, b"arc", b"fwd.test", keys.arc_pem, b"fwd.test")) + forward
    assert sealed.startswith(b"ARC-Seal:")
    for raw in (big, many, sealed):
        check.blobs = Blobs(raw) if raw is big else NoBlobs()
        _outcome(check, raw)  # answers cached now
        jobs = runner.jobs
        _outcome(check, raw)
        assert runner.jobs == jobs + 1, (len(raw), raw[:200])
    check.blobs = NoBlobs()
    within = _signed(keys, _signed(keys, message()))  # INLINE_MAX_SIGNATURES signatures: on this thread
    _outcome(check, within)
    jobs = runner.jobs
    assert "dkim=pass" in _outcome(check, within)[0] and runner.jobs == jobs


def test_a_body_not_in_memory_goes_to_the_pool(keys, dns):
    check, runner = _check(dns)
    raw = message()
    _outcome(check, raw)
    check.blobs = Blobs(raw)
    info = _info(raw)
    info_read = defer.Deferred()  # a read that has not answered yet (the blob pool)
    info = MessageInfo(info.producer, info.queue_id, info.envelope, info.client, info.size, info.blob_id, None,
                       lambda start=0, end=None: info_read)
    jobs = runner.jobs
    result_now(defer.ensureDeferred(check.check(info, Target(route=ROUTE, recipient=info.envelope.recipients[0]))))
    assert runner.jobs == jobs + 1 and info.memo[senderauth.FACTS_KEY].spf.result == "pass"


def test_a_run_that_missed_an_answer_does_not_count(dns):
    check, _runner = _check(dns)

    def asks(lookups):
        try:
            lookups.txt("not-asked-before.sender.test")
        except Exception:  # noqa: BLE001 - what a check does with a failed lookup: a result all the same
            return "temperror"
        return "found"

    def raises(lookups):
        lookups.txt("not-asked-before-either.sender.test")

    for f in (asks, raises):
        assert check._run([(f, (), lambda r: r)], CachedLookups) is None
    # The pool's run asks the DNS: the same check gives its real result there (NXDOMAIN is an answer).
    assert check._run([(asks, (), lambda r: r)], Lookups) == ["temperror"]
    assert check._run([(asks, (), lambda r: r)], CachedLookups) == ["temperror"]  # now cached (negative)
