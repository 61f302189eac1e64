"""The ManageSieve session without sockets: capabilities, SASL, STARTTLS, states, limits, the outputs it asks for."""

import base64

from mailserver.config import LimitsConfig
from mailserver.managesieve import session as S
from mailserver.managesieve import wire

LIMITS = LimitsConfig(managesieve_max_line=1000, managesieve_max_errors=5)
PLAIN = base64.b64encode(b"\0bob@example.test\0pw").decode()


def new(**kw) -> S.ManageSieveSession:
    args = dict(limits=LIMITS, max_script_size=200, capabilities=S.Capabilities(sieve_extensions=("fileinto",)),
                tls_available=True, plaintext_without_tls=True)
    args.update(kw)
    return S.ManageSieveSession(**args)


def sent(outputs) -> bytes:
    return b"".join(o.data for o in outputs if isinstance(o, S.Send))


def logged_in(**kw) -> S.ManageSieveSession:
    s = new(**kw)
    s.greeting()
    out = s.data_received(f'AUTHENTICATE "PLAIN" "{PLAIN}"\r\n'.encode())
    assert out == [S.Authenticate("bob@example.test", "pw", "PLAIN")]
    assert sent(s.auth_result(True, 7, "bob@example.test")) == b'OK "Logged in"\r\n'
    return s


def test_greeting_lists_capabilities_then_ok():
    g = sent(new().greeting())
    assert g.startswith(b'"IMPLEMENTATION" "mailserver"\r\n"SASL" "PLAIN LOGIN"\r\n"SIEVE" "fileinto"\r\n')
    assert b'"STARTTLS"\r\n' in g and b'"VERSION" "1.0"\r\n' in g
    assert g.endswith(b'OK "ManageSieve ready"\r\n')


def test_without_tls_and_no_plaintext_sasl_is_empty_and_authenticate_needs_encryption():
    s = new(plaintext_without_tls=False)
    assert b'"SASL" ""\r\n' in sent(s.greeting())
    out = s.data_received(f'AUTHENTICATE "PLAIN" "{PLAIN}"\r\n'.encode())
    assert sent(out) == b'NO (ENCRYPT-NEEDED) "use STARTTLS before authenticating"\r\n'


def test_starttls_drops_what_was_pipelined_and_reissues_capabilities():
    """The CVE-2011-0411 class: a command sent in the clear after STARTTLS is never run inside TLS."""
    s = new(plaintext_without_tls=False)
    s.greeting()
    out = s.data_received(b'STARTTLS\r\nAUTHENTICATE "PLAIN" "' + PLAIN.encode() + b'"\r\n')
    assert isinstance(out[1], S.StartTls)
    assert sent(out[:1]) == b'OK "Begin TLS negotiation now"\r\n'
    after = sent(out[2:])
    assert b'"SASL" "PLAIN LOGIN"' in after and b"STARTTLS" not in after
    assert after.endswith(b'OK "TLS negotiation successful"\r\n')
    assert not any(isinstance(o, S.Authenticate) for o in out)
    assert sent(s.data_received(b"STARTTLS\r\n")) == b'NO "TLS is already active"\r\n'


def test_sasl_plain_without_initial_response_and_login():
    s = new()
    s.greeting()
    assert sent(s.data_received(b'AUTHENTICATE "PLAIN"\r\n')) == b'""\r\n'
    assert s.data_received(f'"{PLAIN}"\r\n'.encode()) == [S.Authenticate("bob@example.test", "pw", "PLAIN")]
    s = new()
    assert sent(s.data_received(b'AUTHENTICATE "LOGIN"\r\n')) == b'"VXNlcm5hbWU6"\r\n'
    assert sent(s.data_received(b'{4+}\r\nYm9i\r\n')) == b'"UGFzc3dvcmQ6"\r\n'
    assert s.data_received(b'"cHc="\r\n') == [S.Authenticate("bob", "pw", "LOGIN")]


def test_sasl_cancel_and_bad_response_are_no():
    s = new()
    s.data_received(b'AUTHENTICATE "PLAIN"\r\n')
    assert sent(s.data_received(b'"*"\r\n')).startswith(b"NO ")  # RFC 5804 2.1
    assert sent(s.data_received(b'AUTHENTICATE "PLAIN" "!!"\r\n')).startswith(b"NO ")
    assert sent(s.data_received(b'AUTHENTICATE "CRAM-MD5"\r\n')).startswith(b'NO "unsupported mechanism')
    # an authorization identity other than the user
    other = base64.b64encode(b"carol@example.test\0bob@example.test\0pw").decode()
    assert sent(s.data_received(f'AUTHENTICATE "PLAIN" "{other}"\r\n'.encode())) == \
        b'NO "authorization identity refused"\r\n'


