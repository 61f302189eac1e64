"""Shared fixtures.  Servers under test run in a reactor thread (tests/harness.py)."""

from __future__ import annotations

import os

import pytest

from mailserver import reactor as server_reactor

server_reactor.install()  # the server's own reactor (mailserver/reactor.py), before the harness imports one

from tests import harness  # noqa: E402

# Private rspamd and clamd instances (session fixtures rspamd_daemon, clamd_daemon).
pytest_plugins = ("tests.inbound.daemons",)


def pytest_collection_modifyitems(config, items):
    # In CI nothing may be skipped silently: PostgreSQL tests need MAILSERVER_TEST_DATABASE_URL there.
    if os.environ.get("CI") and not harness.test_database_url():
        raise pytest.UsageError("CI=true but MAILSERVER_TEST_DATABASE_URL is not set: PostgreSQL tests would skip")


def _db_params():
    params = ["sqlite"]
    params.append(pytest.param("postgres", marks=pytest.mark.postgres))
    return params


@pytest.fixture(params=_db_params())
def database_url(request, tmp_path):
    """"" for SQLite in tmp_path, or a fresh PostgreSQL schema when MAILSERVER_TEST_DATABASE_URL is set."""
    if request.param == "sqlite":
        yield ""
        return
    base = harness.test_database_url()
    if not base:
        pytest.skip("MAILSERVER_TEST_DATABASE_URL not set")
    url = harness.fresh_pg_url(base)
    yield url
    harness.drop_pg_schema(base, url)
