"""Password hashing, Dovecot hash import, and the shared Authenticator (thread pool, cache, throttling)."""

import base64
import dataclasses
import hashlib
import hmac
import os
import queue
import threading

import argon2 as argon2_cffi
import bcrypt as bcrypt_lib
import pytest
from passlib.hash import des_crypt, md5_crypt, sha256_crypt, sha512_crypt
from twisted.internet import defer, task
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from mailserver import auth
from mailserver.auth import (
    Authenticator,
    AuthResult,
    Credentials,
    PasswordHasher,
    normalize_address,
)
from mailserver.clusterstate import LocalLoginFailures
from mailserver.config import AuthConfig, LimitsConfig

HASHER = PasswordHasher(low_cost=True)
PW = "hunter2"
UNICODE_PW = "Tr0ub4dor&3 ünïcode"

# ------------------------------------------------------------------------------------------- fixed vectors

# Written by Dovecot 2.3 (`doveadm pw -s SCHEME -p hunter2`), openssl 3 (`openssl passwd -6/-5/-1 -salt
# saltsalt hunter2`), the bcrypt and argon2-cffi libraries: computed independently of libpass.
HUNTER2_VECTORS = [
    "{SHA512-CRYPT}$6$Qp5XgUvVD2m.2KE4$Qs4sf6GLi/aM85ttLRfHePbk5rMRux2sLIEmHP3VhzjdnkmMD4w/rPd.nJ70S77VTXE8Q0nupLezHXHJELgwI0",
    "{SHA256-CRYPT}$5$1NSeNZPLSiEVyxdL$eLO98Oetvc5A3wxZi/wNWez3E6usaxKgqZr4GwfpNZ5",
    "{BLF-CRYPT}$2y$05$Yy1szF4Q8cTfXO7pffscDeHn1kxoEOARTTg9h0KRV4usPR.AaC6E.",
    "{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$xrqs6LqdoLszpIdqMvXGsw$2nOcT2qP0mqvQo8ErdDWugyFjZ1DYQj6p+C0W67RleE",
    "{ARGON2I}$argon2i$v=19$m=32768,t=4,p=1$TAeoU1IKmDRCCfkpn7PgOw$RXJl7bgzqVfoYNNuHwFQhd7ayY4l90q+vX9XT0jC+2o",
    "{MD5-CRYPT}$1$lOTexmB8$ZAu1ddl4RPkTTC/IckNa3/",
    "{SSHA512}V4bJB9jLk/oswo9wcXqxNwFktK8/vXZh9bC1HzsVnRUdqiM8a6SZkGXG5wge8Sv0jpRW0ZyXqnIu9YYwFXKVhk7dO0s=",
    "{SSHA256}hhjVdlQwwkkmBIbPMQ6Aie4m1I3p4V10i83KTAj4ZB0jrNby",
    "{SSHA}GrZnxV/nQ4Wz0LtzJZsPyCaUSoQDIpU9",
    "{SHA}87u9ZqY9S/F0eUBXjsPQEDUw4h0=",
    "{SHA256}9S+9MrKzuG/4jvbEkGKChfSCrxXdyylUH5S89Saj9sc=",
    "{SHA512}a5ftaNFOs/GqlZzl1Jx9xhLh6x2v1zsecFhHSD/WpsgJ8s606N9v+ZhMYpj/AoXKzmYUv42qnwBwEBtsiYmeIg==",
    "{PLAIN}hunter2",
    "{CLEAR}hunter2",
    "{CRYPT}$2y$05$4XJykcqj6Gwzk/8JZFcKyurFmJdm/hYfmwNqi3OKUlbKYvfPl0Y4y",
    "{DES-CRYPT}3.KecoAI84dHA",
    "{SSHA512.HEX}f6997c495f83da13c18c73bcf176f8393cfde72eea480f3a07a9a9bb0e08cf7c39d0d57a4250ad4fa318635fe6274000c613e3b5d783eabbdc29fb0b6bfcb4d4a808490e",
    "{SSHA.B64}kkNA0fW6Hu9JkehsR208DtKvnABTM82w",
    "{SHA256.HEX}f52fbd32b2b3b86ff88ef6c490628285f482af15ddcb29541f94bcf526a3f6c7",
    "{SSHA256.B64}IQnqRVVYfnVj2lclObvtlo28n+Pg8icf2Yf5kHQIyISNgRdE",
    "{SHA1.HEX}f3bbbd66a63d4bf1747940578ec3d0103530e21d",
    "{SMD5}sUz7bzR10oV3SPsU1VK64BF4+u0=",
    "{PLAIN-MD5}2ab96390c7dbe3439de74d0c9b0b1767",
    "{LDAP-MD5}KrljkMfb40Od500MmwsXZw==",
    "{SHA512-CRYPT}$6$CKO14Vk6vGIv/2b1$BKWFZ6ipoWwNTXkNJL3mQAfd5f0NksQAEgObUlVeX/AEEPlXvFAPV.4u4WySX9mOfEU2sxh0DBa4v7I995joF1",
    # unprefixed crypt(3) hashes
    "$6$saltsalt$8iYtNHxjWRl.NF6oNZ5tF.iKFlQREaXBLlSmZKP6dy9l5z3vsooWNW0/GZ6Nej73/TFug6pIPSqbJoCT6dfnj.",
    "$5$saltsalt$OIdfjX.u4Y3SJ4I2bX8w5BMf1VAUhHABNUirScDzZi3",
    "$1$saltsalt$ZliGyAN3DciDHEkDboonh/",
    "$2b$05$abcdefghijklmnopqrstuuoXuKqgZXLiJqzfmMXDDhSFPIvxV7t8.",
    "$2y$05$Yy1szF4Q8cTfXO7pffscDeHn1kxoEOARTTg9h0KRV4usPR.AaC6E.",
    "$argon2id$v=19$m=64,t=1,p=1$MDEyMzQ1Njc4OWFiY2RlZg$VXym+zGcjiXyxj5UHzvtgmqe7HffFotdp2kWC3AztjI",
]

