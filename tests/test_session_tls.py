"""
Protocol tests for TLS towards clients in ClientSession: STLS, the
require-TLS policy, CAPA before and after TLS, and STARTTLS command
injection (CVE-2011-0411 class).
"""

from __future__ import annotations

from tests.sessionharness import Harness

CERTIFICATE = object()  # stands in for the ServerTLS connection creator


def capabilities(h: Harness) -> list[bytes]:
    h.send(b"CAPA\r\n")
    if h.upstreams and h.upstream.received() == b"CAPA\r\n":
        h.upstream.reply(b"+OK\r\nTOP\r\nUIDL\r\n.\r\n")
    return h.received().split(b"\r\n")[1:-2]


def test_capaOffersStlsAndHidesUserWhenRequired() -> None:
    """
    On a non-loopback connection with a certificate, CAPA before TLS offers
    STLS and not USER; USER and PASS are refused with [AUTH] and never
    reach the upstream.
    """
    h = Harness(serverTLS=CERTIFICATE, localAddress="192.0.2.1")
    h.received()
    lines = capabilities(h)
    assert b"STLS" in lines and b"USER" not in lines
    h.send(b"USER alice\r\nPASS secret\r\n")
    assert h.received() == b"-ERR [AUTH] TLS is required first: use STLS\r\n" * 2
    assert h.upstream.received() == b""


def test_loopbackNeedsNoTls() -> None:
    """
    With the default policy, a connection that arrived on loopback may log
    in without TLS; STLS is still offered.
    """
    h = Harness(serverTLS=CERTIFICATE)
    h.received()
    lines = capabilities(h)
    assert b"STLS" in lines and b"USER" in lines
    h.send(b"USER alice\r\n")
    assert h.upstream.received() == b"USER alice\r\n"


def test_stlsThenLogin() -> None:
    """
    STLS answers +OK and starts TLS with the proxy's certificate; after it
    CAPA no longer offers STLS, offers USER, and logins are relayed.
    """
    h = Harness(serverTLS=CERTIFICATE, localAddress="192.0.2.1")
    h.received()
    h.send(b"STLS\r\n")
    assert h.received() == b"+OK begin TLS negotiation\r\n"
    assert h.client.tlsStarted is CERTIFICATE
    lines = capabilities(h)
    assert b"STLS" not in lines and b"USER" in lines
    h.send(b"USER alice\r\n")
    assert h.upstream.received() == b"USER alice\r\n"
    h.send(b"STLS\r\n")


def test_stlsTwice() -> None:
    """
    STLS once TLS is active is refused.
    """
    h = Harness(serverTLS=CERTIFICATE)
    h.received()
    h.send(b"STLS\r\n")
    h.received()
    h.send(b"STLS\r\n")
    assert h.received() == b"-ERR TLS is already active\r\n"


def test_stlsInjection() -> None:
    """
    Commands pipelined behind STLS in the same packet (before the
    handshake) are discarded: nothing of them is executed or relayed, even
    after TLS is up; so is a partial line.
    """
    h = Harness(serverTLS=CERTIFICATE, localAddress="192.0.2.1")
    h.received()
    h.send(b"STLS\r\nUSER mallory\r\nPASS x\r\nQUIT\r\nNOO")
    assert h.received() == b"+OK begin TLS negotiation\r\n"
    assert h.client.tlsStarted is CERTIFICATE
    h.send(b"P\r\n")  # would complete "NOOP" if the buffer had been kept
    assert h.received() == b"-ERR unknown command\r\n"
    assert h.upstream.received() == b""
    assert not h.client.disconnecting


def test_stlsForgetsPendingUser() -> None:
    """
    A USER accepted before STLS is forgotten (RFC 2595 section 4): PASS
    after TLS needs a new USER.
    """
    h = Harness(serverTLS=CERTIFICATE)
    h.received()
    h.send(b"USER alice\r\n")
    h.upstream.reply(b"+OK\r\n")
    h.send(b"STLS\r\n")
    h.received()
    h.upstream.received()
    h.send(b"PASS secret\r\n")
    assert h.received() == b"-ERR send USER first\r\n"
    assert h.upstream.received() == b""


def test_implicitTls() -> None:
    """
    On an implicit-TLS listener the session is secure from the start: no
    STLS offered, logins allowed whatever the policy.
    """
    h = Harness(serverTLS=CERTIFICATE, implicitTLS=True, requireTLS="always")
    h.received()
    lines = capabilities(h)
    assert b"STLS" not in lines and b"USER" in lines
    h.send(b"STLS\r\n")
    assert h.received() == b"-ERR TLS is already active\r\n"


def test_requireAlwaysAndNever() -> None:
    """
    require = always refuses logins before TLS even on loopback; never
    allows them anywhere.
    """
    h = Harness(serverTLS=CERTIFICATE, requireTLS="always")
    h.received()
    h.send(b"USER a\r\n")
    assert h.received().startswith(b"-ERR [AUTH] ")
    h = Harness(serverTLS=CERTIFICATE, requireTLS="never", localAddress="192.0.2.1")
    h.received()
    h.send(b"USER a\r\n")
    assert h.upstream.received() == b"USER a\r\n"
