"""
The tag plugin's C{makeFilter}: checked settings, a spamd client on the
chain's reactor when scoring is on, and the filter over them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from twisted.internet.endpoints import clientFromString
from twisted.internet.interfaces import IReactorTime

from ._client import SpamdClient
from ._filter import TagFilter
from ._settings import parseSettings


def makeFilter(settings: Mapping[str, Any], reactor: IReactorTime) -> TagFilter:
    """
    Build the filter from the C{settings} table of its C{[[filter]]} entry;
    it talks to spamd through C{reactor}, the one the chain runs on.

    @raise ValueError: a bad setting or spamd address (stops start-up).
    """
    checked = parseSettings(settings)
    if not checked.spamd:
        return TagFilter(checked)
    endpoint = clientFromString(reactor, checked.spamd)
    client = SpamdClient(endpoint, reactor, checked.timeout, checked.user)
    return TagFilter(checked, client, clock=reactor)
