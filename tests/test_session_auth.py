"""
Protocol tests for logins other than plain USER/PASS: AUTH PLAIN and LOGIN
(RFC 5034) with translation to what the upstream offers, USER/PASS to an
upstream that offers only SASL, APOP with the upstream's timestamp, and
the delay after failed logins.
"""

from __future__ import annotations

import base64

from twisted.logger import capturedLogs, formatEvent

from popproxy._config import Config, DomainRoute
from tests.sessionharness import Harness

SASL_CAPA = b"+OK\r\nTOP\r\nUIDL\r\nSASL PLAIN LOGIN\r\nUSER\r\n.\r\n"
PLAIN_CAPA = b"+OK\r\nTOP\r\nUIDL\r\nUSER\r\n.\r\n"


def b64(data: bytes) -> bytes:
    return base64.b64encode(data)


def test_authListsMechanisms() -> None:
    """
    AUTH without arguments lists PLAIN and LOGIN; CAPA announces SASL.
    """
    h = Harness()
    h.received()
    h.send(b"AUTH\r\n")
    assert h.received() == b"+OK\r\nPLAIN\r\nLOGIN\r\n.\r\n"
    h.send(b"CAPA\r\n")
    h.upstream.reply(PLAIN_CAPA)
    assert b"SASL PLAIN LOGIN\r\n" in h.received()


def test_plainWithInitialResponseToSaslUpstream() -> None:
    """
    AUTH PLAIN with an initial response is relayed as AUTH PLAIN to an
    upstream that offers it, and success enters TRANSACTION.
    """
    h = Harness()
    h.received()
    h.send(b"AUTH PLAIN " + b64(b"\0alice\0s3cret") + b"\r\n")
    assert h.upstream.received() == b"CAPA\r\n"
    h.upstream.reply(SASL_CAPA)
    assert h.upstream.received() == b"AUTH PLAIN " + b64(b"\0alice\0s3cret") + b"\r\n"
    h.upstream.reply(b"+OK Logged in.\r\n")
    assert h.received() == b"+OK Logged in.\r\n"
    assert h.session.state == "TRANSACTION" and h.session.record.user == "alice"


def test_plainTranslatedToUserPass() -> None:
    """
    AUTH PLAIN (without initial response) towards an upstream without SASL
    becomes USER/PASS, with the route's login rewriting applied.
    """
    config = Config(
        upstream="tcp:default:110",
        routes=(DomainRoute("corp.example", "tcp:corp:110", "strip-domain"),),
    )
    h = Harness(config=config)
    h.received()
    h.send(b"AUTH PLAIN\r\n")
    assert h.received() == b"+ \r\n"
    h.send(b64(b"\0bob@corp.example\0pw with spaces") + b"\r\n")
    assert h.upstream.address == "tcp:corp:110"
    assert h.upstream.received() == b"CAPA\r\n"
    h.upstream.reply(PLAIN_CAPA)
    assert h.upstream.received() == b"USER bob\r\n"
    h.upstream.reply(b"+OK\r\n")
    assert h.upstream.received() == b"PASS pw with spaces\r\n"
    h.upstream.reply(b"+OK welcome\r\n")
    assert h.received() == b"+OK welcome\r\n"
    assert h.session.record.user == "bob@corp.example"


def test_loginMechanism() -> None:
    """
    AUTH LOGIN asks for the user name and the password, base64-encoded.
    """
    h = Harness()
    h.received()
    h.send(b"AUTH LOGIN\r\n")
    assert h.received() == b"+ VXNlcm5hbWU6\r\n"
    h.send(b64(b"carol") + b"\r\n")
    assert h.received() == b"+ UGFzc3dvcmQ6\r\n"
    h.send(b64(b"pw") + b"\r\n")
    h.upstream.reply(SASL_CAPA)
    h.upstream.received()
    h.upstream.reply(b"+OK\r\n")
    assert h.session.state == "TRANSACTION" and h.session.record.user == "carol"


