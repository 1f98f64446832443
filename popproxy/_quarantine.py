"""
The quarantine: where everything a filter removes or replaces is kept.

Layout of the directory::

    blobs/ab/abcdef...     the exact bytes, named by their SHA-256 (stored once)
    records/<id>.json      one record per removal: when, user, upstream, UIDL,
                           plugin, reason, the original's header lines, blob,
                           and the From, Subject and Date of the message
    releases/<id>.json     release requests and approvals (L{popproxy._releases})

Every file is written to a temporary name, flushed to disk and renamed, so
a reader never sees half a file; a write that fails (disk full,
permissions) fails the store, and the chain then refuses to deliver the
stripped message (the client gets -ERR [SYS/TEMP], the original stays on
the server).

Every record's id is derived from what it keeps, never random: a whole
message (or anything a filter stores on its own) from the message, the
plugin, the reason and the original's octets (L{storeRecordId}); the
parts removed from one message, kept together (L{IPartQuarantine}), from
the message and the part (L{partRecordId}).  A retry of the same message
finds its records kept and writes nothing new.  The parts' files are made
durable by one sync of the file system instead of one per file, so
thousands of parts cost no more than their octets.  Nothing is ever
deleted except by L{Quarantine.purge}, the documented cleanup
(C{popproxy quarantine purge}).
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import secrets
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred
from zope.interface import implementer

from popproxy._chain import runHere
from popproxy._messagesummary import displayText, summarize
from popproxy._metrics import NO_METRICS, Metrics
from popproxy.interfaces import FilterContext, IPartQuarantine, RemovedPart
from popproxy.message import Message


@dataclass(frozen=True)
class Record:
    """
    One quarantined item, as stored.

    @ivar messageFrom: the From of the message the item came from, decoded
        for display (C{None}: none); read from the stored header lines for
        records kept before these fields were (blank if those are a part's).
    @ivar messageSubject: its Subject, the same way.
    @ivar messageDate: its Date, the same way.
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
    #: The message's From, Subject and Date (RFC 2047 decoded), for listings
    #: and the console: kept with the record when it was stored, else read
    #: from its header block (a part's record only has the part's header).
    messageFrom: str | None = None
    messageSubject: str | None = None
    messageDate: str | None = None


#: The summary fields of a record, by the header field they come from.
SUMMARY_FIELDS = {"from": "messageFrom", "subject": "messageSubject", "date": "messageDate"}

#: A summary field is cut to this many characters (one header line's worth).
_SUMMARY_LENGTH = 998


def summaryFields(headers: str) -> dict[str, str | None]:
    """
    The From, Subject and Date of a header block (text, as a record keeps
    it) by L{Record} field name, read by L{summarize}: each its first field
    of that name, unfolded, RFC 2047 decoded, one line of text
    (L{displayText}); a missing field is C{None}.
    """
    summary = summarize(headers.encode("utf-8", "surrogateescape"), _SUMMARY_LENGTH)
    return {
        "messageFrom": summary.sender,
        "messageSubject": summary.subject,
        "messageDate": summary.date,
    }


def headerFilename(headers: str) -> str | None:
    """
    The file name a removed part's stored header lines give (RFC 2231 and
    2047 decoded), fit for display; C{None}: they give none (or they are a
    whole message's).
    """
    if not headers:
        return None
    head = headers.encode("utf-8", "replace")
    try:
        name = Message.fromBytes(head + b"\r\n\r\n").root.filename
    except Exception:
        return None
    return displayText(name, 255) if name else None


def recordFromFields(data: dict[str, Any]) -> Record:
    """
    The L{Record} of a stored record's fields (its JSON document), the
    summary fields read from its header block if it does not keep them.
    """
    headers = data.get("headers", "")
    summary: dict[str, str | None] = {}
    if any(key not in data for key in SUMMARY_FIELDS.values()):
        summary = summaryFields(headers)
    for key in SUMMARY_FIELDS.values():
        if key in data:
            # Kept by this popproxy, or copied from another store: shown
            # on pages and in listings, so made fit for one line again.
            value = data[key]
            summary[key] = value if value is None else displayText(str(value), _SUMMARY_LENGTH)
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
        headers=headers,
        data=data,
        **summary,
    )


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