# Dovecot hashes of a non-ASCII password (UTF-8 octets are hashed).
UNICODE_VECTORS = [
    "{SHA512-CRYPT}$6$M4up5H.gc0rAb9VJ$Ykm/Ur/XVXGF7HN/pYC/GIjIkmYBZGDL4rcAlcs1xfLLIqR7be.o/E6CqEJGbPu21IFlsasaukmTVuNxoUNAN/",
    "{BLF-CRYPT}$2y$05$HrAt714eGkscFMeGXys2MuB0vHOw9ZvENRRaUnZWlptENvYwWpOnC",
    "{SSHA512}XkDOTeJ40EQ2klwf6D5IqFO2iWPIBymdKXDhgvE5cJh/ZarxA8tS8Opw09iPre5Yv6QxnTTWr7bS1mRlVC3cALu9Vkg=",
    "{SSHA}sZJ6MJUT4U13NDByTW/fTxURFEUUdR9S",
    "{SHA.HEX}5f5b4690936fa8008c7a802776b84499da7c7769",
    "{PLAIN}Tr0ub4dor&3 ünïcode",
    "{PLAIN.B64}VHIwdWI0ZG9yJjMgw7xuw69jb2Rl",
    "{MD5}$1$YCmsGmKq$3Oo4qFEs.f6bt1rOLXRyw1",
]


@pytest.mark.parametrize("stored", HUNTER2_VECTORS)
def test_fixed_vector_verifies_and_is_rehashed(stored):
    """Every imported scheme verifies its known vector, rejects a wrong password, and asks for an argon2id rehash."""
    HASHER.check_importable(stored)
    ok, new_hash = HASHER.verify(PW, stored)
    assert ok
    assert new_hash is not None and new_hash.startswith("$argon2id$")
    assert HASHER.verify(PW, new_hash) == (True, None)
    assert HASHER.verify("hunter3", stored) == (False, None)
    assert HASHER.verify("Hunter2", stored) == (False, None)


@pytest.mark.parametrize("stored", UNICODE_VECTORS)
def test_fixed_unicode_vector(stored):
    """Non-ASCII passwords are hashed as UTF-8, as Dovecot does."""
    ok, new_hash = HASHER.verify(UNICODE_PW, stored)
    assert ok and new_hash.startswith("$argon2id$")
    assert HASHER.verify(UNICODE_PW[:-1], stored) == (False, None)


# ------------------------------------------------------------------------------------------- generated


def _dovecot_salted(name: str, digest: str, password: str, salt: bytes, encoding: str = "b64") -> str:
    raw = hashlib.new(digest, password.encode() + salt).digest() + salt  # Dovecot layout: hash || salt
    if encoding == "hex":
        return f"{{{name}.HEX}}" + raw.hex()
    return f"{{{name}}}" + base64.b64encode(raw).decode()


def _generated(password: str) -> list[str]:
    pw = password.encode()
    out = [
        "{SHA512-CRYPT}" + sha512_crypt.using(rounds=5000).hash(password),
        "{SHA256-CRYPT}" + sha256_crypt.using(rounds=5000).hash(password),
        "{MD5-CRYPT}" + md5_crypt.hash(password),
        "{CRYPT}" + des_crypt.hash(password),
        "{CRYPT}" + md5_crypt.hash(password),
        "{BLF-CRYPT}" + bcrypt_lib.hashpw(pw, bcrypt_lib.gensalt(4, prefix=b"2a")).decode(),
        "{ARGON2ID}" + argon2_cffi.PasswordHasher(time_cost=1, memory_cost=64, parallelism=1).hash(password),
        "{ARGON2I}" + argon2_cffi.PasswordHasher(time_cost=1, memory_cost=64, parallelism=1,
                                                 type=argon2_cffi.Type.I).hash(password),
        "{SHA}" + base64.b64encode(hashlib.sha1(pw).digest()).decode(),
        "{SHA}" + hashlib.sha1(pw).hexdigest(),  # hex recognised by its length, as Dovecot does
        "{SHA256}" + base64.b64encode(hashlib.sha256(pw).digest()).decode(),
        "{SHA512}" + base64.b64encode(hashlib.sha512(pw).digest()).decode(),
        "{SHA512.hex}" + hashlib.sha512(pw).hexdigest(),
        "{sha256.b64}" + base64.b64encode(hashlib.sha256(pw).digest()).decode(),
        "{PLAIN}" + password,
        "{CLEARTEXT}" + password,
        "{PLAIN.hex}" + pw.hex(),
        "$2b$04$" + bcrypt_lib.hashpw(pw, bcrypt_lib.gensalt(4)).decode()[7:],
        sha512_crypt.using(rounds=1000).hash(password),
    ]
    for salt_len in (4, 8, 16, 32):
        salt = os.urandom(salt_len)
        out += [
            _dovecot_salted("SSHA", "sha1", password, salt),
            _dovecot_salted("SSHA256", "sha256", password, salt),
            _dovecot_salted("SSHA512", "sha512", password, salt),
            _dovecot_salted("SSHA512", "sha512", password, salt, "hex"),
            _dovecot_salted("SMD5", "md5", password, salt),
        ]
    return out


