"""
The quarantine command line: find quarantined items and get originals back.

    popproxy-quarantine (--config twistd.conf | --dir DIR) list [--user U] [--since DATE]
    popproxy-quarantine ... show ID
    popproxy-quarantine ... export ID [-o FILE]
    popproxy-quarantine ... purge [--older-than DAYS] [--max-bytes N] [--dry-run]

Also available as C{python -m popproxy quarantine ...}.  Listings print
control and bidi characters of records as escapes; C{show} prints the
record as JSON, which escapes them too.
"""

from __future__ import annotations

import argparse
import calendar
import json
import sys
import time
from pathlib import Path
from typing import TextIO

from popproxy._config import ConfigError, loadConfig
from popproxy._printable import printable
from popproxy._quarantine import DirectoryQuarantine, Record


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="popproxy-quarantine",
        description="List, show, export and purge what popproxy's filters quarantined.",
    )
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--config", type=Path, help="twistd.conf naming [chain] quarantine")
    where.add_argument("--dir", type=Path, help="the quarantine directory")
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("list", help="one line per item, oldest first")
    listing.add_argument("--user", help="only this user's items")
    listing.add_argument("--since", help="only items from this date on (YYYY-MM-DD, UTC)")
    show = commands.add_parser("show", help="an item's record")
    show.add_argument("id")
    export = commands.add_parser("export", help="an item's original bytes")
    export.add_argument("id")
    export.add_argument("-o", "--output", type=Path, help="write here instead of stdout")
    purge = commands.add_parser("purge", help="delete old items (the cleanup)")
    purge.add_argument("--older-than", type=float, metavar="DAYS")
    purge.add_argument("--max-bytes", type=int, metavar="N", help="keep at most N bytes")
    purge.add_argument("--dry-run", action="store_true", help="only say what would go")
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
        since = None
        if arguments.since:
            since = calendar.timegm(time.strptime(arguments.since, "%Y-%m-%d"))
        for record in quarantine.records():
            if arguments.user and record.user != arguments.user:
                continue
            if since is not None and record.time < since:
                continue
            out.write(_line(record) + "\n")
        return 0
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