def _messageName(message: bytes, context: FilterContext) -> list[str]:
    """
    What names a message in a record id: the upstream, the user and its
    UIDL when the upstream has UIDL (an upstream never gives a UIDL to
    another message of the same mailbox), else the SHA-256 of its octets.
    """
    if context.uidl is not None:
        return ["uidl", context.upstream, context.user, context.uidl]
    return ["sha256", hashlib.sha256(message).hexdigest()]


def _hashedId(prefix: str, name: list[str]) -> str:
    digest = hashlib.sha256(json.dumps(name).encode("utf-8")).hexdigest()
    return prefix + digest[:31]


def storeRecordId(original: bytes, context: FilterContext, reason: str, plugin: str) -> str:
    """
    The id of the record of C{original} (a whole message replaced by a
    notice, or whatever a filter keeps with C{store}), kept by C{plugin}
    for C{reason}: the same whenever the same message is filtered again.

    The message is named as in L{partRecordId} (by C{original} itself
    when the upstream has no UIDL); the record by the plugin, the reason
    and the SHA-256 of C{original} (a message cut short in a TOP preview
    is not the message a RETR replaces).
    """
    digest = hashlib.sha256(original).hexdigest()
    if context.uidl is not None:
        messageName = _messageName(original, context)
    else:
        messageName = ["sha256", digest]
    return _hashedId("m", ["store", *messageName, plugin, reason, digest])


def partRecordId(message: bytes, part: RemovedPart, context: FilterContext, plugin: str) -> str:
    """
    The id of the record of C{part}, removed from C{message} by C{plugin}:
    the same whenever the same message is filtered again.

    The message is named by the upstream, the user and its UIDL when the
    upstream has UIDL (an upstream never gives a UIDL to another message
    of the same mailbox), else by the SHA-256 of its octets; the part by
    its path, the reason and the SHA-256 of its octets (a part cut short
    in a TOP preview is not the part a RETR removes).
    """
    name = [
        *_messageName(message, context),
        plugin,
        ".".join(map(str, part.path)),
        part.reason,
        hashlib.sha256(part.original).hexdigest(),
    ]
    return _hashedId("p", name)


def _loadSyncfs() -> Callable[[int], int] | None:
    """
    C{syncfs(2)}, which Python's C{os} does not offer, where the C library
    has it (Linux).
    """
    try:
        function = ctypes.CDLL(None, use_errno=True).syncfs
    except (AttributeError, OSError):
        return None
    function.argtypes = [ctypes.c_int]
    function.restype = ctypes.c_int
    return function


_syncfs = _loadSyncfs()

#: Up to this many new files, each is synced on its own; beyond, one sync
#: of the file system is cheaper than a journal commit per file.
_SYNC_EACH = 8


