"""
Protocol tests for TLS towards clients in ClientSession: STLS, the
require-TLS policy (behind a PROXY header too: claimed addresses never
exempt, TLS terminated at the balancer counts), CAPA before and after TLS,
and STARTTLS command injection (CVE-2011-0411 class).
"""

from __future__ import annotations

import pytest
from twisted.logger import capturedLogs, formatEvent

from tests.sessionharness import Harness
from tests.test_proxyheader import PP2_CLIENT_SSL, sslTLV, tlv, v2, v2TCP4, v2TCP6

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


# Behind a haproxy: listener (PROXY header), require = "auto" / "always"

REMOTE_TO_LOOPBACK_V1 = b"PROXY TCP4 203.0.113.7 127.0.0.1 51234 110\r\n"
REMOTE_TO_LOOPBACK_V2 = v2TCP4("203.0.113.7", "127.0.0.1", 51234, 110)
BALANCER_TLS = v2TCP4(
    "203.0.113.7", "192.0.2.10", 51234, 995, sslTLV(PP2_CLIENT_SSL, 0, tlv(0x21, b"TLSv1.3"))
)


def loginRefused(h: Harness) -> bool:
    """
    Whether USER/PASS are refused for lack of TLS (and nothing reaches the
    upstream); otherwise they must have been relayed.
    """
    h.received()
    h.send(b"USER alice\r\nPASS secret\r\n")
    if h.received() == b"-ERR [AUTH] TLS is required first: use STLS\r\n" * 2:
        assert not h.upstreams or h.upstream.received() == b""
        return True
    assert h.upstream.received() == b"USER alice\r\n"
    return False


@pytest.mark.parametrize("header", [REMOTE_TO_LOOPBACK_V1, REMOTE_TO_LOOPBACK_V2], ids=["v1", "v2"])
def test_claimedLoopbackDestinationDoesNotExempt(header: bytes) -> None:
    """
    A PROXY header naming 127.0.0.1 as the destination, for a remote
    source, over a real connection that is loopback at both ends (HAProxy
    on the same host), does not make the client local: CAPA offers STLS
    and not USER, and USER/PASS are refused without reaching the upstream.
    """
    h = Harness(serverTLS=CERTIFICATE, proxyHeader=header)
    assert h.received() == b"+OK popproxy ready\r\n"
    lines = capabilities(h)
    assert b"STLS" in lines and b"USER" not in lines
    assert loginRefused(h)


def test_claimedLoopbackSourceDoesNotExemptRemoteSocket() -> None:
    """
    A header claiming 127.0.0.1 as both source and destination, on a
    connection that really comes from another host, does not exempt: the
    claim can only take the exemption away, never grant it.
    """
    h = Harness(
        serverTLS=CERTIFICATE,
        peerAddress="10.0.0.2",
        localAddress="10.0.0.1",
        proxyHeader=b"PROXY TCP4 127.0.0.1 127.0.0.1 40000 110\r\n",
    )
    assert loginRefused(h)


@pytest.mark.parametrize(
    ("header", "exempt"),
    [
        (b"PROXY TCP4 127.0.0.1 127.0.0.1 40000 110\r\n", True),
        (v2TCP6("::1", "::1", 40000, 110), True),
        (v2(0, 0x00, b""), True),
        (b"PROXY UNKNOWN\r\n", False),
        (v2(1, 0x00, b""), False),
        (b"PROXY TCP4 10.1.2.3 127.0.0.1 40000 110\r\n", False),
    ],
    ids=["v1 local client", "v2 local client", "v2 LOCAL", "v1 UNKNOWN", "v2 UNSPEC", "LAN"],
)
def test_sameHostBalancer(header: bytes, exempt: bool) -> None:
    """
    Over a loopback connection from a balancer on the same host, the
    exemption holds only when the header relays a loopback client or is
    the balancer's own (v2 LOCAL) connection; a relayed client the header
    does not name (v1 UNKNOWN, v2 AF_UNSPEC) or a LAN client needs TLS.
    """
    h = Harness(serverTLS=CERTIFICATE, proxyHeader=header)
    assert loginRefused(h) is not exempt


@pytest.mark.parametrize("require", ["auto", "always"])
def test_balancerTlsAllowsLogin(require: str) -> None:
    """
    A v2 header whose SSL TLV has PP2_CLIENT_SSL (TLS terminated at the
    balancer) counts as TLS, under "auto" and "always": USER/PASS reach the
    upstream without STLS, and the log says where TLS ended.
    """
    with capturedLogs() as events:
        h = Harness(
            serverTLS=CERTIFICATE,
            requireTLS=require,
            peerAddress="10.0.0.2",
            localAddress="10.0.0.1",
            proxyHeader=BALANCER_TLS,
        )
    assert not loginRefused(h)
    h.upstream.reply(b"+OK\r\n")
    assert h.upstream.received() == b"PASS secret\r\n"
    messages = [formatEvent(event) for event in events]
    assert any("TLS terminated by the balancer (TLSv1.3)" in m for m in messages), messages


def test_balancerTlsCapaAndStls() -> None:
    """
    With TLS terminated at the balancer, CAPA offers USER and SASL but not
    STLS (RFC 2595: TLS is already in place, as on an implicit-TLS
    listener), and STLS is refused without starting a second TLS layer.
    """
    h = Harness(
        serverTLS=CERTIFICATE,
        peerAddress="10.0.0.2",
        localAddress="10.0.0.1",
        proxyHeader=BALANCER_TLS,
    )
    h.received()
    lines = capabilities(h)
    assert b"STLS" not in lines and b"USER" in lines
    assert any(line.startswith(b"SASL ") for line in lines)
    h.send(b"STLS\r\n")
    assert h.received() == b"-ERR TLS is already active\r\n"
    assert h.client.tlsStarted is None


@pytest.mark.parametrize(
    "header",
    [
        v2TCP4("203.0.113.7", "127.0.0.1", 1, 110, sslTLV(0)),
        b"PROXY TCP4 203.0.113.7 127.0.0.1 51234 995\r\n",
        v2(0, 0x11, b"\x00" * 12 + sslTLV(PP2_CLIENT_SSL)),
    ],
    ids=["SSL TLV without PP2_CLIENT_SSL", "v1 header", "SSL TLV in a LOCAL header"],
)
def test_noBalancerTlsWithoutTheFlag(header: bytes) -> None:
    """
    Only a PROXY (not LOCAL) v2 header's SSL TLV with PP2_CLIENT_SSL counts
    as TLS; a TLV without the flag, a v1 header (which cannot say) or a TLV
    in an ignored LOCAL block leave a remote connection needing STLS.
    """
    h = Harness(
        serverTLS=CERTIFICATE, peerAddress="10.0.0.2", localAddress="10.0.0.1", proxyHeader=header
    )
    assert loginRefused(h)
    h.send(b"STLS\r\n")
    assert h.received() == b"+OK begin TLS negotiation\r\n"
