"""The Sieve storage API (storage/sieve.py through Store): what ManageSieve and the webmail editor build on."""

from __future__ import annotations

import pytest

from storage.store import ActiveScript, AlreadyExists, Invalid, NotFound, SieveQuota
from tests import harness


@pytest.fixture
def store(tmp_path, database_url):
    with harness.migrated_store(tmp_path, database_url) as s:
        yield s


def test_put_list_get_rename_activate_delete(store):
    a = store.add_account("a@example.test", "x")
    store.put_sieve_script(a.id, "one", "keep;")
    store.put_sieve_script(a.id, "two", "discard;")
    assert [(s.name, s.size, s.active) for s in store.list_sieve_scripts(a.id)] == [("one", 5, False),
                                                                                   ("two", 8, False)]
    assert store.active_sieve_script(a.id) is None
    store.activate_sieve_script(a.id, "two")
    assert store.active_sieve_script(a.id).content == "discard;"
    store.activate_sieve_script(a.id, "one")
    assert [s.name for s in store.list_sieve_scripts(a.id) if s.active] == ["one"]  # one active at most
    with pytest.raises(ActiveScript):
        store.delete_sieve_script(a.id, "one")  # RFC 5804 2.10
    store.rename_sieve_script(a.id, "one", "uno")
    assert store.active_sieve_script(a.id).name == "uno"  # renaming keeps it active
    with pytest.raises(AlreadyExists):
        store.rename_sieve_script(a.id, "uno", "two")
    store.activate_sieve_script(a.id, None)
    store.delete_sieve_script(a.id, "uno")
    with pytest.raises(NotFound):
        store.get_sieve_script(a.id, "uno") or store.delete_sieve_script(a.id, "uno")
    store.put_sieve_script(a.id, "two", "keep;")  # replace
    assert store.get_sieve_script(a.id, "two").content == "keep;"


def test_version_changes_with_every_change(store):
    a = store.add_account("a@example.test", "x")
    v0 = store.sieve_version(a.id)
    store.put_sieve_script(a.id, "one", "keep;")
    v1 = store.sieve_version(a.id)
    store.activate_sieve_script(a.id, "one")
    v2 = store.sieve_version(a.id)
    assert len({v0, v1, v2}) == 3


@pytest.mark.parametrize("name", ["", "a/b", "x\x00y", "tab\there", "n" * 256])
def test_bad_names_are_refused(store, name):
    a = store.add_account("a@example.test", "x")
    with pytest.raises(Invalid):
        store.put_sieve_script(a.id, name, "keep;")


def test_a_name_of_255_characters_is_accepted(store):
    a = store.add_account("a@example.test", "x")
    store.put_sieve_script(a.id, "n" * 255, "keep;")


def test_quota_on_count_and_size_one_past_each(store):
    a = store.add_account("a@example.test", "x")
    store.put_sieve_script(a.id, "a", "x" * 60, max_scripts=2, max_storage=100)
    store.put_sieve_script(a.id, "b", "x" * 40, max_scripts=2, max_storage=100)  # exactly 100 bytes, 2 scripts
    with pytest.raises(SieveQuota) as e:
        store.put_sieve_script(a.id, "c", "k", max_scripts=2, max_storage=1000)
    assert e.value.kind == "maxscripts"
    with pytest.raises(SieveQuota) as e:
        store.put_sieve_script(a.id, "b", "x" * 41, max_scripts=2, max_storage=100)
    assert e.value.kind == "maxsize"
    store.put_sieve_script(a.id, "b", "x" * 40, max_scripts=2, max_storage=100)  # replacing counts once
    with pytest.raises(SieveQuota):
        store.sieve_have_space(a.id, "c", 1, max_scripts=2, max_storage=100)


def test_domain_scripts_are_separate_and_go_with_the_account(store):
    d = store.get_domain("example.test")
    a = store.add_account("a@example.test", "x")
    store.put_sieve_script(d.id, "before", "keep;", scope="domain")
    store.put_sieve_script(a.id, "mine", "keep;")
    assert [s.name for s in store.list_sieve_scripts(d.id, scope="domain")] == ["before"]
    store.remove_account("a@example.test")
    b = store.add_account("b@example.test", "x")
    assert store.list_sieve_scripts(b.id) == []  # a new account never inherits an old one's scripts


def test_vacation_reply_is_claimed_once_per_period(store):
    a = store.add_account("a@example.test", "x")
    assert store.claim_sieve_vacation_reply(a.id, "h", "Sender@x.org", 1000.0, 100.0)
    assert not store.claim_sieve_vacation_reply(a.id, "h", "sender@x.org", 1099.0, 100.0)
    assert store.claim_sieve_vacation_reply(a.id, "other-handle", "sender@x.org", 1099.0, 100.0)
    assert store.sieve_vacation_replied(a.id, "h", "sender@x.org", 1000.0)
    assert store.claim_sieve_vacation_reply(a.id, "h", "sender@x.org", 1100.0, 100.0)


def test_duplicates_expire(store):
    a = store.add_account("a@example.test", "x")
    store.mark_sieve_duplicates(a.id, [("k1", 10)], 1000.0)
    assert store.sieve_duplicates_seen(a.id, ["k1", "k2"], 1005.0) == {"k1"}
    assert store.sieve_duplicates_seen(a.id, ["k1"], 1011.0) == set()