def _makeDurable(directory: Path, files: Sequence[Path]) -> None:
    """
    Make the contents of C{files}, all in C{directory}'s file system,
    durable: each flushed on its own, or everything in the file system at
    once when there are many (or none are named).
    """
    if _syncfs is not None and (len(files) > _SYNC_EACH or not files):
        descriptor = os.open(directory, os.O_RDONLY)
        try:
            if _syncfs(descriptor) != 0:
                error = ctypes.get_errno()
                raise OSError(error, os.strerror(error), str(directory))
        finally:
            os.close(descriptor)
        return
    for path in files:
        descriptor = os.open(path, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def _syncDirectory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


@implementer(IPartQuarantine)
class DirectoryQuarantine:
    """
    A quarantine in a local directory (created if missing, mode 0700).

    @param runInThread: where the file writes run (off the reactor thread
        in the daemon).
    @param metrics: where the items kept and the failed stores are counted.
    """

    def __init__(
        self,
        directory: Path,
        runInThread: Callable[[Callable[[], Any]], Deferred[Any]] = runHere,
        create: bool = True,
        metrics: Metrics = NO_METRICS,
    ) -> None:
        self.directory = directory
        self._metrics = metrics
        if create:
            for sub in (directory, directory / "blobs", directory / "records"):
                sub.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._runInThread = runInThread

    # Storing

    def store(
        self, original: bytes, context: FilterContext, reason: str, plugin: str = ""
    ) -> Deferred[str]:
        # Written as the parts of a message are: nothing if the record is
        # already kept, else the blob renamed into place before the record.
        items = storeItems(original, context, reason, plugin)
        writing = self._runInThread(lambda: self._writeParts(items)[0])
        return writing.addCallbacks(
            self._counted, self._failed, callbackArgs=("message", 1), errbackArgs=("message",)
        )

    def storeParts(
        self,
        message: bytes,
        parts: Sequence[RemovedPart],
        context: FilterContext,
        plugin: str = "",
    ) -> Deferred[list[str]]:
        items = partItems(message, parts, context, plugin)
        writing = self._runInThread(lambda: self._writeParts(items))
        return writing.addCallbacks(
            self._counted, self._failed, callbackArgs=("part", len(items)), errbackArgs=("part",)
        )

    def _counted(self, result: Any, kind: str, count: int) -> Any:
        self._metrics.quarantineStored(kind, count)
        return result

    def _failed(self, failure: Any, kind: str) -> Any:
        self._metrics.quarantineFailed(kind)
        return failure

    def add(self, record: Record, original: bytes) -> bool:
        """
        Keep C{record} (read from another store) with its C{original}, unless
        a record of its id is kept already (C{popproxy-quarantine copy}).

        @return: whether it was new.
        """
        if (self.directory / "records" / f"{record.id}.json").exists():
            return False
        self._writeParts([(record.id, original, dict(record.data))])
        return True

    def _writeParts(self, items: list[StoreItem]) -> list[str]:
        """
        Write the records (and blobs) not kept yet: every new file to a
        temporary name, then all of them made durable at once, then the
        blobs renamed into place before the records that name them, so a
        record never names a missing blob, then the new names made durable
        (the directories flushed, or the file system synced again when
        the blobs went into many directories).
        """
        records = self.directory / "records"
        blobs: dict[Path, Path] = {}
        renames: dict[Path, Path] = {}
        temporaries: list[Path] = []
        try:
            for identifier, original, metadata in items:
                digest = hashlib.sha256(original).hexdigest()
                blob = self.blobPath(digest)
                record = records / f"{identifier}.json"
                if blob not in blobs and not blob.exists():
                    blob.parent.mkdir(exist_ok=True, mode=0o700)
                    blobs[blob] = self._temporary(blob, original, temporaries)
                if record in renames or record.exists():
                    continue
                metadata["sha256"] = digest
                octets = json.dumps(metadata, indent=2, sort_keys=True).encode("utf-8")
                renames[record] = self._temporary(record, octets, temporaries)
            if not temporaries:
                return [identifier for identifier, _, _ in items]
            _makeDurable(self.directory, temporaries)
            for blob, temporary in blobs.items():
                os.replace(temporary, blob)
            for record, temporary in renames.items():
                os.replace(temporary, record)
        finally:
            for temporary in temporaries:
                temporary.unlink(missing_ok=True)
        directories = {blob.parent for blob in blobs} | ({records} if renames else set())
        if _syncfs is not None and len(directories) > _SYNC_EACH:
            _makeDurable(self.directory, [])
        else:
            for directory in directories:
                _syncDirectory(directory)
        return [identifier for identifier, _, _ in items]

    @staticmethod
    def _temporary(path: Path, data: bytes, temporaries: list[Path]) -> Path:
        temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        temporaries.append(temporary)
        with open(temporary, "wb") as file:
            file.write(data)
        return temporary

    # Reading (the CLI)

    def blobPath(self, digest: str) -> Path:
        return self.directory / "blobs" / digest[:2] / digest

    def records(self, user: str | None = None, since: float | None = None) -> Iterator[Record]:
        """
        Every record (of C{user}, from time C{since} on), oldest first.
        """
        records = self.directory / "records"
        loaded = [self._load(path) for path in records.glob("*.json")] if records.is_dir() else []
        for record in sorted(loaded, key=lambda record: (record.time, record.id)):
            if (user is None or record.user == user) and (since is None or record.time >= since):
                yield record

    def _load(self, path: Path) -> Record:
        return recordFromFields(json.loads(path.read_text("utf-8")))

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
        removed = purgeSelection(records, time.time(), olderThan, maxBytes)
        if dryRun:
            return removed
        for record in removed:
            (self.directory / "records" / f"{record.id}.json").unlink(missing_ok=True)
            (self.directory / "releases" / f"{record.id}.json").unlink(missing_ok=True)
        removedIds = {r.id for r in removed}
        referenced = {r.sha256 for r in records if r.id not in removedIds}
        for record in removed:
            if record.sha256 not in referenced:
                self.blobPath(record.sha256).unlink(missing_ok=True)
        return removed


def purgeSelection(
    records: Sequence[Record], now: float, olderThan: float | None, maxBytes: int | None
) -> list[Record]:
    """
    Which of C{records} (oldest first) a purge removes at time C{now}: those
    older than C{olderThan} seconds, then the oldest until the blobs the
    rest name take at most C{maxBytes}.  Linear in the number of records
    (a blob's records are counted, not looked for).
    """
    removed: list[Record] = []
    kept: list[Record] = []
    for record in records:
        old = olderThan is not None and now - record.time > olderThan
        (removed if old else kept).append(record)
    if maxBytes is not None:
        sizes = {r.sha256: r.size for r in kept}
        naming = Counter(r.sha256 for r in kept)
        total = sum(sizes.values())
        cut = 0
        while cut < len(kept) and total > maxBytes:
            digest = kept[cut].sha256
            naming[digest] -= 1
            if not naming[digest]:
                total -= sizes[digest]
            cut += 1
        removed.extend(kept[:cut])
    return removed


#: One record to write: its id, the original's bytes, its fields.
StoreItem = tuple[str, bytes, dict[str, Any]]


def storeItems(
    original: bytes, context: FilterContext, reason: str, plugin: str
) -> list[StoreItem]:
    """
    What storing C{original} (a whole message) writes: one record.
    """
    identifier = storeRecordId(original, context, reason, plugin)
    metadata = _recordFields(identifier, time.time(), reason, plugin, context, original)
    metadata.update(summaryFields(metadata["headers"]))
    return [(identifier, original, metadata)]


def partItems(
    message: bytes, parts: Sequence[RemovedPart], context: FilterContext, plugin: str
) -> list[StoreItem]:
    """
    What storing C{parts} removed from C{message} writes: a record each,
    with the message's From, Subject and Date.
    """
    now = time.time()
    summary = summaryFields(_headerBlock(message))
    items = []
    for part in parts:
        identifier = partRecordId(message, part, context, plugin)
        metadata = _recordFields(identifier, now, part.reason, plugin, context, part.original)
        metadata["path"] = list(part.path)
        metadata.update(summary)
        items.append((identifier, part.original, metadata))
    return items


def _recordFields(
    identifier: str,
    when: float,
    reason: str,
    plugin: str,
    context: FilterContext,
    original: bytes,
) -> dict[str, Any]:
    """
    The fields of one record: what was kept, why, by which filter, from
    which retrieval.
    """
    return {
        "id": identifier,
        "time": when,
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