@pytest.mark.parametrize("password", ["correct horse battery staple", "ünïcødé pässwörd ✓"])
def test_generated_hashes_of_every_scheme(password):
    """Hashes written here the way Dovecot lays them out (any salt length) verify and reject wrong passwords."""
    for stored in _generated(password):
        HASHER.check_importable(stored)
        ok, new_hash = HASHER.verify(password, stored)
        assert ok, stored
        assert new_hash.startswith("$argon2id$"), stored
        des = stored.startswith("{CRYPT}") and "$" not in stored  # DES crypt reads 8 characters only
        assert HASHER.verify(password + "x", stored)[0] is des, stored
        assert HASHER.verify("x" + password, stored) == (False, None), stored


@pytest.mark.parametrize("stored", [
    "",
    "hunter2",
    "{UNKNOWN}abc",
    "{SCRAM-SHA-256}4096,abc,def",
    "{PBKDF2}$1$abc",
    "{CRAM-MD5}2ab96390c7dbe3439de74d0c9b0b1767",
    "{SHA}not base64!",
    "{SHA}" + base64.b64encode(b"short").decode(),  # wrong digest length
    "{SSHA}" + base64.b64encode(b"x" * 20).decode(),  # digest without salt
    "{SHA.rot13}abc",
    "{SHA512-CRYPT.hex}abc",
    "{SHA512-CRYPT}$1$saltsalt$ZliGyAN3DciDHEkDboonh/",  # payload of another scheme
    "{ARGON2ID}$argon2i$v=19$m=32768,t=4,p=1$TAeoU1IKmDRCCfkpn7PgOw$RXJl7bgzqVfoYNNuHwFQhd7ayY4l90q+vX9XT0jC+2o",
    "{BLF-CRYPT}$2y$05$tooshort",
    "{SHA256-CRYPT}",
    "3.KecoAI84dHA",  # bare DES crypt is too ambiguous to accept without a prefix
    "$6$saltsalt$",  # settings without a hash
    "{PLAIN.hex}zz",
])
def test_unknown_or_malformed_hashes(stored):
    """check_importable refuses what verify cannot use, with "unknown hash scheme"; verify never matches it."""
    with pytest.raises(ValueError, match="unknown hash scheme"):
        HASHER.check_importable(stored)
    assert HASHER.verify("hunter2", stored) == (False, None)
    assert HASHER.verify("", stored) == (False, None)


def test_plain_compare_is_exact():
    """{PLAIN} compares the whole password (no prefix or case match)."""
    assert HASHER.verify("hunter", "{PLAIN}hunter2") == (False, None)
    assert HASHER.verify("hunter22", "{PLAIN}hunter2") == (False, None)
    assert HASHER.verify("", "{PLAIN}hunter2") == (False, None)


@pytest.mark.parametrize("scheme,prefix", [("argon2", "$argon2id$"), ("bcrypt", "$2b$"), ("sha512_crypt", "$6$")])
def test_default_scheme(scheme, prefix):
    """New hashes use the configured default; a hash of the default needs no rehash, other schemes do."""
    hasher = PasswordHasher(scheme, low_cost=True)
    h = hasher.hash("secret")
    assert h.startswith(prefix)
    assert hasher.verify("secret", h) == (True, None)
    assert hasher.verify("wrong", h) == (False, None)
    other = PasswordHasher("argon2" if scheme != "argon2" else "bcrypt", low_cost=True)
    ok, new_hash = other.verify("secret", h)
    assert ok and new_hash is not None and not new_hash.startswith(prefix)


def test_unknown_default_scheme_refused():
    with pytest.raises(ValueError):
        PasswordHasher("md5_crypt")


def test_server_costs_are_reasonable_and_cheap_hashes_get_upgraded():
    """Server argon2id uses t=2, m=19 MiB, p=1; a cheaper argon2id hash is rehashed at the next login."""
    server = PasswordHasher()
    cheap = HASHER.hash("secret")
    ok, upgraded = server.verify("secret", cheap)
    assert ok and upgraded.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert server.verify("secret", upgraded) == (True, None)


def test_bcrypt_uses_the_first_72_octets():
    """bcrypt hashes of long passwords verify as the systems that wrote them did (first 72 octets)."""
    long_pw = "ä" * 50  # 100 octets
    written = bcrypt_lib.hashpw(long_pw.encode()[:72], bcrypt_lib.gensalt(4)).decode()
    stored = "{BLF-CRYPT}$2y$" + written[4:]
    assert HASHER.verify(long_pw, stored)[0]
    hasher = PasswordHasher("bcrypt", low_cost=True)
    assert hasher.verify(long_pw, hasher.hash(long_pw)) == (True, None)


def test_nul_in_password_never_matches_bcrypt():
    stored = bcrypt_lib.hashpw(b"a", bcrypt_lib.gensalt(4)).decode()
    assert HASHER.verify("a\0b", stored) == (False, None)


def test_dummy_verify_runs_a_real_verification(monkeypatch):
    calls = []
    real = HASHER._context.verify
    monkeypatch.setattr(HASHER._context, "verify", lambda *a: calls.append(a) or real(*a))
    HASHER.dummy_verify("whatever")
    assert len(calls) == 1 and calls[0][1].startswith("$argon2id$")


# ------------------------------------------------------------------------------------------- authenticator


class Runner:
    """A synchronous stand-in for the hash thread pool that records what ran."""

    def __init__(self):
        self.calls: list[str] = []

    def __call__(self, f, *args):
        self.calls.append(f.__name__)
        return defer.maybeDeferred(f, *args)


