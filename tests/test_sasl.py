"""SASL PLAIN (RFC 4616) and LOGIN exchanges, sans-IO."""

from base64 import b64encode

import pytest

from mailserver import sasl
from mailserver.sasl import (
    MAX_IDENTITY_OCTETS,
    MAX_PASSWORD_OCTETS,
    MAX_RESPONSE_OCTETS,
    SaslAuthorizationError,
    SaslCancelled,
    SaslError,
)


def b64(data: bytes) -> bytes:
    return b64encode(data)


# ------------------------------------------------------------------------------------------- PLAIN


def test_plain_with_initial_response_finishes_at_once():
    """PLAIN with an initial response needs no challenge."""
    ex = sasl.start("PLAIN", b64(b"\0alice@example.org\0s3cret"))
    assert ex.done and ex.challenge is None
    assert (ex.username, ex.password) == ("alice@example.org", "s3cret")


def test_plain_without_initial_response_sends_empty_challenge():
    """Without an initial response the server sends an empty challenge, then reads the message."""
    ex = sasl.start("plain", None)
    assert ex.challenge == b"" and not ex.done
    ex.respond(b64(b"\0bob\0pw") + b"\r\n")
    assert ex.done and (ex.username, ex.password) == ("bob", "pw")


def test_plain_authzid_equal_to_authcid_is_accepted():
    """An authzid naming the same account (any case) is accepted."""
    ex = sasl.start("PLAIN", b64(b"Alice@Example.org\0alice@example.org\0pw"))
    assert ex.done and ex.username == "alice@example.org"


def test_plain_authzid_other_than_authcid_is_rejected():
    """Acting as another identity is refused."""
    with pytest.raises(SaslAuthorizationError):
        sasl.start("PLAIN", b64(b"admin@example.org\0alice@example.org\0pw"))


def test_plain_utf8_fields():
    """Fields are UTF-8 (RFC 4616 2)."""
    ex = sasl.start("PLAIN", b64("\0jürgen@exämple.org\0pässwörd".encode()))
    assert (ex.username, ex.password) == ("jürgen@exämple.org", "pässwörd")


@pytest.mark.parametrize("message", [
    b"alice\0pw",  # one NUL
    b"\0alice\0pw\0",  # three NULs
    b"\0alice\0pw\0extra",
    b"\0\0pw",  # empty authcid
    b"\0alice\0",  # empty password
    b"",  # nothing
    b"\0al\xffice\0pw",  # not UTF-8
    b"\0alice\0p\xc3",  # truncated UTF-8
    b"\xff\0alice\0pw",  # authzid not UTF-8
])
def test_plain_malformed_messages(message):
    """Malformed PLAIN messages raise SaslError."""
    with pytest.raises(SaslError):
        sasl.start("PLAIN", b64(message) if message else b"=")


def test_plain_empty_initial_response_equals_sign():
    """"=" is an empty initial response, which is not a valid PLAIN message."""
    with pytest.raises(SaslError, match="PLAIN message"):
        sasl.start("PLAIN", b"=")


def test_empty_initial_response_text_is_an_error():
    """An empty initial response must be sent as "=" (RFC 4954 4)."""
    with pytest.raises(SaslError, match="="):
        sasl.start("PLAIN", b"")


def test_plain_identity_at_limit_and_one_past():
    """authcid and authzid up to MAX_IDENTITY_OCTETS are accepted; one octet more is refused."""
    ident = b"a" * (MAX_IDENTITY_OCTETS - len(b"@x")) + b"@x"
    assert len(ident) == MAX_IDENTITY_OCTETS
    ex = sasl.start("PLAIN", b64(ident + b"\0" + ident + b"\0pw"))
    assert ex.username == ident.decode()
    with pytest.raises(SaslError, match="authentication identity longer"):
        sasl.start("PLAIN", b64(b"\0" + b"b" + ident + b"\0pw"))
    with pytest.raises(SaslError, match="authorization identity longer"):
        sasl.start("PLAIN", b64(b"b" + ident + b"\0" + ident + b"\0pw"))


def test_plain_password_at_limit_and_one_past():
    """Passwords up to MAX_PASSWORD_OCTETS are accepted; one octet more is refused."""
    pw = b"p" * MAX_PASSWORD_OCTETS
    assert sasl.start("PLAIN", b64(b"\0u\0" + pw)).password == pw.decode()
    with pytest.raises(SaslError, match="password longer"):
        sasl.start("PLAIN", b64(b"\0u\0" + pw + b"p"))


def test_largest_valid_plain_message_fits_the_response_limit():
    """The longest valid message (both identities and the password at their limits) is accepted."""
    ident = b"i" * MAX_IDENTITY_OCTETS
    line = b64(ident + b"\0" + ident + b"\0" + b"p" * MAX_PASSWORD_OCTETS)
    assert len(line) <= MAX_RESPONSE_OCTETS
    assert sasl.start("PLAIN", line).done


def test_response_at_limit_and_one_past():
    """A response of MAX_RESPONSE_OCTETS base64 octets is decoded; one octet more is refused before decoding."""
    at_limit = b"A" * MAX_RESPONSE_OCTETS  # valid base64 (4096 is a multiple of 4), decodes to zeros
    with pytest.raises(SaslError, match="PLAIN message"):
        sasl.start("PLAIN", at_limit)
    with pytest.raises(SaslError, match=f"longer than {MAX_RESPONSE_OCTETS}"):
        sasl.start("PLAIN", at_limit + b"A")
    ex = sasl.start("PLAIN", None)
    with pytest.raises(SaslError, match=f"longer than {MAX_RESPONSE_OCTETS}"):
        ex.respond(at_limit + b"A")


