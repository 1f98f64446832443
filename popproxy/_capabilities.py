"""
What an upstream server said it can do: its CAPA answer (RFC 2449), parsed
once into a frozen value.
"""

from __future__ import annotations

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
