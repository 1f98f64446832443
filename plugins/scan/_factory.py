"""
The scan plugin's C{makeFilter}: checked settings, a clamd client on the
chain's reactor, and the filter over them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from twisted.internet.endpoints import clientFromString
from twisted.internet.interfaces import IReactorTime

from ._client import ClamdClient
from ._filter import VirusScan
from ._settings import parseSettings


def makeFilter(settings: Mapping[str, Any], reactor: IReactorTime) -> VirusScan:
    """
    Build the filter from its settings, talking to clamd through
    C{reactor} (the one the chain runs on: its clock times the scans).
    """
    parsed = parseSettings(settings)
    try:
        endpoint = clientFromString(reactor, parsed.address)
    except (ValueError, TypeError, KeyError) as e:
        raise ValueError(f"address {parsed.address!r} cannot be used: {e}") from None
    client = ClamdClient(endpoint, parsed.maxConnections, clock=reactor)
    return VirusScan(client, reactor, parsed)