@pytest.mark.parametrize("line", [b"not base64!", b"YWJj=", b"YWJ", b"YW\xffJj", b"Y W J j", b"==", b"*x"])
def test_bad_base64_is_an_error(line):
    """Anything but strict base64 raises SaslError (not SaslCancelled)."""
    ex = sasl.start("PLAIN", None)
    with pytest.raises(SaslError) as info:
        ex.respond(line)
    assert not isinstance(info.value, SaslCancelled)
    with pytest.raises(SaslError):
        sasl.start("PLAIN", line)


def test_star_cancels_plain():
    """"*" cancels the exchange (RFC 4954 4)."""
    ex = sasl.start("PLAIN", None)
    with pytest.raises(SaslCancelled):
        ex.respond(b"*\r\n")
    assert not ex.done


def test_star_as_initial_response_is_malformed_not_cancel():
    """"*" has no meaning as an initial response: it is bad base64."""
    with pytest.raises(SaslError) as info:
        sasl.start("PLAIN", b"*")
    assert not isinstance(info.value, SaslCancelled)


def test_respond_after_the_end_is_an_error():
    """An exchange that finished or failed takes no more responses."""
    ex = sasl.start("PLAIN", b64(b"\0u\0p"))
    with pytest.raises(SaslError, match="finished"):
        ex.respond(b64(b"\0u\0p"))
    ex = sasl.start("PLAIN", None)
    with pytest.raises(SaslError):
        ex.respond(b"!!")
    with pytest.raises(SaslError, match="finished"):
        ex.respond(b64(b"\0u\0p"))


def test_unknown_mechanism():
    """Only PLAIN and LOGIN are offered."""
    assert sasl.MECHANISMS == ("PLAIN", "LOGIN")
    for name in ("CRAM-MD5", "XOAUTH2", "", "PLAIN "):
        with pytest.raises(SaslError, match="unsupported mechanism"):
            sasl.start(name, None)


# ------------------------------------------------------------------------------------------- LOGIN


def test_login_two_prompts():
    """LOGIN prompts "Username:" then "Password:", both base64."""
    ex = sasl.start("LOGIN", None)
    assert ex.challenge == b"VXNlcm5hbWU6"
    ex.respond(b64(b"alice@example.org"))
    assert ex.challenge == b"UGFzc3dvcmQ6" and not ex.done
    ex.respond(b64("pässword".encode()) + b"\r\n")
    assert ex.done and ex.challenge is None
    assert (ex.username, ex.password) == ("alice@example.org", "pässword")


def test_login_initial_response_is_the_username():
    """An initial response to LOGIN carries the user name; the server then asks for the password."""
    ex = sasl.start("login", b64(b"alice"))
    assert ex.challenge == b"UGFzc3dvcmQ6" and not ex.done
    ex.respond(b64(b"pw"))
    assert (ex.username, ex.password) == ("alice", "pw")


def test_login_empty_initial_response_is_an_empty_username():
    """"=" gives LOGIN an empty user name, which is refused."""
    with pytest.raises(SaslError, match="empty user name"):
        sasl.start("LOGIN", b"=")


@pytest.mark.parametrize("username,password,error", [
    (b"", b"pw", "empty user name"),
    (b"al\0ice", b"pw", "NUL in user name"),
    (b"\xc3", b"pw", "user name is not UTF-8"),
    (b"alice", b"", "empty password"),
    (b"alice", b"p\0w", "NUL in password"),
    (b"alice", b"\xff", "password is not UTF-8"),
])
def test_login_malformed_fields(username, password, error):
    """Empty, NUL-containing or non-UTF-8 fields are refused."""
    ex = sasl.start("LOGIN", None)
    with pytest.raises(SaslError, match=error):
        ex.respond(b64(username))
        ex.respond(b64(password))


def test_login_limits_at_and_one_past():
    """LOGIN fields share the PLAIN limits, checked one octet past each."""
    ex = sasl.start("LOGIN", b64(b"u" * MAX_IDENTITY_OCTETS))
    ex.respond(b64(b"p" * MAX_PASSWORD_OCTETS))
    assert ex.done
    with pytest.raises(SaslError, match="user name longer"):
        sasl.start("LOGIN", b64(b"u" * (MAX_IDENTITY_OCTETS + 1)))
    ex = sasl.start("LOGIN", b64(b"u"))
    with pytest.raises(SaslError, match="password longer"):
        ex.respond(b64(b"p" * (MAX_PASSWORD_OCTETS + 1)))


def test_star_cancels_login_at_either_prompt():
    """"*" cancels LOGIN at the user name and at the password prompt."""
    ex = sasl.start("LOGIN", None)
    with pytest.raises(SaslCancelled):
        ex.respond(b"*")
    ex = sasl.start("LOGIN", b64(b"alice"))
    with pytest.raises(SaslCancelled):
        ex.respond(b"*")
    assert not ex.done


def test_empty_response_line_is_an_empty_response():
    """An empty line answers a challenge with zero octets: for LOGIN an empty user name."""
    ex = sasl.start("LOGIN", None)
    with pytest.raises(SaslError, match="empty user name"):
        ex.respond(b"")


def test_sasl_module_does_not_import_twisted():
    """The wire module is sans-IO."""
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(sasl))
    names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    names += [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module]
    assert not [n for n in names if n.split(".")[0] == "twisted"]