def test_cancelAndBadBase64() -> None:
    """
    '*' cancels an AUTH exchange and bad base64 gets -ERR; the session goes
    on and the upstream hears nothing of either.
    """
    h = Harness()
    h.received()
    h.send(b"AUTH PLAIN\r\n")
    h.send(b"*\r\n")
    h.send(b"AUTH PLAIN !!!notbase64\r\n")
    h.send(b"AUTH PLAIN " + b64(b"no-nul-bytes") + b"\r\n")
    h.send(b"AUTH CRAM-MD5\r\n")
    assert h.received() == (
        b"+ \r\n"
        b"-ERR authentication cancelled\r\n"
        b"-ERR [AUTH] invalid base64 in the authentication response\r\n"
        b"-ERR [AUTH] malformed PLAIN response\r\n"
        b"-ERR unsupported authentication mechanism\r\n"
    )
    assert h.upstream.received() == b""
    h.send(b"USER alice\r\n")
    assert h.upstream.received() == b"USER alice\r\n"


def test_authFailureRelayedAfterDelay() -> None:
    """
    The upstream's -ERR [AUTH] reaches the client only after the configured
    failure delay; nothing else is answered meanwhile.
    """
    h = Harness(loginFailureDelay=2.0)
    h.received()
    h.send(b"AUTH PLAIN " + b64(b"\0alice\0wrong") + b"\r\nNOOP\r\n")
    h.upstream.reply(SASL_CAPA)
    h.upstream.reply(b"-ERR [AUTH] Authentication failed.\r\n")
    h.clock.advance(1.9)
    assert h.received() == b""
    h.clock.advance(0.2)
    assert h.received() == (
        b"-ERR [AUTH] Authentication failed.\r\n"
        b"-ERR NOOP is not valid in the AUTHORIZATION state\r\n"
    )


def test_passFailureDelayed() -> None:
    """
    A wrong PASS is answered after the failure delay too.
    """
    h = Harness(loginFailureDelay=1.0)
    h.received()
    h.send(b"USER a\r\n")
    h.upstream.reply(b"+OK\r\n")
    h.send(b"PASS b\r\n")
    h.upstream.reply(b"-ERR [AUTH] no\r\n")
    assert h.received() == b"+OK\r\n"
    h.clock.advance(1.0)
    assert h.received() == b"-ERR [AUTH] no\r\n"


def test_proxyAuthorizationNeedsSasl() -> None:
    """
    A PLAIN authorization identity different from the authentication
    identity cannot be expressed with USER/PASS: refused, nothing sent.
    """
    h = Harness()
    h.received()
    h.send(b"AUTH PLAIN " + b64(b"boss\0admin\0pw") + b"\r\n")
    h.upstream.reply(PLAIN_CAPA)
    assert h.received().startswith(b"-ERR [AUTH] ")
    assert h.upstream.received() == b"CAPA\r\n"


def test_apopWithUpstreamTimestamp() -> None:
    """
    With a static upstream the greeting carries the upstream's timestamp
    and APOP is relayed with the client's digest unchanged.
    """
    h = Harness(greet=False)
    h.upstream.reply(b"+OK Dovecot ready. <1896.697170952@dbc.mtview.ca.us>\r\n")
    assert h.received() == b"+OK popproxy ready <1896.697170952@dbc.mtview.ca.us>\r\n"
    h.send(b"APOP mrose c4c9334bac560ecc979e58001b3e22fb\r\n")
    assert h.upstream.received() == b"APOP mrose c4c9334bac560ecc979e58001b3e22fb\r\n"
    h.upstream.reply(b"+OK maildrop has 1 message (369 octets)\r\n")
    assert h.session.state == "TRANSACTION"


