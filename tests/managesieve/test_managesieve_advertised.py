"""ManageSieve is advertised where clients look: the _sieve._tcp SRV record of RFC 5804 1.8."""

from mailserver.cli.dnsrecords import records
from tests.harness import make_config


def test_sieve_srv_record_names_the_host_when_the_listener_is_configured(tmp_path):
    on = records(make_config(tmp_path, listeners=("managesieve",)), "example.test", [])
    assert "_sieve._tcp.example.test. 3600 IN SRV 0 1 4190 mail.example.test." in on
    off = records(make_config(tmp_path, listeners=("imap",)), "example.test", [])
    assert "_sieve._tcp.example.test. 3600 IN SRV 0 0 0 ." in off
