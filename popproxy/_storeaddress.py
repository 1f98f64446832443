"""
The C{[limits] store} setting read into a value: C{"memory"} (the default:
counters in the process) or a Redis URL,
C{redis://[[user]:password@]host[:port][/db][?prefix=…&timeout=…&lease=…]}.
"""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = ["DEFAULT_LEASE", "DEFAULT_PREFIX", "DEFAULT_TIMEOUT", "RedisAddress", "parseStoreURL"]

#: Every key popproxy writes starts with this, unless the URL says C{prefix=}.
DEFAULT_PREFIX = "popproxy:"

#: The most one Redis command may take (seconds) before the proxy uses its
#: local counters for that call.
DEFAULT_TIMEOUT = 0.5

#: How long a session counted in Redis stays counted without being renewed
#: (seconds): what it takes for a dead instance's sessions to stop counting.
DEFAULT_LEASE = 30.0

_QUERY_KEYS = {"prefix", "timeout", "lease"}


@dataclass(frozen=True)
class RedisAddress:
    """
    Where the shared counters live, and how to reach them.  The password is
    left out of C{repr()} and of L{describe}: both may be logged.
    """

    host: str
    port: int = 6379
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    prefix: str = DEFAULT_PREFIX
    timeout: float = DEFAULT_TIMEOUT
    lease: float = DEFAULT_LEASE

    def describe(self) -> str:
        """
        The URL without its credentials, for log lines.
        """
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"redis://{host}:{self.port}/{self.db}"

    def isLiteral(self) -> bool:
        """
        Whether C{host} is an IP address (no name to resolve).
        """
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            return False
        return True


def _query(text: str) -> dict[str, str]:
    fields = parse_qs(text, keep_blank_values=True, strict_parsing=False)
    unknown = set(fields) - _QUERY_KEYS
    if unknown:
        raise ValueError(f"unknown store URL parameter(s): {', '.join(sorted(unknown))}")
    return {name: values[-1] for name, values in fields.items()}


def _seconds(name: str, text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        raise ValueError(f"store URL {name} {text!r} is not a number of seconds") from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"store URL {name} must be positive, not {text!r}")
    return seconds


def _database(path: str) -> int:
    name = path.lstrip("/")
    if not name:
        return 0
    if not name.isdigit():
        raise ValueError(f"store URL database {name!r} is not a number")
    return int(name)


def parseStoreURL(text: str) -> RedisAddress | None:
    """
    Read C{[limits] store}: C{None} for C{"memory"} (or an empty value),
    a L{RedisAddress} for a C{redis://} URL.

    @raise ValueError: anything else, saying what is wrong (never quoting
        the password).
    """
    text = text.strip()
    if text in ("", "memory"):
        return None
    parts = urlsplit(text)
    if parts.scheme != "redis":
        raise ValueError('store must be "memory" or a redis:// URL')
    try:
        port = 6379 if parts.port is None else parts.port
    except ValueError:
        port = 0
    if not 0 < port < 65536:
        raise ValueError("store URL port is not a number from 1 to 65535")
    if not parts.hostname:
        raise ValueError("store URL has no host")
    query = _query(parts.query)
    return RedisAddress(
        host=parts.hostname,
        port=port,
        db=_database(parts.path),
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        prefix=query.get("prefix", DEFAULT_PREFIX),
        timeout=_seconds("timeout", query["timeout"]) if "timeout" in query else DEFAULT_TIMEOUT,
        lease=_seconds("lease", query["lease"]) if "lease" in query else DEFAULT_LEASE,
    )
