"""
The C{[chain] quarantine} setting (and the store argument of
C{popproxy-quarantine}) read into a value: a directory, or a PostgreSQL
database given as a URL (C{postgresql://user@host:port/db}) or a libpq
connection string (C{host=… dbname=…}).  No I/O, no driver: the
configuration reads without psycopg installed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

__all__ = ["DatabaseAddress", "QuarantineAddress", "parseQuarantineAddress"]

_URL_SCHEMES = ("postgresql://", "postgres://")

#: A libpq connection string starts with a keyword and C{=}.
_CONNINFO = re.compile(r"[a-z_]{1,40}[ \t]*=")

#: A C{password=value} pair of a connection string (quoted or not).
_CONNINFO_PASSWORD = re.compile(r"password[ \t]*=[ \t]*('(?:[^'\\]|\\.)*'|[^ \t]*)")


@dataclass(frozen=True)
class DatabaseAddress:
    """
    A PostgreSQL database, as libpq reads it: a password may be in it, in
    a passfile or in C{PGPASSWORD} (libpq looks there itself).  The text
    is left out of C{repr()}: log L{describe} instead.
    """

    conninfo: str = field(repr=False)

    def describe(self) -> str:
        """
        The address without its password, for logs and the health page.
        """
        text = self.conninfo.strip()
        if not text.startswith(_URL_SCHEMES):
            return _CONNINFO_PASSWORD.sub("password=***", text)
        parts = urlsplit(text)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        user = f"{parts.username}@" if parts.username else ""
        try:
            port = f":{parts.port}" if parts.port else ""
        except ValueError:
            port = ""
        return f"{parts.scheme}://{user}{host}{port}{parts.path}"

    def __str__(self) -> str:
        return self.describe()


#: What a quarantine setting names.
QuarantineAddress = Path | DatabaseAddress


def isDatabase(text: str) -> bool:
    """
    Whether C{text} names a database rather than a directory.
    """
    text = text.strip()
    return text.startswith(_URL_SCHEMES) or _CONNINFO.match(text) is not None


def parseQuarantineAddress(text: str, base: Path) -> QuarantineAddress:
    """
    A database address for a URL or connection string, else a directory
    (relative to C{base}).
    """
    if isDatabase(text):
        return DatabaseAddress(text.strip())
    return base / text