def test_failed_and_throttled_logins():
    s = new()
    s.data_received(f'AUTHENTICATE "PLAIN" "{PLAIN}"\r\n'.encode())
    assert sent(s.auth_result(False, reason="invalid")) == b'NO "Authentication failed"\r\n'
    s.data_received(f'AUTHENTICATE "PLAIN" "{PLAIN}"\r\n'.encode())
    assert sent(s.auth_result(False, reason="throttled")).startswith(b"NO (TRYLATER) ")
    s.data_received(f'AUTHENTICATE "PLAIN" "{PLAIN}"\r\n'.encode())
    assert sent(s.auth_error()).startswith(b"NO (TRYLATER) ")


def test_script_commands_need_authentication():
    s = new()
    assert sent(s.data_received(b"LISTSCRIPTS\r\n")) == b'NO "authenticate first"\r\n'
    s = logged_in()
    assert sent(s.data_received(b"STARTTLS\r\n")) == b'NO "already authenticated"\r\n'


def test_commands_wait_for_the_running_one():
    s = logged_in()
    out = s.data_received(b'GETSCRIPT "a"\r\nLISTSCRIPTS\r\n')
    assert out == [S.Operation(7, wire.GetScript("a"))]
    assert s.busy
    out = s.op_done("keep;\r\n")
    assert sent(out[:1]) == b'{7}\r\nkeep;\r\n\r\nOK "Getscript completed"\r\n'
    assert out[1:] == [S.Operation(7, wire.ListScripts())]
    assert sent(s.op_done([S.ScriptEntry("a", False), S.ScriptEntry("b", True)])) == \
        b'"a"\r\n"b" ACTIVE\r\nOK "Listscripts completed"\r\n'


def test_op_failed_carries_the_code():
    s = logged_in()
    s.data_received(b'DELETESCRIPT "a"\r\n')
    assert sent(s.op_failed(wire.No("is active", wire.ACTIVE))) == b'NO (ACTIVE) "is active"\r\n'


def test_literal_limit_is_the_script_size_limit_after_login_and_small_before():
    s = new()
    big = b"x" * (S.MAX_PREAUTH_LITERAL + 1)
    out = s.data_received(b'AUTHENTICATE "PLAIN" {%d+}\r\n' % len(big) + big + b"\r\nNOOP\r\n")
    assert sent(out).startswith(b"NO ") and sent(out).endswith(b'OK "Done"\r\n')
    s = logged_in()
    at = b"k" * 200
    assert s.data_received(b'PUTSCRIPT "s" {200+}\r\n' + at + b"\r\n") == [
        S.Operation(7, wire.PutScript("s", at.decode()))]
    s.op_done("")
    out = s.data_received(b'PUTSCRIPT "s" {201+}\r\n' + at + b"k\r\nNOOP\r\n")
    assert sent(out).startswith(b"NO (QUOTA/MAXSIZE) ")
    assert sent(out).endswith(b'OK "Done"\r\n')
    assert sent(s.data_received(b'HAVESPACE "s" 201\r\n')).startswith(b"NO (QUOTA/MAXSIZE) ")
    assert s.data_received(b'HAVESPACE "s" 200\r\n') == [S.Operation(7, wire.HaveSpace("s", 200))]


def test_line_one_past_the_limit_says_bye():
    s = new()
    out = s.data_received(b"NOOP " + b"x" * 994 + b"\r\n")
    assert isinstance(out[-1], S.Close) and sent(out).startswith(b"BYE ")


def test_too_many_errors_end_the_session():
    s = new()
    out = s.data_received(b"FROB\r\n" * 5)
    assert sent(out).count(b"NO ") == 5 and sent(out).endswith(b'BYE "Too many errors"\r\n')
    assert isinstance(out[-1], S.Close)
    assert s.data_received(b"NOOP\r\n") == []


def test_noop_tag_logout_unauthenticate_and_owner():
    s = logged_in()
    assert sent(s.data_received(b'NOOP "x1"\r\n')) == b'OK (TAG "x1") "Done"\r\n'
    assert b'"OWNER" "bob@example.test"' in sent(s.data_received(b"CAPABILITY\r\n"))
    assert sent(s.data_received(b"UNAUTHENTICATE\r\n")) == b'OK "Unauthenticate completed"\r\n'
    assert sent(s.data_received(b"LISTSCRIPTS\r\n")) == b'NO "authenticate first"\r\n'
    out = s.data_received(b"LOGOUT\r\nNOOP\r\n")
    assert sent(out) == b'OK "Logout completed"\r\n' and isinstance(out[-1], S.Close)
