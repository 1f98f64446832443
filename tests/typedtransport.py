"""
Twisted's StringTransport with the attribute types Twisted leaves out.

Twisted declares C{producer = None} and C{streaming = None} without
annotations, so mypy types them C{None}: every check that a producer was
registered reads as always false and mypy silently stops checking the rest
of the test.  Tests that look at the registered producer use this class;
its calls read state afresh where an earlier assertion narrowed the
attribute.
"""

from __future__ import annotations

from twisted.internet.interfaces import IProducer
from twisted.internet.testing import StringTransport


class ProducerTransport(StringTransport):
    """
    A StringTransport whose C{producer} and C{streaming} are typed as
    C{registerProducer} sets them.
    """

    producer: IProducer | None  # type: ignore[assignment]  # Twisted infers None
    streaming: bool | None  # type: ignore[assignment]  # Twisted infers None

    def registeredProducer(self) -> IProducer | None:
        """
        The producer registered now.  A call, unlike the attribute, is not
        narrowed by an earlier assertion, so a test can check it again after
        the code under test changed it.
        """
        return self.producer

    def isDisconnecting(self) -> bool:
        """
        Whether the connection is being closed now (C{disconnecting}), read
        by a call so that an earlier C{assert not transport.disconnecting}
        does not make mypy take a later check for always false.
        """
        return bool(self.disconnecting)
