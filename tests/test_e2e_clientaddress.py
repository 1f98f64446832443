"""
End-to-end: `twistd -n popproxy` tells a real Dovecot the client's address
(client_address), and Dovecot's own log names it.  Test clients connect to
the proxy from 127.0.0.2 (the proxy itself reaches Dovecot from 127.0.0.1);
behind a haproxy: listener they claim 127.0.0.3 in their own PROXY header.
Plain, STLS and implicit-TLS upstreams; PROXY v1, v2 and XCLIENT.
"""

from __future__ import annotations

import re
import time
from typing import Any

import pytest

from tests.peers.certs import GeneratedCertificates
from tests.peers.dovecot import DovecotMailbox, DovecotServer, RawPop3Client

MESSAGE = b"Subject: where from?\r\n\r\nThe upstream knows.\r\n"
CLIENT = "127.0.0.2"


@pytest.fixture
def dovecotClientAddress(dovecotClientAddressServer: DovecotServer) -> DovecotMailbox:
    """
    A fresh user holding one message on the Dovecot that trusts the proxy.
    """
    mailbox = dovecotClientAddressServer.createMailbox()
    mailbox.deliver(MESSAGE)
    return mailbox


def proxyConfig(upstream: str, *extra: str, listen: str = "tcp:{PORT}:interface=127.0.0.1") -> str:
    return "\n".join(
        [
            "[proxy]",
            f'listen = ["{listen}"]',
            "login_failure_delay = 0",
            "[upstream]",
            f'default = "{upstream}"',
            *extra,
        ]
    )


def loginAddress(mailbox: DovecotMailbox, timeout: float = 10.0) -> tuple[str, str]:
    """
    The remote address (rip) and the rest of the line Dovecot logged for
    the mailbox's login, waiting (bounded) for its log to be written.
    """
    pattern = rf"Login: user=<{re.escape(mailbox.user)}>, method=[A-Z0-9-]+, rip=([^,]+), (.*)"
    deadline = time.monotonic() + timeout
    while (match := re.search(pattern, mailbox.log())) is None:
        assert time.monotonic() < deadline, f"no login of {mailbox.user} in:\n{mailbox.log()}"
        time.sleep(0.05)
    return match.group(1), match.group(2)


def retrieveThrough(
    port: int, mailbox: DovecotMailbox, source: str = CLIENT, preface: bytes = b""
) -> None:
    """
    Log in through the proxy from C{source} and retrieve the one message.
    """
    with RawPop3Client("127.0.0.1", port, sourceAddress=source, preface=preface) as client:
        assert client.greeting.startswith(b"+OK")
        client.login(mailbox.user, mailbox.password)
        assert client.retrieve(1) == MESSAGE
        client.quit()


def upstreamFor(mailbox: DovecotMailbox, mode: str, tls: str, caFile: str) -> tuple[str, list[str]]:
    """
    The upstream endpoint and settings for Dovecot's port that takes
    C{mode} (a haproxy = yes listener for PROXY headers) with C{tls}.
    """
    server = mailbox.server
    proxied = mode.startswith("proxy-")
    if tls == "implicit":
        port = server.haproxyPop3sPort if proxied else mailbox.pop3sPort
    else:
        port = server.haproxyPort if proxied else mailbox.port
    settings = [f'client_address = "{mode}"', f'tls = "{tls}"']
    if tls != "none":
        settings.append(f'ca_file = "{caFile}"')
    return f"tcp:localhost:{port}", settings


CASES = [
    ("proxy-v1", "none"),
    ("proxy-v2", "none"),
    ("proxy-v1", "starttls"),
    ("proxy-v2", "implicit"),
    ("xclient", "none"),
    ("xclient", "starttls"),
    ("xclient", "implicit"),
]


@pytest.mark.parametrize(("mode", "tls"), CASES)
def test_dovecotLogsClientAddress(
    mode: str,
    tls: str,
    dovecotClientAddress: DovecotMailbox,
    testCertificates: GeneratedCertificates,
    popproxyFactory: Any,
) -> None:
    """
    With client_address set, Dovecot logs the login as coming from the
    client's address (127.0.0.2), not the proxy's, over plain text and
    over TLS (the PROXY header before the handshake for implicit TLS, and
    before STLS; XCLIENT after STLS), and the message arrives intact.
    """
    mailbox = dovecotClientAddress
    upstream, settings = upstreamFor(mailbox, mode, tls, str(testCertificates.caFile))
    proxy = popproxyFactory(proxyConfig(upstream, *settings))
    retrieveThrough(proxy.port, mailbox)
    remote, rest = loginAddress(mailbox)
    assert remote == CLIENT
    assert ("TLS" in rest.split(", ")) == (tls != "none"), rest


def test_withoutClientAddressDovecotSeesProxy(
    dovecotClientAddress: DovecotMailbox, popproxyFactory: Any
) -> None:
    """
    The control: with client_address = "none" (the default) the same
    Dovecot sees the proxy's own address, which is what the setting fixes.
    """
    mailbox = dovecotClientAddress
    proxy = popproxyFactory(proxyConfig(f"tcp:127.0.0.1:{mailbox.port}"))
    retrieveThrough(proxy.port, mailbox)
    assert loginAddress(mailbox)[0] == "127.0.0.1"


@pytest.mark.parametrize("mode", ["proxy-v2", "xclient"])
def test_haproxyListenerAddressPassedOn(
    mode: str, dovecotClientAddress: DovecotMailbox, popproxyFactory: Any
) -> None:
    """
    Behind a haproxy: listener, the address the load balancer's header
    names (127.0.0.3) is what reaches Dovecot, not the balancer's own
    (127.0.0.2) nor the proxy's.
    """
    mailbox = dovecotClientAddress
    server = mailbox.server
    port = server.haproxyPort if mode == "proxy-v2" else mailbox.port
    proxy = popproxyFactory(
        proxyConfig(
            f"tcp:127.0.0.1:{port}",
            f'client_address = "{mode}"',
            listen="haproxy:tcp:{PORT}:interface=127.0.0.1",
        )
    )
    header = b"PROXY TCP4 127.0.0.3 127.0.0.1 40123 %d\r\n" % proxy.port
    retrieveThrough(proxy.port, mailbox, preface=header)
    assert loginAddress(mailbox)[0] == "127.0.0.3"


def test_xclientNotTrusted(dovecot: DovecotMailbox, popproxyFactory: Any) -> None:
    """
    A Dovecot that does not trust the proxy (it offers no XCLIENT) still
    serves the login, sees the proxy's address, and the proxy's log tells
    the administrator why, naming login_trusted_networks.
    """
    dovecot.deliver(MESSAGE)
    proxy = popproxyFactory(
        proxyConfig(f"tcp:127.0.0.1:{dovecot.port}", 'client_address = "xclient"')
    )
    retrieveThrough(proxy.port, dovecot)
    assert loginAddress(dovecot)[0] == "127.0.0.1"
    assert "does not offer XCLIENT" in proxy.log()
    assert "login_trusted_networks" in proxy.log()
