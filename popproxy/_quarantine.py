"""
The quarantine: where everything a filter removes or replaces is kept.

Layout of the directory::

    blobs/ab/abcdef...     the exact bytes, named by their SHA-256 (stored once)
    records/<id>.json      one record per removal: when, user, upstream, UIDL,
                           plugin, reason, the original's header lines, blob

Every file is written to a temporary name, flushed to disk and renamed, so
a reader never sees half a file; a write that fails (disk full,
permissions) fails the store, and the chain then refuses to deliver the
stripped message (the client gets -ERR [SYS/TEMP], the original stays on
the server).  Nothing is ever deleted except by L{Quarantine.purge}, the
documented cleanup (C{popproxy quarantine purge}).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred
from zope.interface import implementer

from popproxy._chain import runHere
from popproxy.interfaces import FilterContext, IQuarantine


@dataclass(frozen=True)
class Record:
    """
    One quarantined item, as stored.
    """

    id: str
    time: float
    reason: str
    plugin: str
    user: str
    uidl: str | None
    upstream: str
    size: int
    sha256: str
    headers: str
    data: dict[str, Any]


def _headerBlock(original: bytes, limit: int = 4096) -> str:
    """
    The header lines at the start of C{original} (a message or a part).
    """
    head = original[:limit]
    for separator in (b"\r\n\r\n", b"\n\n"):
        end = head.find(separator)
        if end != -1:
            head = head[:end]
            break
    return head.decode("utf-8", "replace")


def _writeAtomically(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        with open(temporary, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


@implementer(IQuarantine)
class DirectoryQuarantine:
    """
    A quarantine in a local directory (created if missing, mode 0700).

    @param runInThread: where the file writes run (off the reactor thread
        in the daemon).
    """

    def __init__(
        self,
        directory: Path,
        runInThread: Callable[[Callable[[], Any]], Deferred[Any]] = runHere,
        create: bool = True,
    ) -> None:
        self.directory = directory
        if create:
            for sub in (directory, directory / "blobs", directory / "records"):
                sub.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._runInThread = runInThread

    # Storing

    def store(
        self, original: bytes, context: FilterContext, reason: str, plugin: str = ""
    ) -> Deferred[str]:
        identifier = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(5)
        metadata = {
            "id": identifier,
            "time": time.time(),
            "reason": reason,
            "plugin": plugin,
            "user": context.user,
            "uidl": context.uidl,
            "upstream": context.upstream,
            "command": context.command,
            "index": context.index,
            "client": context.client,
            "session": context.session,
            "notes": dict(context.notes),
            "size": len(original),
            "headers": _headerBlock(original),
        }
        return self._runInThread(lambda: self._write(identifier, original, metadata))

    def _write(self, identifier: str, original: bytes, metadata: dict[str, Any]) -> str:
        digest = hashlib.sha256(original).hexdigest()
        blob = self.blobPath(digest)
        if not blob.exists():
            blob.parent.mkdir(exist_ok=True, mode=0o700)
            _writeAtomically(blob, original)
        metadata["sha256"] = digest
        record = json.dumps(metadata, indent=2, sort_keys=True).encode("utf-8")
        _writeAtomically(self.directory / "records" / f"{identifier}.json", record)
        return identifier

    # Reading (the CLI)

    def blobPath(self, digest: str) -> Path:
        return self.directory / "blobs" / digest[:2] / digest

    def records(self) -> Iterator[Record]:
        """
        Every record, oldest first.
        """
        records = self.directory / "records"
        loaded = [self._load(path) for path in records.glob("*.json")] if records.is_dir() else []
        yield from sorted(loaded, key=lambda record: (record.time, record.id))

    def _load(self, path: Path) -> Record:
        data = json.loads(path.read_text("utf-8"))
        return Record(
            id=data["id"],
            time=data["time"],
            reason=data.get("reason", ""),
            plugin=data.get("plugin", ""),
            user=data.get("user", ""),
            uidl=data.get("uidl"),
            upstream=data.get("upstream", ""),
            size=data.get("size", 0),
            sha256=data["sha256"],
            headers=data.get("headers", ""),
            data=data,
        )

    def get(self, identifier: str) -> Record:
        """
        @raise KeyError: no such record.
        """
        path = self.directory / "records" / f"{Path(identifier).name}.json"
        if not path.is_file():
            raise KeyError(identifier)
        return self._load(path)

    def original(self, record: Record) -> bytes:
        """
        The exact bytes that were quarantined.
        """
        return self.blobPath(record.sha256).read_bytes()

    def purge(
        self, olderThan: float | None = None, maxBytes: int | None = None, dryRun: bool = False
    ) -> list[Record]:
        """
        The documented cleanup: remove records older than C{olderThan}
        seconds, then the oldest ones until the blobs take at most
        C{maxBytes}; blobs no record refers to any more are deleted.

        @return: the records removed (or that would be, with C{dryRun}).
        """
        records = list(self.records())
        now = time.time()
        removed = [r for r in records if olderThan is not None and now - r.time > olderThan]
        kept = [r for r in records if r not in removed]
        if maxBytes is not None:
            sizes = {r.sha256: r.size for r in kept}
            total = sum(sizes.values())
            for record in list(kept):
                if total <= maxBytes:
                    break
                kept.remove(record)
                removed.append(record)
                if all(other.sha256 != record.sha256 for other in kept):
                    total -= sizes[record.sha256]
        if dryRun:
            return removed
        for record in removed:
            (self.directory / "records" / f"{record.id}.json").unlink(missing_ok=True)
        referenced = {r.sha256 for r in kept}
        for record in removed:
            if record.sha256 not in referenced:
                self.blobPath(record.sha256).unlink(missing_ok=True)
        return removed