class Accounts:
    def __init__(self):
        self.rows: dict[str, Credentials] = {}
        self.lookups: list[str] = []
        self.updates: list[tuple[int, str]] = []
        self.fail_update = False

    def add(self, account_id, address, stored, enabled=True):
        self.rows[address] = Credentials(account_id, address, stored, enabled)

    def lookup(self, address):
        self.lookups.append(address)
        return defer.succeed(self.rows.get(address))

    def update_hash(self, account_id, new_hash):
        self.updates.append((account_id, new_hash))
        if self.fail_update:
            return defer.fail(RuntimeError("database is locked"))
        for address, row in self.rows.items():
            if row.account_id == account_id:
                self.rows[address] = dataclasses.replace(row, password_hash=new_hash)
        return defer.succeed(None)


LIMITS = LimitsConfig(auth_max_failures_per_ip=8, auth_max_failures_per_account=5, auth_failure_window=600.0,
                      auth_max_delay=15.0)


@dataclasses.dataclass
class Env:
    clock: task.Clock
    runner: Runner
    accounts: Accounts
    auth: Authenticator

    def login(self, username, password, ip="192.0.2.1"):
        """Authenticate, letting fake time pass; return (AuthResult, seconds the answer was delayed)."""
        d = self.auth.authenticate(username, password, ip)
        start = self.clock.seconds()
        while not d.called:
            calls = self.clock.getDelayedCalls()
            assert calls, "authenticate is waiting on something other than the clock"
            self.clock.advance(min(c.getTime() for c in calls) - self.clock.seconds())
        out = []
        d.addBoth(out.append)
        if isinstance(out[0], Failure):
            out[0].raiseException()
        return out[0], self.clock.seconds() - start


CACHE_60 = AuthConfig(cache_seconds=60.0)


def make_env(limits=LIMITS, auth_config=CACHE_60, secret=b"k" * 32) -> Env:
    clock, runner, accounts = task.Clock(), Runner(), Accounts()
    accounts.add(1, "alice@example.org", HASHER.hash("alice-pw"))
    accounts.add(2, "bob@example.org", "{SHA512-CRYPT}" + sha512_crypt.using(rounds=5000).hash("bob-pw"))
    accounts.add(3, "carol@example.org", HASHER.hash("carol-pw"), enabled=False)
    a = Authenticator(HASHER, accounts.lookup, accounts.update_hash, hash_pool=runner, clock=clock,
                      limits=limits, auth_config=auth_config, secret=secret)
    return Env(clock, runner, accounts, a)


def test_good_login():
    """A correct password answers ok at once with the account id and address."""
    env = make_env()
    result, delay = env.login("alice@example.org", "alice-pw")
    assert result == AuthResult(True, 1, "alice@example.org", "")
    assert delay == 0
    assert env.runner.calls == ["verify"]


def test_login_name_is_case_insensitive_and_trimmed():
    env = make_env()
    result, _ = env.login("  Alice@EXAMPLE.org ", "alice-pw")
    assert result.ok and result.account_id == 1
    assert env.accounts.lookups == ["alice@example.org"]


def test_normalize_address():
    assert normalize_address(" Alice@Example.ORG\t") == "alice@example.org"
    assert normalize_address("bob") == "bob"


def test_no_existence_disclosure():
    """Unknown account and wrong password: same answer, same delay, one hash job each (a dummy verification)."""
    env = make_env()
    wrong, wrong_delay = env.login("alice@example.org", "nope", ip="192.0.2.1")
    unknown, unknown_delay = env.login("nobody@example.org", "nope", ip="192.0.2.2")
    assert wrong == unknown == AuthResult(False, reason="invalid")
    assert wrong_delay == unknown_delay == 0.5
    assert env.runner.calls == ["verify", "dummy_verify"]


def test_disabled_account_told_only_after_the_right_password():
    env = make_env()
    assert env.login("carol@example.org", "carol-pw")[0] == AuthResult(False, reason="disabled")
    assert env.login("carol@example.org", "wrong")[0] == AuthResult(False, reason="invalid")


def test_imported_hash_rehashed_at_login():
    """An imported Dovecot hash is replaced by argon2id after a good login, and only once."""
    env = make_env()
    result, _ = env.login("bob@example.org", "bob-pw")
    assert result.ok and result.account_id == 2
    [(account_id, new_hash)] = env.accounts.updates
    assert account_id == 2 and new_hash.startswith("$argon2id$")
    assert env.accounts.rows["bob@example.org"].password_hash == new_hash
    env.auth.forget("bob@example.org")
    assert env.login("bob@example.org", "bob-pw")[0].ok
    assert len(env.accounts.updates) == 1


def test_rehash_store_failure_does_not_fail_login():
    env = make_env()
    env.accounts.fail_update = True
    assert env.login("bob@example.org", "bob-pw")[0].ok
    assert len(env.accounts.updates) == 1


def test_wrong_password_on_imported_hash_not_rehashed():
    env = make_env()
    assert env.login("bob@example.org", "wrong")[0].reason == "invalid"
    assert env.accounts.updates == []


def test_cache_hit_avoids_second_verification():
    """A second good login within cache_seconds needs no hashing; a wrong password still does."""
    env = make_env()
    assert env.login("alice@example.org", "alice-pw")[0].ok
    assert env.login("Alice@example.org", "alice-pw")[0].ok
    assert env.runner.calls == ["verify"]
    assert not env.login("alice@example.org", "alice-pw2")[0].ok
    assert env.runner.calls == ["verify", "verify"]


def test_cache_hit_after_rehash():
    """After a rehash the cached success still matches the newly stored hash."""
    env = make_env()
    assert env.login("bob@example.org", "bob-pw")[0].ok
    assert env.login("bob@example.org", "bob-pw")[0].ok
    assert env.runner.calls == ["verify"]


