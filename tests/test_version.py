"""
Every command popproxy installs answers C{--version} with one line naming
its version and the Twisted and Python it runs on, and exits 0: the
installed scripts are run as an administrator runs them.
"""

from __future__ import annotations

import importlib.metadata
import platform
import subprocess
import sys
from pathlib import Path

import pytest

import twisted
from popproxy import __version__
from tests.peers.proxy import twistdCommand


def script(name: str) -> str:
    """
    An installed console script of the Python running the tests.
    """
    path = Path(sys.executable).parent / name
    assert path.exists(), f"{name} is not installed beside {sys.executable}"
    return str(path)


@pytest.mark.parametrize(
    "command, program",
    [
        ([twistdCommand(), "popproxy", "--version"], "popproxy"),
        ([script("popproxy-quarantine"), "--version"], "popproxy-quarantine"),
        ([script("popproxy-filter"), "--version"], "popproxy-filter"),
        ([sys.executable, "-m", "popproxy", "--version"], "popproxy"),
    ],
)
def test_versionLine(command: list[str], program: str, tmp_path: Path) -> None:
    """
    C{--version} prints C{<program> <version> (Twisted <v>, Python <v>)}
    on stdout, nothing on stderr, and exits 0 (twistd writes no pid file
    for it either).
    """
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert (done.returncode, done.stderr) == (0, "")
    expected = (
        f"{program} {__version__} (Twisted {twisted.__version__}, "
        f"Python {platform.python_version()})\n"
    )
    assert done.stdout == expected
    assert list(tmp_path.iterdir()) == []


def test_installedVersionIsThePackages() -> None:
    """
    The version pip installed is the one --version and CAPA's
    IMPLEMENTATION show (one version number, in popproxy/__init__.py).
    """
    assert importlib.metadata.version("popproxy") == __version__
