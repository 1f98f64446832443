"""
The console's HTML, written as Jinja2 templates (templates/) with
autoescaping always on: every value a page shows (file names, subjects,
addresses: chosen by whoever sent the mail) is escaped as HTML, in text
and in attribute values alike.  Pages carry no inline script or style;
the style sheet is a static file (static/console.css).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from popproxy.console._charts import duration

#: Where the templates and the static files are.
HERE = Path(__file__).resolve().parent


def when(seconds: float) -> str:
    """
    A POSIX time as the pages show it (UTC, to the minute).
    """
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(seconds))


def clock(seconds: float) -> str:
    """
    A POSIX time to the second (UTC), for events such as blocks.
    """
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(seconds))


def isotime(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def size(octets: int) -> str:
    """
    A size in bytes, KiB, MiB or GiB, as people read it.
    """
    if octets < 1024:
        return f"{octets} bytes"
    if octets < 1024 * 1024:
        return f"{octets / 1024:.1f} KiB"
    if octets < 1024**3:
        return f"{octets / (1024 * 1024):.1f} MiB"
    return f"{octets / 1024**3:.1f} GiB"


class Templates:
    """
    Renders the console's pages.
    """

    def __init__(self, directory: Path = HERE / "templates") -> None:
        self._environment = Environment(
            loader=FileSystemLoader(directory),
            autoescape=True,
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self._environment.filters.update(
            when=when, isotime=isotime, size=size, clock=clock, duration=duration
        )

    def render(self, name: str, **values: Any) -> bytes:
        """
        The page of template C{name} with C{values}, as UTF-8.
        """
        return self._environment.get_template(name).render(**values).encode("utf-8")