def test_cache_expires():
    env = make_env(auth_config=AuthConfig(cache_seconds=30.0))
    env.login("alice@example.org", "alice-pw")
    env.clock.advance(29)
    env.login("alice@example.org", "alice-pw")
    assert env.runner.calls == ["verify"]
    env.clock.advance(2)
    env.login("alice@example.org", "alice-pw")
    assert env.runner.calls == ["verify", "verify"]


def test_cache_off():
    env = make_env(auth_config=AuthConfig(cache_seconds=0))
    env.login("alice@example.org", "alice-pw")
    env.login("alice@example.org", "alice-pw")
    assert env.runner.calls == ["verify", "verify"]


def test_cache_dropped_by_forget_and_by_password_change():
    """forget() drops the cached success; so does a changed stored hash, even without forget()."""
    env = make_env()
    env.login("alice@example.org", "alice-pw")
    env.auth.forget("ALICE@example.org")
    env.login("alice@example.org", "alice-pw")
    assert env.runner.calls == ["verify", "verify"]
    env.accounts.add(1, "alice@example.org", HASHER.hash("new-pw"))
    assert not env.login("alice@example.org", "alice-pw")[0].ok
    assert env.runner.calls == ["verify", "verify", "verify"]


def test_cached_success_still_checks_enabled():
    """Disabling an account takes effect at once, even while a success is cached."""
    env = make_env()
    env.login("alice@example.org", "alice-pw")
    env.accounts.add(1, "alice@example.org", env.accounts.rows["alice@example.org"].password_hash, enabled=False)
    assert env.login("alice@example.org", "alice-pw")[0].reason == "disabled"
    assert env.runner.calls == ["verify"]


def test_cache_key_is_an_hmac_not_the_password():
    """The cache holds HMAC(secret, address NUL password) and the stored hash, never the password."""
    env = make_env(secret=b"s" * 32)
    env.login("alice@example.org", "alice-pw")
    [(key, value)] = env.auth._cache.items()
    assert key == hmac.new(b"s" * 32, b"alice@example.org\0alice-pw", hashlib.sha256).digest()
    assert b"alice-pw" not in key and "alice-pw" not in repr(value)
    other = make_env(secret=b"t" * 32)
    other.login("alice@example.org", "alice-pw")
    assert list(other.auth._cache) != [key]


def test_random_secret_per_instance():
    a = Authenticator(HASHER, None, None, hash_pool=Runner(), clock=task.Clock(), limits=LIMITS,
                      auth_config=AuthConfig())
    b = Authenticator(HASHER, None, None, hash_pool=Runner(), clock=task.Clock(), limits=LIMITS,
                      auth_config=AuthConfig())
    assert a._cache_key("a", "p") != b._cache_key("a", "p")


def test_cache_is_bounded(monkeypatch):
    monkeypatch.setattr(auth, "MAX_CACHE_ENTRIES", 3)
    env = make_env()
    for i in range(5):
        env.accounts.add(10 + i, f"u{i}@example.org", HASHER.hash(f"pw{i}"))
        env.login(f"u{i}@example.org", f"pw{i}")
    assert len(env.auth._cache) == 3
    env.login("u0@example.org", "pw0")  # the oldest was dropped: verified again
    env.login("u4@example.org", "pw4")  # the newest is still cached
    assert env.runner.calls.count("verify") == 6


def test_failure_delay_grows_and_then_throttles():
    """Each failure doubles the delay (0.5, 1, 2, 4, 8 s); past the account maximum the answer is "throttled"
    after the delay, without a lookup or a verification, even for the right password."""
    env = make_env()
    delays = [env.login("alice@example.org", f"wrong{i}")[1] for i in range(5)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0]
    lookups, calls = len(env.accounts.lookups), len(env.runner.calls)
    result, delay = env.login("alice@example.org", "alice-pw")
    assert result == AuthResult(False, reason="throttled")
    assert delay == 8.0
    assert (len(env.accounts.lookups), len(env.runner.calls)) == (lookups, calls)


def test_delay_is_capped():
    limits = dataclasses.replace(LIMITS, auth_max_failures_per_account=0, auth_max_failures_per_ip=0,
                                 auth_max_delay=3.0)
    env = make_env(limits=limits)
    delays = [env.login("alice@example.org", "wrong")[1] for _ in range(8)]
    assert delays == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0, 3.0, 3.0]
    assert env.login("alice@example.org", "alice-pw")[0].ok  # limit 0: never "throttled"


def test_throttle_ends_when_failures_leave_the_window():
    env = make_env()
    for _ in range(5):
        env.login("alice@example.org", "wrong")
    assert env.login("alice@example.org", "alice-pw")[0].reason == "throttled"
    env.clock.advance(LIMITS.auth_failure_window)
    result, delay = env.login("alice@example.org", "alice-pw")
    assert result.ok and delay == 0


def test_unknown_addresses_are_throttled_like_real_ones():
    """The account counter is keyed by address, so throttling does not reveal which addresses exist: after the
    account limit, an address that failed is throttled and a fresh one gets its (wrong) password checked, for an
    unknown address exactly as for a real one."""
    env = make_env()
    for net, name in ((100, "nobody@example.org"), (101, "alice@example.org")):
        for i in range(5):
            env.login(name, "x", ip=f"198.51.{net}.{i}")
        assert env.login(name, "x", ip=f"198.51.{net}.0")[0].reason == "throttled", name
        assert env.login(name, "x", ip=f"198.51.{net}.99")[0].reason == "invalid", name


