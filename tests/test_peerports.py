"""
The tests' free-port finder never hands out one port twice in a run: a
test that asks for two ports (a proxy's and its console's) before either
is bound gets two different ones, so the proxy can listen on both (the
kernel itself may pick the same free port twice in a row, which once
failed tests/test_e2e_console_reload.py).
"""

from __future__ import annotations

import socket

from tests.peers.ports import freePort


def test_portsAreNeverHandedOutTwice() -> None:
    """
    200 ports asked for in a row, none bound in between: all different,
    and each one can be bound.
    """
    ports = [freePort() for _ in range(200)]
    assert len(set(ports)) == 200
    for port in ports[:20]:
        with socket.socket() as listener:
            listener.bind(("127.0.0.1", port))
