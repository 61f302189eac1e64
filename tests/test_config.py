"""Configuration: clear errors naming the file and the key; the example documents every key."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
import tomllib
import typing
from pathlib import Path

import pytest

from mailserver import config as cfgmod

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path, text: str) -> Path:
    p = tmp_path / "m.toml"
    p.write_text(text)
    return p


BASE = 'hostname = "mail.example.test"\ndata_dir = "d"\n'


def test_minimal_config_and_defaults(tmp_path):
    cfg = cfgmod.load(write(tmp_path, BASE))
    assert cfg.hostname == "mail.example.test"
    assert cfg.data_dir == str((tmp_path / "d").resolve())  # relative to the file
    assert cfg.db_url.startswith("sqlite:///") and cfg.db_url.endswith("mailserver.sqlite3")
    assert cfg.listen.items() == []
    assert cfg.limits.smtp_max_recipients == 100
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.hostname = "x"  # type: ignore[misc]


def test_missing_file(tmp_path):
    with pytest.raises(cfgmod.ConfigError, match=r"nope.toml: file not found"):
        cfgmod.load(tmp_path / "nope.toml")


def test_no_config_named(monkeypatch):
    monkeypatch.delenv("MAILSERVER_CONFIG", raising=False)
    with pytest.raises(cfgmod.ConfigError, match="MAILSERVER_CONFIG"):
        cfgmod.load(None)


def test_env_var_selects_file(tmp_path, monkeypatch):
    monkeypatch.setenv("MAILSERVER_CONFIG", str(write(tmp_path, BASE)))
    assert cfgmod.load().hostname == "mail.example.test"


@pytest.mark.parametrize("text, key, problem", [
    ('data_dir = "d"\n', "hostname", "required key is missing"),
    (BASE + "[limits]\nsmtp_max_recipients = \"many\"\n", "limits.smtp_max_recipients", "expected an integer"),
    (BASE + "[limits]\nsmtp_max_recipients = true\n", "limits.smtp_max_recipients", "expected an integer"),
    (BASE + "[limits]\nsmtp_max_recipients = 99\n", "limits.smtp_max_recipients", "at least 100"),
    (BASE + "[limits]\nsmtp_max_command_line = 511\n", "limits.smtp_max_command_line", "at least 512"),
    (BASE + "[limits]\nsmtp_max_recipents = 200\n", "limits.smtp_max_recipents", "unknown key"),
    (BASE + "colour = 1\n", "colour", "unknown key"),
    (BASE + "[listen]\nsmtp = \"127.0.0.1:25\"\n", "listen.smtp", "expected a list"),
    (BASE + "[listen]\nsmtp = [\"127.0.0.1\"]\n", "listen.smtp[0]", "ADDRESS:PORT"),
    (BASE + "[listen]\nsmtp = [\"127.0.0.1:70000\"]\n", "listen.smtp[0]", "out of range"),
    (BASE + "[listen]\nsmtp = [\"mail.example:25\"]\n", "listen.smtp", "not an IP address"),
    (BASE + "[listen]\nsmtp = [\"127.0.0.1:25\"]\nimap = [\"127.0.0.1:25\"]\n", "listen.imap", "also used"),
    (BASE + "[tls]\ncert = \"a.pem\"\n", "tls.key", "together"),
    (BASE + "[log]\nformat = \"xml\"\n", "log.format", "text"),
    (BASE + "[[domain]]\nname = \"a.test\"\nmode = \"relay\"\n", "domain[0].relay_to", "required"),
    (BASE + "[smtp]\ntrusted_networks = [\"10.0.0.0/33\"]\n", "smtp.trusted_networks[0]", "not a network"),
    ('hostname = "bad host"\ndata_dir = "d"\n', "hostname", "not a valid host name"),
    (BASE + "database_url = \"mysql://x\"\n", "database_url", "postgresql"),
    (BASE + "[listen_proxied]\nsmtp = [\"127.0.0.1:2525\"]\n", "proxy.trusted", "load balancers"),
    (BASE + "[proxy]\ntrusted = [\"127.0.0.1/33\"]\n", "proxy.trusted[0]", "not a network"),
    (BASE + "[proxy]\ntrusted = [\"lb.example\"]\n", "proxy.trusted[0]", "not a network"),
    (BASE + "[listen]\nsmtp = [\"127.0.0.1:25\"]\n[listen_proxied]\nimap = [\"127.0.0.1:25\"]\n"
     "[proxy]\ntrusted = [\"127.0.0.1\"]\n", "listen_proxied.imap", "also used by listen.smtp"),
    (BASE + "[listen_proxied]\nmetrics = [\"127.0.0.1:9100\"]\n[proxy]\ntrusted = [\"127.0.0.1\"]\n",
     "listen_proxied.metrics", "unknown key"),
    (BASE + "[listen_proxied]\nimap = [\"mail.example:143\"]\n", "listen_proxied.imap", "not an IP address"),
    (BASE + "[limits]\nproxy_header_timeout = 0\n", "limits.proxy_header_timeout", "positive"),
    (BASE + "[metrics]\nhealth_timeout = 0\n", "metrics.health_timeout", "positive"),
])
def test_errors_name_file_and_key(tmp_path, text, key, problem):
    p = write(tmp_path, text)
    with pytest.raises(cfgmod.ConfigError) as e:
        cfgmod.load(p)
    assert e.value.key == key
    assert problem in e.value.problem
    assert str(e.value).startswith(f"{p}: {key}: ")


def test_toml_syntax_error(tmp_path):
    with pytest.raises(cfgmod.ConfigError, match="TOML syntax error"):
        cfgmod.load(write(tmp_path, BASE + "[limits\n"))


def test_ipv6_listen_address(tmp_path):
    cfg = cfgmod.load(write(tmp_path, BASE + '[listen]\nimap = ["[::1]:1143"]\n[dns]\nnameservers = ["::1", "127.0.0.1:5353"]\n'))
    assert str(cfg.listen.imap[0]) == "[::1]:1143"
    assert [(a.host, a.port) for a in cfg.dns.nameservers] == [("::1", 53), ("127.0.0.1", 5353)]


def _schema_keys(cls, prefix=""):
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in ("source", "domain"):
            continue
        tp = hints[f.name]
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(tp) and tp is not cfgmod.ListenAddress:
            yield from _schema_keys(tp, key + ".")
        elif typing.get_origin(tp) is dict:
            continue  # tls.sni is a table of tables, documented in a comment
        else:
            yield key


def _flatten(table, prefix=""):
    for k, v in table.items():
        if isinstance(v, dict):
            yield from _flatten(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}"


def test_example_config_documents_every_key_with_its_default():
    """etc/mailserver.example.toml lists every key (and loads); its values equal the defaults."""
    path = ROOT / "etc" / "mailserver.example.toml"
    cfg = cfgmod.load(path)
    table = tomllib.loads(path.read_text())
    documented = set(_flatten(table))
    assert set(_schema_keys(cfgmod.Config)) - documented == set()
    defaults = cfgmod.load_dict({"hostname": "x.test", "data_dir": "/tmp/x"})
    for key in documented - {"hostname", "data_dir"}:
        a, b = cfg, defaults
        for part in key.split("."):
            a, b = getattr(a, part), getattr(b, part)
        assert a == b, f"{key}: example says {a!r}, default is {b!r}"


def test_dev_config_is_loopback_and_unprivileged():
    cfg = cfgmod.load(ROOT / "etc" / "dev.toml")
    assert cfg.demo
    for name, a in cfg.listen.items():
        assert a.host == "127.0.0.1" and a.port >= 1024, name


def test_check_config_cli_exit_codes(tmp_path):
    good = write(tmp_path, BASE)
    r = subprocess.run([sys.executable, "-m", "mailserver", "--config", str(good), "check-config"],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text(BASE + "[limits]\nmessage_size = \"big\"\n")
    r = subprocess.run([sys.executable, "-m", "mailserver", "--config", str(bad), "check-config"],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2
    assert re.search(r"bad.toml: limits.message_size: expected an integer", r.stderr)
