"""
The one line C{--version} prints: popproxy's version and the versions of
what it runs on, which a bug report needs.
"""

from __future__ import annotations

import platform

import twisted
from popproxy import __version__


def versionLine(program: str) -> str:
    """
    C{program}'s version line, e.g. C{popproxy-quarantine 0.1.0 (Twisted
    26.10.0, Python 3.11.7)}.
    """
    return (
        f"{program} {__version__} "
        f"(Twisted {twisted.__version__}, Python {platform.python_version()})"
    )
