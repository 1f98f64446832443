"""
The benchmark's floor of any filtering chain: one filter that delivers
every message unchanged at once, without reading it.

With it, every RETR takes the chain's path (the message spooled, its MIME
tree checked against the parse limits, one filter called, the answer
relayed as received) and nothing else: what that path costs before any
filter does work of its own (docs/performance.md, issue #16).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from zope.interface import implementer

from popproxy.interfaces import Deliver, FilterContext, IMessageFilter, Verdict
from popproxy.message import Message


@implementer(IMessageFilter)
class Passthrough:
    """
    Delivers every message as it is (a coroutine: it runs on the reactor,
    as strip and tag do on the benchmark's mail).
    """

    name = "passthrough"

    async def filterMessage(self, message: Message, context: FilterContext) -> Verdict:
        return Deliver()


def makeFilter(settings: Mapping[str, Any]) -> Passthrough:
    """
    The filter; it takes no settings.
    """
    if settings:
        raise ValueError(f"passthrough takes no settings, not {sorted(settings)}")
    return Passthrough()
