"""
What an upstream server said it can do: its CAPA answer (RFC 2449), parsed
once into a frozen value; L{CapabilityCache} keeps the last one per
upstream for CAPA before login without an upstream connection.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field

from popproxy._framing import StatusLine, unstuff


@dataclass(frozen=True, slots=True)
class UpstreamCapabilities:
    """
    An upstream's capability lines and SASL mechanisms; both empty if it
    refused CAPA (or was not asked).

    @ivar lines: each capability line as sent (without CRLF), in order.
    @ivar mechanisms: the names after C{SASL}, upper case.
    """

    lines: tuple[bytes, ...] = ()
    mechanisms: frozenset[bytes] = frozenset()
    _byName: dict[bytes, bytes] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def fromLines(cls, lines: tuple[bytes, ...]) -> UpstreamCapabilities:
        """
        From capability lines; a name given twice means its last line.
        """
        byName = {line.split(b" ", 1)[0].upper(): line for line in lines}
        mechanisms = frozenset(byName.get(b"SASL", b"").upper().split()[1:])
        return cls(lines, mechanisms, byName)

    @classmethod
    def fromResponse(cls, status: StatusLine, body: bytes) -> UpstreamCapabilities:
        """
        From a CAPA response: its status line and its dot-stuffed body
        without the terminating line.
        """
        if not status.ok:
            return cls()
        return cls.fromLines(tuple(line for line in unstuff(body).split(b"\r\n") if line))

    def __contains__(self, name: bytes) -> bool:
        """
        Whether the capability C{name} (upper case) was announced.
        """
        return name in self._byName

    def line(self, name: bytes) -> bytes | None:
        """
        The line announcing capability C{name} (upper case), as sent.
        """
        return self._byName.get(name)

    def offersPlain(self) -> bool:
        """
        Whether SASL PLAIN logins are accepted.
        """
        return b"PLAIN" in self.mechanisms


#: Capabilities relayed verbatim from the upstream: they describe the
#: upstream mailbox's policy, which applies through the proxy as well.
POLICY_CAPABILITIES = (b"LOGIN-DELAY", b"EXPIRE")


def proxyCapabilities(
    upstream: UpstreamCapabilities | None,
    *,
    mechanisms: tuple[bytes, ...],
    loginsAllowed: bool,
    offerSTLS: bool,
    implementation: bytes,
) -> bytes:
    """
    The proxy's own CAPA answer, status line to terminating line.

    @param upstream: the upstream's capabilities, or C{None} when the
        upstream is not known yet (then TOP and UIDL, which nearly every
        server has, are announced; the list after login is exact).
    @param mechanisms: the SASL mechanisms the proxy takes from clients.
    @param loginsAllowed: whether USER and SASL are announced (not when
        logins need TLS first).
    @param offerSTLS: whether STLS is announced.
    @param implementation: the IMPLEMENTATION line's value.
    """
    lines = []
    if upstream is None:
        lines += [b"TOP", b"UIDL"]
    else:
        lines += [name for name in (b"TOP", b"UIDL") if name in upstream]
        policy = (upstream.line(name) for name in POLICY_CAPABILITIES)
        lines += [line for line in policy if line is not None]
    if loginsAllowed:
        lines.append(b"USER")
        lines.append(b"SASL " + b" ".join(mechanisms))
    if offerSTLS:
        lines.append(b"STLS")
    lines += [b"PIPELINING", b"RESP-CODES", b"AUTH-RESP-CODE", b"IMPLEMENTATION " + implementation]
    listed = b"".join(line + b"\r\n" for line in lines)
    return b"+OK capability list follows\r\n" + listed + b".\r\n"


class CapabilityCache:
    """
    The capability list each upstream gave last before login, by address:
    a session that holds no upstream connection before login (see
    C{[limits] upstream_hold}) answers CAPA from it without connecting.
    """

    def __init__(self) -> None:
        self._lists: dict[Hashable, UpstreamCapabilities] = {}

    def remember(self, address: Hashable, capabilities: UpstreamCapabilities) -> None:
        self._lists[address] = capabilities

    def lookUp(self, address: Hashable) -> UpstreamCapabilities | None:
        return self._lists.get(address)
