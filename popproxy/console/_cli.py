"""
The console's command line, C{popproxy-console}: C{hash-password} reads an
administrator's password (from the terminal without echo, asked twice; or
one line from standard input when it is not a terminal) and prints the
hash line to paste into C{[console] admins}:

    $ popproxy-console hash-password --name root
    Password:
    Again:
    root = "scrypt$16384$8$1$…$…"

The password itself is never printed, logged or written anywhere.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from collections.abc import Callable
from typing import TextIO

from popproxy._version import versionLine
from popproxy.console._passwordhash import hashPassword

#: Passwords shorter than this are refused.
MIN_PASSWORD = 8


def readPassword(
    stdin: TextIO, ask: Callable[[str], str] = getpass.getpass
) -> tuple[str | None, str]:
    """
    The password to hash, and an empty string; or C{None} and why not.
    """
    if stdin.isatty():
        first = ask("Password: ")
        if ask("Again: ") != first:
            return None, "the two passwords differ"
    else:
        first = stdin.readline().rstrip("\r\n")
    if len(first) < MIN_PASSWORD:
        return None, f"a password needs at least {MIN_PASSWORD} characters"
    return first, ""


def main(
    argv: list[str] | None = None,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
    ask: Callable[[str], str] = getpass.getpass,
) -> int:
    """
    Run the command; its exit status (0: printed; 2: refused).
    """
    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    parser = argparse.ArgumentParser(prog="popproxy-console")
    parser.add_argument("--version", action="version", version=versionLine("popproxy-console"))
    commands = parser.add_subparsers(dest="command", required=True)
    hashing = commands.add_parser(
        "hash-password", help="print the hash line of an administrator's password"
    )
    hashing.add_argument(
        "--name", help='print NAME = "HASH", the line for [console.admins], not only HASH'
    )
    arguments = parser.parse_args(argv)
    password, why = readPassword(stdin, ask)
    if password is None:
        print(f"popproxy-console: {why}", file=sys.stderr)
        return 2
    line = hashPassword(password).line()
    if arguments.name is not None:
        print(f"{json.dumps(arguments.name)} = {json.dumps(line)}", file=stdout)
    else:
        print(line, file=stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
