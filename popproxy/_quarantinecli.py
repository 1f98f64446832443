"""
The quarantine command line: find quarantined items and get originals back.

    popproxy-quarantine (--config twistd.conf | --dir DIR) list [--user U] [--since WHEN]
    popproxy-quarantine ... show ID
    popproxy-quarantine ... export ID [-o FILE]
    popproxy-quarantine ... purge [--older-than DAYS] [--max-bytes N] [--dry-run]
    popproxy-quarantine ... requests
    popproxy-quarantine ... release ID [--by NAME]

Also available as C{python -m popproxy quarantine ...}.  Listings print
control and bidi characters of records as escapes; C{show} prints the
record as JSON, which escapes them too.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TextIO

from popproxy._config import ConfigError, loadConfig
from popproxy._printable import printable
from popproxy._quarantine import DirectoryQuarantine, Record
from popproxy._releases import DirectoryReleases
from popproxy._version import versionLine

#: What C{list --since} accepts, as its help and its error say.
SINCE_FORMS = (
    "a date or time in UTC (2026-11-01, 2026-11-01T08:30, or with an offset: "
    "2026-11-01T08:30+02:00), today, yesterday (from midnight UTC), "
    "or an age: 90m, 2h, 3d, 1w"
)
_AGE = re.compile(r"([0-9]{1,6})([mhdw])")
_AGE_UNITS = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parseSince(text: str, now: float) -> float:
    """
    The POSIX time C{list --since text} means at time C{now}: an ISO date
    or date and time (UTC unless it has an offset), C{today} or
    C{yesterday} (midnight UTC), or an age (C{90m}, C{2h}, C{3d}, C{1w}).

    @raise ValueError: C{text} is none of those; the message says what is.
    """
    word = text.strip().lower()
    if word in ("today", "yesterday"):
        midnight = datetime.fromtimestamp(now, UTC).replace(
            hour=0, minute=0, second=0, microsecond=0
        )
        if word == "yesterday":
            midnight -= timedelta(days=1)
        return midnight.timestamp()
    age = _AGE.fullmatch(word)
    if age is not None:
        return now - int(age.group(1)) * _AGE_UNITS[age.group(2)]
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"--since {text!r}: give {SINCE_FORMS}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="popproxy-quarantine",
        description="List, show, export and purge what popproxy's filters quarantined.",
    )
    parser.add_argument("--version", action="version", version=versionLine("popproxy-quarantine"))
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--config", type=Path, help="twistd.conf naming [chain] quarantine")
    where.add_argument("--dir", type=Path, help="the quarantine directory")
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("list", help="one line per item, oldest first")
    listing.add_argument("--user", help="only this user's items")
    listing.add_argument("--since", metavar="WHEN", help=f"only items from then on: {SINCE_FORMS}")
    show = commands.add_parser("show", help="an item's record")
    show.add_argument("id")
    export = commands.add_parser("export", help="an item's original bytes")
    export.add_argument("id")
    export.add_argument("-o", "--output", type=Path, help="write here instead of stdout")
    purge = commands.add_parser("purge", help="delete old items (the cleanup)")
    purge.add_argument("--older-than", type=float, metavar="DAYS")
    purge.add_argument("--max-bytes", type=int, metavar="N", help="keep at most N bytes")
    purge.add_argument("--dry-run", action="store_true", help="only say what would go")
    commands.add_parser("requests", help="the release requests not approved yet")
    release = commands.add_parser(
        "release", help="approve an item's release: its user may download it from the console"
    )
    release.add_argument("id")
    release.add_argument("--by", default="cli", help="the administrator approving (default: cli)")
    return parser


def _line(record: Record) -> str:
    """
    One item's listing line, its text escaped: user names and reasons
    (which name attachments) come from clients and senders, and must not
    drive the terminal of whoever reads the listing.
    """
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(record.time))
    return (
        f"{printable(record.id)}  {when}  {printable(record.user or '-')}  "
        f"{printable(record.plugin or '-')}  {record.size}  {printable(record.reason)}"
    )


def _list(quarantine: DirectoryQuarantine, user: str | None, since: str | None, out: TextIO) -> int:
    """
    The C{list} command: one line per item of C{user} from C{since} on;
    a C{since} that means no time is one line on stderr and status 2.
    """
    start = None
    if since:
        try:
            start = parseSince(since, time.time())
        except ValueError as e:
            sys.stderr.write(f"popproxy-quarantine: {e}\n")
            return 2
    for record in quarantine.records():
        if user and record.user != user:
            continue
        if start is not None and record.time < start:
            continue
        out.write(_line(record) + "\n")
    return 0


def _releases(quarantine: DirectoryQuarantine, arguments: argparse.Namespace, out: TextIO) -> int:
    """
    The C{requests} command (one line per pending request) and the
    C{release} command (approve one item; status 1 if there is no such item).
    """
    releases = DirectoryReleases(quarantine.directory)
    if arguments.command == "requests":
        for pending in releases.pending():
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(pending.requestedAt or 0))
            out.write(f"{printable(pending.id)}  {when}  {printable(pending.requestedBy or '-')}\n")
        return 0
    try:
        record = quarantine.get(arguments.id)
    except KeyError:
        sys.stderr.write(f"popproxy-quarantine: no item {printable(arguments.id)}\n")
        return 1
    releases.approve(record.id, arguments.by)
    out.write(f"released {_line(record)}\n")
    return 0


def main(argv: list[str] | None = None, stdout: TextIO | None = None) -> int:
    """
    Run the command; return the exit code (0 ok, 1 not found, 2 usage).
    """
    out = stdout or sys.stdout
    arguments = _parser().parse_args(argv)
    directory = arguments.dir
    if arguments.config is not None:
        try:
            config = loadConfig(arguments.config)
        except ConfigError as e:
            sys.stderr.write(f"popproxy-quarantine: {e}\n")
            return 2
        directory = config.chain.quarantine
        if directory is None:
            sys.stderr.write(f"popproxy-quarantine: {arguments.config}: no [chain] quarantine\n")
            return 2
    if not directory.is_dir():
        sys.stderr.write(f"popproxy-quarantine: {directory}: no such directory\n")
        return 2
    quarantine = DirectoryQuarantine(directory, create=False)
    if arguments.command == "list":
        return _list(quarantine, arguments.user, arguments.since, out)
    if arguments.command in ("requests", "release"):
        return _releases(quarantine, arguments, out)
    if arguments.command in ("show", "export"):
        try:
            record = quarantine.get(arguments.id)
        except KeyError:
            sys.stderr.write(f"popproxy-quarantine: no item {arguments.id}\n")
            return 1
        if arguments.command == "show":
            out.write(json.dumps(record.data, indent=2, sort_keys=True) + "\n")
            return 0
        original = quarantine.original(record)
        if arguments.output is not None:
            arguments.output.write_bytes(original)
        else:
            out.flush()
            sys.stdout.buffer.write(original)
        return 0
    olderThan = arguments.older_than * 86400 if arguments.older_than is not None else None
    removed = quarantine.purge(olderThan, arguments.max_bytes, arguments.dry_run)
    verb = "would remove" if arguments.dry_run else "removed"
    for record in removed:
        out.write(f"{verb} {_line(record)}\n")
    out.write(f"{verb} {len(removed)} item(s)\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
