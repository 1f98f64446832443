"""
C{python -m popproxy}: the command-line tools other than the daemon (which
runs as C{twistd popproxy}).  C{python -m popproxy filter ...} is the
offline runner, the same as C{popproxy-filter ...}; C{python -m popproxy
quarantine ...} is C{popproxy-quarantine ...}.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from popproxy import _offline, _quarantinecli
from popproxy._version import versionLine

USAGE = """\
usage: python -m popproxy filter --config FILE [--output DIR] PATH...
       python -m popproxy quarantine (--config FILE | --dir DIR) list|show|export|purge ...
       python -m popproxy --version

  filter      run the filter chain of a configuration over messages on disk
              (the same as popproxy-filter; see python -m popproxy filter --help)
  quarantine  find quarantined items and get originals back
              (the same as popproxy-quarantine)

The proxy itself runs as: twistd popproxy --config twistd.conf
"""


def main(argv: Sequence[str] | None = None) -> int:
    """
    Dispatch to a subcommand; return the exit status.
    """
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["filter"]:
        return _offline.main(arguments[1:], prog="python -m popproxy filter")
    if arguments[:1] == ["quarantine"]:
        return _quarantinecli.main(arguments[1:])
    if arguments[:1] == ["--version"]:
        sys.stdout.write(versionLine("popproxy") + "\n")
        return 0
    if arguments[:1] in (["-h"], ["--help"]):
        sys.stdout.write(USAGE)
        return 0
    problem = f"unknown command {arguments[0]!r}" if arguments else "no command given"
    sys.stderr.write(f"python -m popproxy: {problem} (try: python -m popproxy filter --help)\n")
    return 2


if __name__ == "__main__":
    sys.exit(main())