def test_per_ip_throttle_across_accounts():
    """Failures on many accounts from one IP throttle that IP, not others."""
    env = make_env()
    for i in range(8):
        assert env.login(f"user{i}@example.org", "x", ip="203.0.113.7")[0].reason == "invalid"
    assert env.login("alice@example.org", "alice-pw", ip="203.0.113.7")[0].reason == "throttled"
    assert env.login("alice@example.org", "alice-pw", ip="203.0.113.8")[0].ok


def test_success_resets_the_account_counter_not_the_ip_counter():
    env = make_env()
    for _ in range(4):
        env.login("alice@example.org", "wrong", ip="192.0.2.50")
    result, delay = env.login("alice@example.org", "alice-pw", ip="192.0.2.50")
    assert result.ok and delay == 4.0  # the IP's four failures still count
    result, delay = env.login("alice@example.org", "alice-pw", ip="192.0.2.60")
    assert result.ok and delay == 0  # the account's counter was cleared
    for i in range(4):  # the IP still had 4 failures: 4 more reach its maximum of 8
        env.login(f"x{i}@example.org", "wrong", ip="192.0.2.50")
    assert env.login("alice@example.org", "alice-pw", ip="192.0.2.50")[0].reason == "throttled"


def test_loopback_is_throttled_too():
    env = make_env()
    for i in range(8):
        env.login(f"u{i}@example.org", "x", ip="127.0.0.1")
    assert env.login("alice@example.org", "alice-pw", ip="127.0.0.1")[0].reason == "throttled"


def test_ipv6_throttled_per_64_and_mapped_ipv4_as_ipv4():
    env = make_env()
    for i in range(8):
        env.login(f"u{i}@example.org", "x", ip=f"2001:db8:1:2::{i + 1}")
    assert env.login("alice@example.org", "alice-pw", ip="2001:db8:1:2:ffff::9")[0].reason == "throttled"
    assert env.login("alice@example.org", "alice-pw", ip="2001:db8:1:3::1")[0].ok
    for i in range(8):
        env.login(f"v{i}@example.org", "x", ip="::ffff:198.51.100.1")
    assert env.login("alice@example.org", "alice-pw", ip="198.51.100.1")[0].reason == "throttled"


def test_failure_memory_is_bounded_and_pruned(monkeypatch):
    monkeypatch.setattr(auth, "MAX_TRACKED_KEYS", 10)
    env = make_env()
    for i in range(30):
        env.login(f"u{i}@example.org", "x", ip=f"10.0.0.{i}")
    assert len(env.auth.failures.ip) <= 10 and len(env.auth.failures.account) <= 10
    env.clock.advance(LIMITS.auth_failure_window + 1)
    env.login("alice@example.org", "x", ip="10.1.1.1")
    assert len(env.auth.failures.ip) == 1 and len(env.auth.failures.account) == 1


@pytest.mark.parametrize("username,password", [
    ("", "pw"),
    ("alice@example.org", ""),
    ("a" * (auth.MAX_USERNAME_OCTETS + 1), "pw"),
    ("alice@example.org", "p" * (auth.MAX_PASSWORD_OCTETS + 1)),
    ("alice@example.org", "p\0w"),
    ("ali\nce@example.org", "pw"),
])
def test_unacceptable_input_fails_without_lookup_or_hashing(username, password):
    """Empty, oversize or control-character input answers "invalid" (and counts as a failure) at no cost."""
    env = make_env()
    result, delay = env.login(username, password)
    assert result == AuthResult(False, reason="invalid") and delay == 0.5
    assert env.accounts.lookups == [] and env.runner.calls == []


def test_input_at_the_limits_is_looked_up():
    env = make_env()
    env.login("a" * auth.MAX_USERNAME_OCTETS, "p" * auth.MAX_PASSWORD_OCTETS)
    assert env.accounts.lookups == ["a" * auth.MAX_USERNAME_OCTETS] and env.runner.calls == ["dummy_verify"]


def test_lookup_failure_fails_the_deferred_and_counts_nothing():
    env = make_env()
    env.auth._lookup = lambda address: defer.fail(RuntimeError("database down"))
    with pytest.raises(RuntimeError, match="database down"):
        env.login("alice@example.org", "alice-pw")
    assert len(env.auth.failures.ip) == 0


@pytest.mark.parametrize("ip,tls,allowed", [
    ("192.0.2.1", True, True),
    ("192.0.2.1", False, False),
    ("127.0.0.1", False, True),
    ("127.8.9.10", False, True),
    ("::1", False, True),
    ("::ffff:127.0.0.1", False, True),
    ("2001:db8::1", False, False),
    ("10.0.0.1", False, False),
    ("::", False, False),
    ("not an ip", False, False),
    ("", False, False),
])
def test_plaintext_allowed(ip, tls, allowed):
    """Plaintext mechanisms only over TLS or from loopback."""
    assert make_env().auth.plaintext_allowed(ip, tls) is allowed


def test_plaintext_allowed_by_config():
    env = make_env(auth_config=AuthConfig(allow_plaintext_without_tls=True))
    assert env.auth.plaintext_allowed("192.0.2.1", False)


def test_bad_hash_pool_refused():
    with pytest.raises(TypeError):
        Authenticator(HASHER, None, None, hash_pool=object(), clock=task.Clock(), limits=LIMITS,
                      auth_config=AuthConfig())


class ThreadedClock(task.Clock):
    """task.Clock plus callFromThread, as deferToThreadPool needs; calls are run by pump()."""

    def __init__(self):
        super().__init__()
        self.from_threads: queue.Queue = queue.Queue()

    def callFromThread(self, f, *args, **kwargs):
        self.from_threads.put((f, args, kwargs))

    def pump(self, d):
        while not d.called:
            if self.getDelayedCalls():
                self.advance(min(c.getTime() for c in self.getDelayedCalls()) - self.seconds())
                continue
            f, args, kwargs = self.from_threads.get(timeout=10)
            f(*args, **kwargs)


