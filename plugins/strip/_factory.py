"""
The strip plugin's C{makeFilter}: the policy its settings ask for, and the
filter over it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._filter import Strip
from ._settings import parsePolicy


def makeFilter(settings: Mapping[str, Any]) -> Strip:
    """
    Build the filter from the C{settings} table of its C{[[filter]]} entry.

    @raise ValueError: an unknown setting, or a value of the wrong kind.
    """
    return Strip(parsePolicy(settings))
