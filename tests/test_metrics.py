"""[listen] metrics (mailserver/metrics.py): /metrics moves with real SMTP/IMAP/POP3 traffic, each server has its
own registry, the queue figures come from the store, the reactor lag is measured on an injected clock, and /healthz
answers 503 once the database is really gone (PostgreSQL: the server's database dropped under it)."""

from __future__ import annotations

import imaplib
import poplib
import smtplib
import time
import urllib.error
import urllib.request
import uuid

import pytest
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import task

from mailserver.connections import ConnectionLimiter
from mailserver.metrics import LATENCY_BUCKETS, Metrics, ReactorLag, observer
from tests import harness
from tests.harness import running_server

ALICE, PW = "alice@example.test", "secret"
MSG = b"From: bob@example.net\r\nTo: alice@example.test\r\nSubject: counted\r\n\r\nhello\r\n"


def scrape(srv) -> dict[tuple[str, tuple], float]:
    """Every sample of /metrics as {(name, sorted labels): value}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{srv.port('metrics')}/metrics", timeout=30) as r:
        assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain")
        text = r.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples, name, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def healthz(srv) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{srv.port('metrics')}/healthz", timeout=60) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_counters_move_with_smtp_imap_and_pop3_traffic(tmp_path):
    with running_server(tmp_path, listeners=("smtp", "imap", "pop3", "metrics")) as srv:
        srv.add_user(ALICE, PW)
        before = scrape(srv)
        for _ in range(2):
            with smtplib.SMTP("127.0.0.1", srv.port("smtp"), timeout=30) as c:
                c.sendmail("bob@example.net", [ALICE], MSG)
        with smtplib.SMTP("127.0.0.1", srv.port("smtp"), timeout=30) as c:
            with pytest.raises(smtplib.SMTPRecipientsRefused):
                c.sendmail("bob@example.net", ["nobody@example.org"], MSG)  # not ours: no relaying
        c = imaplib.IMAP4("127.0.0.1", srv.port("imap"))
        with pytest.raises(imaplib.IMAP4.error):
            c.login(ALICE, "wrong")
        c.login(ALICE, PW)
        c.select("INBOX")
        c.fetch("1:*", "(FLAGS)")
        c.logout()
        p = poplib.POP3("127.0.0.1", srv.port("pop3"), timeout=30)
        p.user(ALICE)
        p.pass_(PW)
        p.stat()
        p.quit()
        srv.wait_for(lambda: srv.server_sessions("pop3") == 0)
        after = scrape(srv)

    def moved(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("mailserver_connections_total", protocol="smtp") == 3
    assert moved("mailserver_connections_total", protocol="imap") == 1
    assert moved("mailserver_connections_total", protocol="pop3") == 1
    assert value(after, "mailserver_connections_open", protocol="smtp") == 0
    assert moved("mailserver_deliveries_total", producer="smtp", outcome="delivered") == 2
    assert moved("mailserver_logins_total", protocol="imap", outcome="invalid") == 1
    assert moved("mailserver_logins_total", protocol="imap", outcome="ok") == 1
    assert moved("mailserver_logins_total", protocol="pop3", outcome="ok") == 1
    assert moved("mailserver_auth_failures_total", protocol="imap", reason="invalid") == 1
    assert moved("mailserver_commands_total", protocol="imap", command="LOGIN") == 2
    assert moved("mailserver_commands_total", protocol="imap", command="FETCH") == 1
    assert moved("mailserver_command_seconds_count", protocol="imap", command="SELECT") == 1
    for listener in ("smtp", "imap", "pop3"):
        assert moved("mailserver_response_seconds_count", listener=listener) > 0
    assert moved("mailserver_pool_wait_seconds_count", pool="db-read") > 0
    assert moved("mailserver_pool_wait_seconds_count", pool="db-write") > 0
    assert value(after, "mailserver_store_up") == 1
    assert value(after, "mailserver_queue_recipients") == 0


def test_the_metrics_listener_serves_nothing_else(tmp_path):
    with running_server(tmp_path, listeners=("metrics",)) as srv:
        for path in ("/", "/login", "/metrics/x"):
            with pytest.raises(urllib.error.HTTPError) as e:
                urllib.request.urlopen(f"http://127.0.0.1:{srv.port('metrics')}{path}", timeout=30)
            assert e.value.code == 404


def test_queue_depth_and_age_come_from_the_store(tmp_path):
    """Submitted mail for a remote address waits in the queue (no runner in tests): depth 1, an age >= 0."""
    with running_server(tmp_path, listeners=("submission", "metrics")) as srv:
        srv.add_user(ALICE, PW)
        with smtplib.SMTP("127.0.0.1", srv.port("submission"), timeout=30) as c:
            c.login(ALICE, PW)  # loopback: plaintext allowed
            c.sendmail(ALICE, ["carol@example.org", "dave@example.org"],
                       b"From: alice@example.test\r\nSubject: out\r\n\r\nbye\r\n")
        samples = scrape(srv)
        assert value(samples, "mailserver_queue_recipients") == 2
        assert value(samples, "mailserver_queue_messages") == 1
        assert value(samples, "mailserver_queue_oldest_age_seconds") >= 0
        assert value(samples, "mailserver_deliveries_total", producer="smtp", outcome="queued") == 2
        # The From: check of submission (a check stage, like the spam and virus checks) accepted both recipients.
        assert value(samples, "mailserver_check_verdicts_total", check="sender-headers", verdict="accept") == 2


def test_each_server_has_its_own_registry(tmp_path):
    """Two servers in one process: no collision in the default registry, and each counts only its own."""
    with running_server(tmp_path / "a", listeners=("smtp", "metrics")) as a, \
            running_server(tmp_path / "b", listeners=("smtp", "metrics")) as b:
        with smtplib.SMTP("127.0.0.1", a.port("smtp"), timeout=30) as c:
            c.noop()
        a.wait_for(lambda: a.server_sessions("smtp") == 0)
        assert value(scrape(a), "mailserver_connections_total", protocol="smtp") == 1
        assert value(scrape(b), "mailserver_connections_total", protocol="smtp") == 0


def test_reactor_lag_is_how_late_the_timer_fires():
    clock = task.Clock()
    seen: list[float] = []
    lag = ReactorLag(clock, 1.0, seen.append)
    lag.start()
    clock.advance(1.0)
    clock.advance(1.25)  # the next tick was due at 2.0: 0.25 late
    clock.advance(0.75)  # due at 3.0: on time again
    lag.stop()
    assert seen == [0.0, 0.25, 0.0]


def test_the_one_call_observer_adds_what_the_librarys_observe_adds():
    """metrics.observer (the per-command and per-answer path) puts each amount in the same bucket as
    prometheus_client's own Histogram.observe: on a bound, between bounds, 0, over the last bound; and
    Metrics.command and Metrics.pool_waited count and time as the Counter and Histograms would."""
    from prometheus_client import CollectorRegistry, Histogram

    def samples(registry):
        return sorted((s.name, tuple(sorted(s.labels.items())), s.value)
                      for f in registry.collect() for s in f.samples if not s.name.endswith("_created"))

    amounts = [0.0, 1e-9, 0.0005, *LATENCY_BUCKETS, *(b * 1.0001 for b in LATENCY_BUCKETS), 31.0, 1e9]
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    h1 = Histogram("h", "h", ["l"], buckets=LATENCY_BUCKETS, registry=ours).labels("x")
    h2 = Histogram("h", "h", ["l"], buckets=LATENCY_BUCKETS, registry=theirs).labels("x")
    observe = observer(h1)
    assert observe != h1.observe  # the one-call path is taken with this prometheus_client
    for a in amounts:
        observe(a)
        h2.observe(a)
    assert samples(ours) == samples(theirs)

    metrics = Metrics()
    for a in (0.0002, 0.003, -1.0):  # a negative duration (a clock step) counts as 0
        metrics.command("imap", "noop", a)
    metrics.command("imap", "x\x00y", 0.2)  # not a keyword: OTHER
    got = {(s.name, s.labels.get("command"), s.labels.get("le")): s.value for f in metrics.registry.collect()
           for s in f.samples if s.name.startswith("mailserver_command")}
    assert got[("mailserver_commands_total", "NOOP", None)] == 3
    assert got[("mailserver_command_seconds_count", "NOOP", None)] == 3
    assert got[("mailserver_command_seconds_sum", "NOOP", None)] == pytest.approx(0.0032)
    assert got[("mailserver_command_seconds_bucket", "NOOP", "0.001")] == 2
    assert got[("mailserver_command_seconds_bucket", "NOOP", "0.005")] == 3
    assert got[("mailserver_commands_total", "OTHER", None)] == 1
    metrics.pool_waited("db-read", 0.002)
    metrics.pool_waited("db-read", -0.5)
    waits = {(s.name, s.labels.get("le")): s.value for f in metrics.registry.collect() for s in f.samples
             if s.name.startswith("mailserver_pool_wait") and s.labels.get("pool") == "db-read"}
    assert waits[("mailserver_pool_wait_seconds_count", None)] == 2
    assert waits[("mailserver_pool_wait_seconds_bucket", "0.001")] == 1
    assert waits[("mailserver_pool_wait_seconds_sum", None)] == pytest.approx(0.002)


def test_refused_connections_are_counted_by_the_limiter():
    metrics = Metrics()
    limiter = ConnectionLimiter(1, metrics.connection_counts("imap"))
    assert limiter.acquire("192.0.2.7") and not limiter.acquire("192.0.2.7")
    limiter.release("192.0.2.7")
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in metrics.registry.collect() for s in f.samples}
    assert samples[("mailserver_connections_total", (("protocol", "imap"),))] == 1
    assert samples[("mailserver_connections_refused_total", (("protocol", "imap"),))] == 1
    assert samples[("mailserver_connections_open", (("protocol", "imap"),))] == 0


def test_healthz_is_200_with_the_queue_runner_running(tmp_path):
    with running_server(tmp_path, listeners=("metrics",), queue={"run": True}) as srv:
        srv.wait_for(lambda: srv.server.queue_runner.alive())
        status, body = healthz(srv)
        assert status == 200 and "store ok" in body and "queue ok" in body
        srv.call(srv.server.queue_runner.stop)
        status, body = healthz(srv)
        assert status == 503 and "queue FAILED" in body and "store ok" in body


@pytest.mark.postgres
def test_healthz_is_503_once_the_database_is_gone(tmp_path):
    """The server's own PostgreSQL database is dropped under it (its connections terminated): /healthz says 503
    "store FAILED" and /metrics reports mailserver_store_up 0, while the metrics listener itself goes on."""
    import psycopg
    import sqlalchemy as sa

    base = harness.test_database_url()
    if not base:
        pytest.skip("MAILSERVER_TEST_DATABASE_URL not set")
    name = "health_" + uuid.uuid4().hex[:12]
    admin = psycopg.connect(base.replace("postgresql+psycopg://", "postgresql://"), autocommit=True)
    admin.execute(f"CREATE DATABASE {name}")
    url = str(sa.engine.make_url(base).set(database=name).render_as_string(hide_password=False))
    try:
        with running_server(tmp_path, listeners=("metrics",), database_url=url,
                            metrics={"health_timeout": 10.0}) as srv:
            assert healthz(srv)[0] == 200
            admin.execute(f"DROP DATABASE {name} WITH (FORCE)")
            deadline = time.monotonic() + 60
            status, body = healthz(srv)
            while status != 503 and time.monotonic() < deadline:  # a bound, not a measurement
                time.sleep(0.2)
                status, body = healthz(srv)
            assert status == 503 and "store FAILED" in body, body
            assert value(scrape(srv), "mailserver_store_up") == 0
    finally:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()


def test_metrics_listener_pipelining_that_is_never_read_stops_being_read(tmp_path):
    """20 MB of pipelined requests (answered at once: 404) from a client that never reads: the metrics listener
    stops reading once the answers do not drain, as the webmail does, and holds a bounded amount unsent."""
    import socket

    from tests.hostile import BURST, MAX_UNSENT, flood, unsent_output

    with running_server(tmp_path, listeners=("metrics",)) as srv:
        raw = socket.create_connection(("127.0.0.1", srv.port("metrics")), timeout=10)
        sent = flood(raw, b"GET /metrics/x HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert sent < BURST // 2
        unsent = unsent_output(srv, "metrics")
        assert len(unsent) == 1 and unsent[0] < MAX_UNSENT, unsent
        raw.close()


def test_reactor_only_values_keep_the_figures_and_the_exposition():
    """observer/_counter_add with reactor_only swap the library's locked values for lock-free ones holding the same
    figures (what was counted before stays), and the registry exposes what the library's own would."""
    from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

    from mailserver.metrics import ReactorValue, _counter_add

    def make(registry):
        return (Histogram("h", "h", ["l"], buckets=LATENCY_BUCKETS, registry=registry).labels("x"),
                Counter("c", "c", ["l"], registry=registry).labels("x"))

    ours, theirs = CollectorRegistry(), CollectorRegistry()
    (h1, c1), (h2, c2) = make(ours), make(theirs)
    for h, c in ((h1, c1), (h2, c2)):  # counted before the swap
        h.observe(0.003)
        c.inc(2)
    observe, add = observer(h1, reactor_only=True), _counter_add(c1, reactor_only=True)
    assert isinstance(h1._sum, ReactorValue) and all(isinstance(b, ReactorValue) for b in h1._buckets)
    assert isinstance(c1._value, ReactorValue)
    assert observer(h1, reactor_only=True) is not None and isinstance(h1._sum, ReactorValue)  # again: kept
    for a in (0.0, 0.0005, 0.02, 7.0, 1e9):
        observe(a)
        h2.observe(a)
        add(1)
        c2.inc(1)
    h1.observe(0.3)  # the library's own observe still adds to the swapped values
    h2.observe(0.3)

    def text(registry):
        return b"\n".join(sorted(line for line in generate_latest(registry).splitlines()
                                 if b"_created" not in line))
    assert text(ours) == text(theirs)
