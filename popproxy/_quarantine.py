"""
The quarantine: where originals replaced by a notice are kept, as files.

Each original is written as C{<id>.eml} (the exact bytes received) beside
C{<id>.json} (why, which filter, user, UIDL, when), atomically: a reader
never sees half a file.  Nothing in popproxy ever deletes from it.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred
from zope.interface import implementer

from popproxy._chain import runHere
from popproxy.interfaces import FilterContext, IQuarantine


@implementer(IQuarantine)
class DirectoryQuarantine:
    """
    Keeps originals in a directory (created if missing, mode 0700).

    @param runInThread: where the file writes run (off the reactor thread
        in production).
    """

    def __init__(
        self, directory: Path, runInThread: Callable[[Callable[[], Any]], Deferred[Any]] = runHere
    ) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._runInThread = runInThread

    def store(
        self, original: bytes, context: FilterContext, reason: str, plugin: str = ""
    ) -> Deferred[str]:
        identifier = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + secrets.token_hex(6)
        metadata = {
            "id": identifier,
            "reason": reason,
            "plugin": plugin,
            "user": context.user,
            "uidl": context.uidl,
            "command": context.command,
            "index": context.index,
            "client": context.client,
            "upstream": context.upstream,
            "session": context.session,
            "notes": dict(context.notes),
            "size": len(original),
            "time": time.time(),
        }
        return self._runInThread(lambda: self._write(identifier, original, metadata))

    def _write(self, identifier: str, original: bytes, metadata: dict[str, Any]) -> str:
        for suffix, data in (
            (".eml", original),
            (".json", json.dumps(metadata, indent=2).encode("utf-8")),
        ):
            final = self.directory / f"{identifier}{suffix}"
            temporary = self.directory / f".{identifier}{suffix}.tmp"
            with open(temporary, "wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, final)
        return identifier
