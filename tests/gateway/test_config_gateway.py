"""[srs], [arc] and [gateway] keys: defaults and the errors a bad value gives."""

from __future__ import annotations

import pytest

from mailserver.config import ConfigError, load_dict

BASE = {"hostname": "mail.example.test", "data_dir": "/tmp/x", "domain": [{"name": "example.test"}]}


def load(**table):
    return load_dict({**BASE, **table}, "t.toml")


def test_defaults():
    cfg = load()
    assert (cfg.srs.enabled, cfg.srs.domain, cfg.srs.max_age_days, cfg.arc.seal) == (False, "", 21, True)
    assert cfg.gateway.domain == {} and cfg.gateway.negative_ttl == 3600.0


@pytest.mark.parametrize("table, key", [
    ({"srs": {"secrets": ["short"]}}, "srs.secrets[0]"),
    ({"srs": {"max_age_days": 0}}, "srs.max_age_days"),
    ({"srs": {"max_age_days": 1024}}, "srs.max_age_days"),
    ({"srs": {"domain": "not a domain"}}, "srs.domain"),
    ({"srs": {"enabled": True}, "domain": []}, "srs.domain"),
    ({"srs": {"bogus": 1}}, "srs.bogus"),
    ({"arc": {"domain": "x"}}, "arc.domain"),
    ({"gateway": {"domain": {"relay.test": {"verify": "maybe"}}}}, "gateway.domain.relay.test.verify"),
    ({"gateway": {"domain": {"relay.test": {"verify": "list"}}}}, "gateway.domain.relay.test.recipients"),
    ({"gateway": {"domain": {"relay.test": {"verify": "list", "recipients": ["nobody"]}}}},
     "gateway.domain.relay.test.recipients[0]"),
    ({"gateway": {"callout_timeout": 0}}, "gateway.callout_timeout"),
])
def test_bad_values_name_their_key(table, key):
    with pytest.raises(ConfigError) as e:
        load(**table)
    assert e.value.key == key
