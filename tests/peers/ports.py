"""Find free loopback TCP ports and wait, with a bound, until a peer listens on one."""

from __future__ import annotations

import ipaddress
import socket
import time

__all__ = ["freePort", "waitForPort"]


def _family(host: str) -> socket.AddressFamily:
    """
    Return the address family of C{host}, refusing anything but a loopback literal.

    Test peers must never listen on, or be reached through, a routable address.
    """
    address = ipaddress.ip_address(host)
    if not address.is_loopback:
        raise ValueError(f"{host!r} is not a loopback address")
    return socket.AF_INET6 if address.version == 6 else socket.AF_INET


def freePort(host: str = "127.0.0.1") -> int:
    """
    Return a TCP port on loopback C{host} that nothing listens on right now.

    The port is only free at the moment of the call: a peer that fails to bind it
    because someone else took it in between should pick another one and retry.
    """
    family = _family(host)
    for _ in range(100):
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((host, 0))
            port: int = probe.getsockname()[1]
        # The kernel may hand the same free port out twice in a row: a test
        # that asks for two (the proxy's and its console's) before either is
        # bound would give both to one process, which then cannot listen.
        if port not in _handedOut:
            _handedOut.add(port)
            return port
    raise RuntimeError("no loopback port that was not handed out already")


#: Every port freePort has returned in this test run.
_handedOut: set[int] = set()


def waitForPort(host: str, port: int, timeout: float) -> None:
    """
    Return as soon as C{host}:C{port} accepts a TCP connection.

    @raise TimeoutError: if nothing accepted a connection within C{timeout} seconds.
    """
    _family(host)
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"nothing accepted connections on {host}:{port} within {timeout}s")
        try:
            with socket.create_connection((host, port), timeout=min(remaining, 1.0)):
                return
        except OSError:
            time.sleep(min(0.05, max(deadline - time.monotonic(), 0)))
