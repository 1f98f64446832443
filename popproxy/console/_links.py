"""
The console's addresses of things: the path of an item's page, and the
absolute link to it that notices carry (the C{[console] public_url}
before the path).  Only here, so the pages and the notices cannot
disagree.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote

from popproxy._verdicts import noItemUrl


def itemPath(identifier: str) -> str:
    """
    The path of the page of the item C{identifier}.
    """
    return "/item/" + quote(identifier, safe="")


@dataclass(frozen=True, slots=True)
class ItemLinks:
    """
    Links to items under the console's public base URL (no trailing slash).
    """

    base: str

    def __call__(self, identifier: str) -> str:
        return self.base + itemPath(identifier)


def itemLinks(publicUrl: str | None) -> Callable[[str], str]:
    """
    What makes the link to an item in a notice: under C{publicUrl}, or
    nothing at all without one.
    """
    if not publicUrl:
        return noItemUrl
    return ItemLinks(publicUrl.rstrip("/"))