class ThreadRecordingHasher(PasswordHasher):
    def __init__(self):
        super().__init__(low_cost=True)
        self.threads: list[int] = []

    def verify(self, password, stored):
        self.threads.append(threading.get_ident())
        return super().verify(password, stored)

    def dummy_verify(self, password):
        self.threads.append(threading.get_ident())
        return super().dummy_verify(password)


def test_hashing_runs_in_the_thread_pool():
    """With a real ThreadPool, verification and dummy verification run off the calling (reactor) thread."""
    pool = ThreadPool(minthreads=1, maxthreads=2, name="test-hash")
    pool.start()
    try:
        clock, accounts, hasher = ThreadedClock(), Accounts(), ThreadRecordingHasher()
        accounts.add(1, "alice@example.org", hasher.hash("alice-pw"))
        a = Authenticator(hasher, accounts.lookup, accounts.update_hash, hash_pool=pool, clock=clock,
                          limits=LIMITS, auth_config=AuthConfig())
        results = []
        for name, pw in [("alice@example.org", "alice-pw"), ("nobody@example.org", "x")]:
            d = a.authenticate(name, pw, "192.0.2.1")
            clock.pump(d)
            d.addCallback(results.append)
        assert results[0].ok and results[1].reason == "invalid"
        assert len(hasher.threads) == 2
        assert threading.get_ident() not in hasher.threads
    finally:
        pool.stop()


def test_parallel_attempts_count_against_the_limit_from_the_start():
    """Attempts being verified count for the limit from the moment they start: a burst of simultaneous guesses gets
    at most the limit verified; the rest wait, and are throttled once those failed."""
    env = make_env()
    result, _ = env.login("user0@example.org", "guess", ip="203.0.113.9")
    assert result.reason == "invalid"
    held: list[defer.Deferred] = []
    env.auth._run = lambda f, *args: held.append(defer.Deferred()) or held[-1]
    # IP limit 8: one recorded failure + 7 attempts under way reach it; 20 more do not get verified.
    pending = [env.auth.authenticate(f"user{i}@example.org", "guess", "203.0.113.9") for i in range(1, 28)]
    late = env.auth.authenticate("alice@example.org", "alice-pw", "203.0.113.9")
    assert len(held) == 7 and not any(d.called for d in pending) and not late.called
    for d in held:
        d.callback(None)  # the 7 guesses fail
    env.clock.advance(LIMITS.auth_max_delay * 10)
    assert len(held) == 7  # nobody else was verified: the limit was reached
    results = [d.result.reason for d in pending]
    assert results.count("invalid") == 7 and results.count("throttled") == 20
    assert late.result.reason == "throttled"
    assert env.auth._ip_in_flight == {} and env.auth._account_in_flight == {}


def test_a_burst_of_guesses_from_a_clean_address_gets_at_most_the_limit_checked():
    """The race the limit used to lose: 100 simultaneous guesses from an address with no earlier failure."""
    env = make_env()
    held: list[defer.Deferred] = []
    env.auth._run = lambda f, *args: held.append(defer.Deferred()) or held[-1]
    pending = [env.auth.authenticate(f"user{i % 7}@example.org", "guess", "203.0.113.77") for i in range(100)]
    while True:
        waiting = [d for d in held if not d.called]
        if not waiting:
            break
        for d in waiting:
            d.callback(None)
        env.clock.advance(LIMITS.auth_max_delay * 10)
    results = [d.result.reason for d in pending]
    assert len(held) == LIMITS.auth_max_failures_per_ip == results.count("invalid")
    assert results.count("throttled") == 100 - LIMITS.auth_max_failures_per_ip


def test_many_parallel_good_logins_are_not_throttled():
    """A client opening many connections at once with the right password (IDLE per folder, sync tools) all get in."""
    env = make_env()
    held: list[tuple[defer.Deferred, object, tuple]] = []

    def hold(f, *args):
        d = defer.Deferred()
        held.append((d, f, args))
        return d

    env.auth._run = hold
    pending = [env.auth.authenticate("alice@example.org", "alice-pw", "203.0.113.9") for _ in range(30)]
    # At most the limit are verified at once; the others wait for them and then get in.
    at_once = min(LIMITS.auth_max_failures_per_ip, LIMITS.auth_max_failures_per_account)
    assert len(held) == at_once == env.auth._ip_in_flight["203.0.113.9"]
    while any(not d.called for d, _, _ in held):
        for d, f, args in [h for h in held if not h[0].called]:  # let every verification finish
            d.callback(f(*args))
        env.clock.advance(LIMITS.auth_max_delay * 10)
    results = [d.result for d in pending]
    assert all(r.ok for r in results), {r.reason for r in results}


