"""
The quarantine command line: find quarantined items and get originals back.

    popproxy-quarantine (--config twistd.conf | --dir DIR) list [--user U] [--since WHEN]
    popproxy-quarantine ... show ID
    popproxy-quarantine ... export ID [-o FILE]
    popproxy-quarantine ... purge [--older-than DAYS] [--max-bytes N] [--dry-run]
    popproxy-quarantine list|purge|migrate STORE ...;  show|export STORE ID
    popproxy-quarantine [--config twistd.conf] copy --from STORE [--to STORE]
    popproxy-quarantine ... requests [STORE]
    popproxy-quarantine ... release [STORE] ID [--by NAME]
    popproxy-quarantine ... reject [STORE] ID [--by NAME]

A STORE is a quarantine directory or a PostgreSQL database
(C{postgresql://user@host:port/db} or a libpq connection string; the
password from the URL, a passfile or C{PGPASSWORD}).  C{migrate} creates or
upgrades a database's schema (the proxy never does it itself); C{copy}
copies every item the target does not keep yet, so running it twice adds
nothing the second time.  C{requests} lists the console's release requests
not approved yet, C{release} approves one: its user may then download it
from the console, and C{reject} refuses one: its user is told, and cannot
ask again (on either store; see docs/console.md).  A released item stays
released: C{reject} of one says so and exits 1.

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
from typing import Any, TextIO

from popproxy._config import ConfigError, loadConfig
from popproxy._printable import printable
from popproxy._quarantine import DirectoryQuarantine, Record
from popproxy._quarantineaddress import QuarantineAddress, parseQuarantineAddress
from popproxy._releases import DirectoryReleases, IReleaseRequests
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
        description=(
            "List, show, export and purge what popproxy's filters quarantined, in a "
            "directory or a PostgreSQL database; migrate a database's schema; copy a "
            "quarantine into another."
        ),
    )
    parser.add_argument("--version", action="version", version=versionLine("popproxy-quarantine"))
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--config", type=Path, help="twistd.conf naming [chain] quarantine")
    where.add_argument("--dir", type=Path, help="the quarantine directory")
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("list", help="one line per item, oldest first")
    listing.add_argument("store", nargs="?", help=STORE_HELP)
    listing.add_argument("--user", help="only this user's items")
    listing.add_argument("--since", metavar="WHEN", help=f"only items from then on: {SINCE_FORMS}")
    show = commands.add_parser("show", help="an item's record")
    show.add_argument("items", nargs="+", metavar="[STORE] ID")
    export = commands.add_parser("export", help="an item's original bytes")
    export.add_argument("items", nargs="+", metavar="[STORE] ID")
    export.add_argument("-o", "--output", type=Path, help="write here instead of stdout")
    purge = commands.add_parser("purge", help="delete old items (the cleanup)")
    purge.add_argument("store", nargs="?", help=STORE_HELP)
    purge.add_argument("--older-than", type=float, metavar="DAYS")
    purge.add_argument("--max-bytes", type=int, metavar="N", help="keep at most N bytes")
    purge.add_argument("--dry-run", action="store_true", help="only say what would go")
    migrate = commands.add_parser("migrate", help="create or upgrade a database's schema")
    migrate.add_argument("store", nargs="?", help="a postgresql:// URL or connection string")
    copy = commands.add_parser("copy", help="copy every item into another store (idempotent)")
    copy.add_argument("--from", dest="source", required=True, help=STORE_HELP)
    copy.add_argument("--to", dest="target", help=f"{STORE_HELP} (default: the configured one)")
    requests = commands.add_parser("requests", help="the release requests not approved yet")
    requests.add_argument("store", nargs="?", help=STORE_HELP)
    release = commands.add_parser(
        "release", help="approve an item's release: its user may download it from the console"
    )
    release.add_argument("items", nargs="+", metavar="[STORE] ID")
    release.add_argument("--by", default="cli", help="the administrator approving (default: cli)")
    reject = commands.add_parser(
        "reject", help="refuse an item's release: its user is told and cannot ask again"
    )
    reject.add_argument("items", nargs="+", metavar="[STORE] ID")
    reject.add_argument("--by", default="cli", help="the administrator refusing (default: cli)")
    return parser


#: What a store argument may be.
STORE_HELP = "a quarantine directory or a postgresql:// URL (default: --config's, or --dir)"


class CommandError(Exception):
    """
    The command cannot go on: one line on stderr, and this exit status.
    """

    def __init__(self, message: str, status: int = 2) -> None:
        super().__init__(message)
        self.status = status


def _configured(arguments: argparse.Namespace) -> QuarantineAddress | None:
    """
    The store C{--dir} or C{--config} names, if any.
    """
    if arguments.dir is not None:
        return Path(arguments.dir)
    if arguments.config is None:
        return None
    try:
        config = loadConfig(arguments.config)
    except ConfigError as e:
        raise CommandError(str(e)) from None
    if config.chain.quarantine is None:
        raise CommandError(f"{arguments.config}: no [chain] quarantine")
    return config.chain.quarantine


def _address(text: str | None, arguments: argparse.Namespace) -> QuarantineAddress:
    """
    The store an argument names, else the configured one.
    """
    if text is not None:
        return parseQuarantineAddress(text, Path())
    configured = _configured(arguments)
    if configured is None:
        raise CommandError("name a store: a directory, a postgresql:// URL, --dir or --config")
    return configured


def _open(address: QuarantineAddress) -> Any:
    """
    The store at C{address}, for reading and writing from this process.
    """
    if isinstance(address, Path):
        if not address.is_dir():
            raise CommandError(f"{address}: no such directory")
        return DirectoryQuarantine(address, create=False)
    try:
        from popproxy._pgstore import PostgresStore, connectionSettings

        connectionSettings(address)
    except ImportError:
        raise CommandError(
            "a PostgreSQL store needs psycopg: pip install 'popproxy[postgresql]'"
        ) from None
    except ValueError as e:
        raise CommandError(f"{address}: {e}") from None
    return PostgresStore(address, maxConnections=1, statementTimeout=None)


def _storeFailure(error: Exception, address: QuarantineAddress) -> CommandError:
    """
    What a store that failed while working says (unreachable, not migrated).
    """
    reason = " ".join(str(error).split()) or type(error).__name__
    if type(error).__name__ == "SchemaError":
        return CommandError(f"{reason} (popproxy-quarantine migrate {address})")
    return CommandError(f"{address}: {reason}", status=1)


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


def _list(quarantine: Any, user: str | None, since: str | None, out: TextIO) -> int:
    """
    The C{list} command: one line per item of C{user} from C{since} on;
    a C{since} that means no time is one line on stderr and status 2.
    """
    start = None
    if since:
        try:
            start = parseSince(since, time.time())
        except ValueError as e:
            raise CommandError(str(e)) from None
    for record in quarantine.records(user=user or None, since=start):
        out.write(_line(record) + "\n")
    return 0


def _showOrExport(quarantine: Any, arguments: argparse.Namespace, out: TextIO) -> int:
    """
    The C{show} and C{export} commands: an item's record, or its bytes.
    """
    identifier = arguments.items[-1]
    try:
        record = quarantine.get(identifier)
    except KeyError:
        raise CommandError(f"no item {identifier}", status=1) from None
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


def _releaseRequests(quarantine: Any) -> IReleaseRequests:
    """
    The release requests kept beside C{quarantine}: files in its
    directory, or the releases table of its database.
    """
    if isinstance(quarantine, DirectoryQuarantine):
        return DirectoryReleases(quarantine.directory)
    from popproxy._pgreleases import PostgresReleases

    return PostgresReleases(quarantine.pool)


def _releases(quarantine: Any, arguments: argparse.Namespace, out: TextIO) -> int:
    """
    The C{requests} command (one line per pending request), the
    C{release} command (approve one item) and the C{reject} command
    (refuse one); status 1 if there is no such item, or for C{reject} of
    an item already released (it stays released).
    """
    releases = _releaseRequests(quarantine)
    if arguments.command == "requests":
        for pending in releases.pending():
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(pending.requestedAt or 0))
            out.write(f"{printable(pending.id)}  {when}  {printable(pending.requestedBy or '-')}\n")
        return 0
    identifier = arguments.items[-1]
    try:
        record = quarantine.get(identifier)
    except KeyError:
        raise CommandError(f"no item {printable(identifier)}", status=1) from None
    if arguments.command == "release":
        releases.approve(record.id, arguments.by)
        out.write(f"released {_line(record)}\n")
        return 0
    release = releases.reject(record.id, arguments.by)
    if release.released:
        raise CommandError(
            f"{printable(record.id)} was released by {printable(release.approvedBy or '-')}"
            " already; a released item stays released",
            status=1,
        )
    out.write(f"rejected {_line(record)}\n")
    return 0


def _purge(quarantine: Any, arguments: argparse.Namespace, out: TextIO) -> int:
    olderThan = arguments.older_than * 86400 if arguments.older_than is not None else None
    removed = quarantine.purge(olderThan, arguments.max_bytes, arguments.dry_run)
    verb = "would remove" if arguments.dry_run else "removed"
    for record in removed:
        out.write(f"{verb} {_line(record)}\n")
    out.write(f"{verb} {len(removed)} item(s)\n")
    return 0


def _migrate(address: QuarantineAddress, out: TextIO) -> int:
    """
    The C{migrate} command: apply the schema versions a database lacks.
    """
    if isinstance(address, Path):
        out.write(f"{address}: a directory quarantine has no schema to migrate\n")
        return 0
    _open(address)  # psycopg present, the address readable
    from popproxy._pgschema import SCHEMA_VERSION, migrate
    from popproxy._pgstore import openConnection

    with openConnection(address, check=False, statementTimeout=None) as connection:
        applied = migrate(connection)
    if applied:
        versions = ", ".join(map(str, applied))
        out.write(f"{address}: applied schema version(s) {versions}; now at {SCHEMA_VERSION}\n")
    else:
        out.write(f"{address}: schema is up to date (version {SCHEMA_VERSION} or newer)\n")
    return 0


def _copy(source: Any, target: Any, out: TextIO) -> int:
    """
    The C{copy} command: every item of C{source} that C{target} does not
    keep yet, with its original; run again, it copies nothing.
    """
    copied = kept = 0
    for record in source.records():
        if target.add(record, source.original(record)):
            copied += 1
        else:
            kept += 1
    out.write(f"copied {copied} item(s), {kept} already there\n")
    return 0


def _run(arguments: argparse.Namespace, out: TextIO) -> int:
    """
    Run the parsed command on the store it names.
    """
    command = arguments.command
    if command == "copy":
        source = _address(arguments.source, arguments)
        target = _address(arguments.target, arguments)
        address = target
        try:
            return _copy(_open(source), _open(target), out)
        except CommandError:
            raise
        except Exception as e:
            raise _storeFailure(e, address) from None
    if command in ("show", "export", "release", "reject"):
        if len(arguments.items) > 2:
            raise CommandError(f"{command}: give [STORE] ID")
        text = arguments.items[0] if len(arguments.items) == 2 else None
    else:
        text = arguments.store
    address = _address(text, arguments)
    try:
        if command == "migrate":
            return _migrate(address, out)
        quarantine = _open(address)
        if command == "list":
            return _list(quarantine, arguments.user, arguments.since, out)
        if command in ("show", "export"):
            return _showOrExport(quarantine, arguments, out)
        if command in ("requests", "release", "reject"):
            return _releases(quarantine, arguments, out)
        return _purge(quarantine, arguments, out)
    except CommandError:
        raise
    except Exception as e:
        raise _storeFailure(e, address) from None


def main(argv: list[str] | None = None, stdout: TextIO | None = None) -> int:
    """
    Run the command; return the exit code (0 ok, 1 not found, a released
    item not rejected, or the store failed; 2 usage).
    """
    arguments = _parser().parse_args(argv)
    try:
        return _run(arguments, stdout or sys.stdout)
    except CommandError as e:
        sys.stderr.write(f"popproxy-quarantine: {e}\n")
        return e.status


if __name__ == "__main__":
    raise SystemExit(main())
