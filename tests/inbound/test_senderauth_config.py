"""The [senderauth] section: defaults, and bad values refused at load time naming the key."""

from __future__ import annotations

import pytest

from mailserver.config import ConfigError, load_dict


def load(**senderauth):
    return load_dict({"hostname": "mx.example.test", "data_dir": "/tmp/x", "senderauth": senderauth}, "test.toml")


def test_defaults():
    sa = load().senderauth
    assert (sa.enabled, sa.timeout, sa.max_queries, sa.dmarc_action, sa.arc_trusted_sealers) == (
        True, 10.0, 50, "policy", ())


@pytest.mark.parametrize("values, key", [
    ({"dmarc_action": "bounce"}, "senderauth.dmarc_action"),
    ({"dmarc_action_by_domain": {"example.org": "maybe"}}, "senderauth.dmarc_action_by_domain.example.org"),
    ({"timeout": 0}, "senderauth.timeout"),
    ({"timeout": 121}, "senderauth.timeout"),
    ({"max_queries": 0}, "senderauth.max_queries"),
    ({"arc_trusted_sealers": ["not a domain"]}, "senderauth.arc_trusted_sealers[0]"),
    ({"arc_trusted_sealers": ["localhost"]}, "senderauth.arc_trusted_sealers[0]"),
    ({"unknown": 1}, "senderauth.unknown"),
])
def test_bad_values_name_their_key(values, key):
    with pytest.raises(ConfigError) as e:
        load(**values)
    assert e.value.key == key
