"""
What one reading of the configuration serves: a L{Generation}, the frozen
value a start or a reload builds (through L{popproxy._assembly}) and a
reload compares with the one running (L{popproxy._reload}).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from popproxy._chain import FilterChain
from popproxy._config import Config


@dataclass(frozen=True, slots=True)
class ListenerPlan:
    """
    One listener of a generation.

    @ivar endpoint: the server endpoint string to listen on (a C{haproxy:}
        prefix taken off, a backlog added).
    @ivar factory: where its new sessions come from: the session factory
        with the settings of this generation, wrapped in the PROXY-header
        reader and TLS the description asks for.
    """

    endpoint: str
    factory: Any


@dataclass(frozen=True, slots=True)
class Generation:
    """
    A checked configuration and what it serves.

    @ivar listeners: one plan per listen description (plain ones first,
        then the implicit-TLS ones), keyed by the description as written,
        which is how a reload recognises an unchanged listener.
    """

    config: Config
    chain: FilterChain | None
    listeners: Mapping[str, ListenerPlan]