def test_apopWithoutTimestamp() -> None:
    """
    With per-user routing the greeting has no timestamp and APOP gets a
    clear -ERR; malformed APOP too.
    """
    config = Config(upstream="tcp:d:110", routes=(DomainRoute("x.example", "tcp:x:110"),))
    h = Harness(config=config)
    assert h.received() == b"+OK popproxy ready\r\n"
    h.send(b"APOP mrose c4c9334bac560ecc979e58001b3e22fb\r\n")
    assert h.received() == b"-ERR APOP is not available here: use USER/PASS or AUTH\r\n"
    h = Harness(greet=False)
    h.upstream.reply(b"+OK <1.2@h>\r\n")
    h.received()
    h.send(b"APOP mrose nothex\r\n")
    assert h.received() == b"-ERR APOP needs a name and an MD5 digest\r\n"


def test_authBeforeTlsRefused() -> None:
    """
    AUTH and APOP are refused before TLS when TLS is required.
    """
    h = Harness(serverTLS=object(), localAddress="192.0.2.1")
    h.received()
    h.send(b"AUTH PLAIN " + b64(b"\0a\0b") + b"\r\nAPOP a c4c9334bac560ecc979e58001b3e22fb\r\n")
    assert h.received() == b"-ERR [AUTH] TLS is required first: use STLS\r\n" * 2
    assert h.upstream.received() == b""


SASL_ONLY_CAPA = b"+OK\r\nTOP\r\nUIDL\r\nSASL PLAIN\r\n.\r\n"


def test_userPassToSaslOnlyUpstream() -> None:
    """
    USER/PASS from the client reaches an upstream that refuses USER and
    offers only SASL PLAIN (no USER in its CAPA) as AUTH PLAIN, so such a
    client can log in; the password is in no log event.
    """
    h = Harness()
    h.received()
    with capturedLogs() as events:
        h.send(b"USER alice\r\n")
        assert h.upstream.received() == b"USER alice\r\n"
        h.upstream.reply(b"-ERR [AUTH] USER is not supported, use AUTH\r\n")
        assert h.upstream.received() == b"CAPA\r\n"
        h.upstream.reply(SASL_ONLY_CAPA)
        assert h.received().startswith(b"+OK ")
        h.send(b"PASS s3cret pw\r\n")
        assert h.upstream.received() == b"AUTH PLAIN " + b64(b"\0alice\0s3cret pw") + b"\r\n"
        h.upstream.reply(b"+OK Logged in.\r\n")
    assert h.received() == b"+OK Logged in.\r\n"
    assert h.session.state == "TRANSACTION"
    assert not any("s3cret" in formatEvent(event) for event in events)


def test_userRefusalStandsWhenUpstreamTakesUser() -> None:
    """
    If the upstream refused USER although it announces USER (or answers
    no CAPA), its refusal reaches the client as it was, and PASS is not
    accepted after it.
    """
    for capa in (PLAIN_CAPA, b"-ERR no CAPA here\r\n"):
        h = Harness()
        h.received()
        h.send(b"USER mallory\r\n")
        h.upstream.received()
        h.upstream.reply(b"-ERR [AUTH] unknown user\r\n")
        assert h.upstream.received() == b"CAPA\r\n"
        h.upstream.reply(capa)
        assert h.received() == b"-ERR [AUTH] unknown user\r\n"
        h.send(b"PASS x\r\n")
        assert h.received() == b"-ERR send USER first\r\n"
        assert h.upstream.received() == b""


def test_saslOnlyUpstreamRefusesPassword() -> None:
    """
    A wrong password at a SASL-only upstream is a failed login for the
    client, as with PASS.
    """
    h = Harness()
    h.received()
    h.send(b"USER alice\r\n")
    h.upstream.received()
    h.upstream.reply(b"-ERR use AUTH\r\n")
    h.upstream.received()
    h.upstream.reply(SASL_ONLY_CAPA)
    h.received()
    h.send(b"PASS wrong\r\n")
    assert h.upstream.received() == b"AUTH PLAIN " + b64(b"\0alice\0wrong") + b"\r\n"
    h.upstream.reply(b"-ERR [AUTH] Authentication failed.\r\n")
    assert h.received() == b"-ERR [AUTH] Authentication failed.\r\n"
    assert h.session.state == "AUTHORIZATION"