def test_server_builds_the_dummy_hash_before_it_listens(tmp_path):
    """The first unknown-account login after a start must not pay for building the dummy hash (that made it take
    twice as long as later ones: a timing oracle for which accounts exist). On the real listeners: the hash exists
    once the server listens, the first unknown-account logins over IMAP, POP3 and SMTP build nothing and run one
    verification each, against a hash of the server's own scheme and cost (what a known account's check costs)."""
    import re

    from tests.harness import running_server
    from tests.logins import login

    with running_server(tmp_path, listeners=("imap", "pop3", "submission"), limits={"auth_max_delay": 0.05}) as srv:
        hasher = srv.server.auth._hasher
        assert hasher.prepared
        made, verified = [], []
        real_hash, real_verify = hasher.hash, hasher._context.verify
        hasher.hash = lambda pw: made.append(pw) or real_hash(pw)
        hasher._context.verify = lambda secret, stored: verified.append(stored) or real_verify(secret, stored)
        try:
            for kind, port in (("imap", srv.port("imap")), ("pop3", srv.port("pop3")),
                               ("smtp", srv.port("submission"))):
                assert login(kind, port, f"nobody-{kind}@example.test", "guess") == "checked"
        finally:
            del hasher.hash
            hasher._context.verify = real_verify
        assert made == [] and len(verified) == 3 and len(set(verified)) == 1

        def params(h):  # "$argon2id$v=19$m=19456,t=2,p=1$..." -> scheme and cost, not salt and digest
            return re.match(r"\$[^$]+\$[^$]*\$[^$]*\$", h).group(0)

        assert params(verified[0]) == params(hasher.hash("a password")), verified[0]


def test_an_outsider_cannot_lock_the_owner_out():
    """Failed guesses on an account throttle the addresses that failed, not the owner: a correct password from an
    address that has not been failing, or from one the account logged in from before, still gets in; the
    guesser's address is throttled for the account even with the right password."""
    env = make_env()
    assert env.login("alice@example.org", "alice-pw", ip="192.0.2.50")[0].ok  # her office, known from now on
    for _ in range(LIMITS.auth_max_failures_per_account):
        env.login("alice@example.org", "guess", ip="203.0.113.66")
    assert env.login("alice@example.org", "alice-pw", ip="203.0.113.66")[0].reason == "throttled"
    assert env.login("alice@example.org", "alice-pw", ip="198.51.100.20")[0].ok  # a clean address
    assert env.login("alice@example.org", "typo", ip="192.0.2.50")[0].reason == "invalid"  # she mistypes once
    assert env.login("alice@example.org", "alice-pw", ip="192.0.2.50")[0].ok  # a known address still gets in


class SlowReadFailures(LocalLoginFailures):
    """Failure counters whose reads answer only when the test says, with what was recorded when the read began
    (what a database read in a thread does while another attempt records its failure)."""

    def __init__(self, limits):
        super().__init__(limits.auth_failure_window, limits.auth_max_failures_per_ip,
                         limits.auth_max_failures_per_account)
        self.hold = False
        self.held: list[tuple[defer.Deferred, tuple[int, int]]] = []

    async def counts(self, ip_key, address, now):
        seen = self._counts(ip_key, address, now)
        if not self.hold:
            return seen
        d: defer.Deferred = defer.Deferred()
        self.held.append((d, seen))
        await d
        return seen


def test_a_counter_read_overlapping_the_end_of_an_attempt_is_read_again():
    """The race PostgreSQL showed (11 of a burst checked where the limit is 10): attempt A is being checked; B reads
    the counters (A's failure is not recorded yet); A fails, records it and is no longer under way; B's read
    answers. B must not be let in on that read: it reads again and is throttled."""
    limits = dataclasses.replace(LIMITS, auth_max_failures_per_ip=1)
    clock, accounts = task.Clock(), Accounts()
    failures = SlowReadFailures(limits)
    held: list[defer.Deferred] = []
    a = Authenticator(HASHER, accounts.lookup, accounts.update_hash,
                      hash_pool=lambda f, *args: held.append(defer.Deferred()) or held[-1], clock=clock,
                      limits=limits, auth_config=AuthConfig(), failures=failures)
    first = a.authenticate("x@example.org", "guess", "203.0.113.5")
    assert len(held) == 1  # A is being checked
    failures.hold = True
    second = a.authenticate("y@example.org", "guess", "203.0.113.5")
    (read, seen), = failures.held
    assert seen == (0, 0)  # read before A's failure exists
    held[0].callback(None)  # A fails: recorded, no longer under way
    clock.advance(limits.auth_max_delay)
    assert first.result.reason == "invalid"
    failures.hold = False
    read.callback(None)  # B's stale read answers
    clock.advance(limits.auth_max_delay)
    assert len(held) == 1, "B was checked on a stale read"
    assert second.result.reason == "throttled"


class CountedClears(LocalLoginFailures):
    """Failure counters that count the clears asked of them (each a turn in the database's writer thread when the
    counters live in the database)."""

    def __init__(self, limits):
        super().__init__(limits.auth_failure_window, limits.auth_max_failures_per_ip,
                         limits.auth_max_failures_per_account)
        self.clears = 0

    async def clear_account(self, ip_key, address, now):
        self.clears += 1
        return await super().clear_account(ip_key, address, now)


def test_a_good_login_of_an_account_without_failures_clears_nothing():
    """A good login clears the account's failures only when it had some when the attempt began: the usual login
    asks the counters once (the admission read), not a second time to clear nothing."""
    clock, runner, accounts = task.Clock(), Runner(), Accounts()
    accounts.add(1, "alice@example.org", HASHER.hash("alice-pw"))
    failures = CountedClears(LIMITS)
    a = Authenticator(HASHER, accounts.lookup, accounts.update_hash, hash_pool=runner, clock=clock, limits=LIMITS,
                      auth_config=CACHE_60, failures=failures)
    env = Env(clock, runner, accounts, a)
    assert env.login("alice@example.org", "alice-pw")[0].ok
    assert env.login("alice@example.org", "alice-pw")[0].ok  # a success-cache hit
    assert failures.clears == 0
    assert env.login("alice@example.org", "wrong", ip="192.0.2.9")[0].reason == "invalid"
    result, delay = env.login("alice@example.org", "alice-pw")
    assert result.ok and delay == 0
    assert failures.clears == 1
    assert failures.account.count("alice@example.org", clock.seconds()) == 0
