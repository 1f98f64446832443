"""
popproxy.strategies: mimeMessages generates messages that parse and keep
every byte, honours its options, and moved out of popproxy.testing so that
module imports without hypothesis (an old import from popproxy.testing
still works where hypothesis is installed).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

from hypothesis import given, settings

from popproxy import strategies, testing
from popproxy.message import Message
from popproxy.strategies import mimeMessages


@given(mimeMessages())
@settings(max_examples=50)
def test_messagesParseAndKeepTheirBytes(raw: bytes) -> None:
    """
    Every generated message is bytes that parse into a message which
    writes back the very same bytes.
    """
    assert isinstance(raw, bytes)
    assert Message.fromBytes(raw).toBytes() == raw


@given(mimeMessages(lineEndings=(b"\n",), multipart=True))
@settings(max_examples=30)
def test_optionsAreHonoured(raw: bytes) -> None:
    """
    With only bare LF line ends and C{multipart}, a message has no CR in
    its header block and a multipart type at the top.
    """
    head = raw.split(b"\n\n", 1)[0]
    assert b"\r\n" not in head
    assert Message.fromBytes(raw).root.contentType.startswith("multipart/")


def test_oldImportFromTestingStillWorks() -> None:
    """
    C{popproxy.testing.mimeMessages} is the strategies module's function,
    found lazily, and not part of testing's C{__all__} (so a star import
    does not need hypothesis).
    """
    assert testing.mimeMessages is strategies.mimeMessages
    from popproxy.testing import mimeMessages as old

    assert old is mimeMessages
    assert "mimeMessages" not in testing.__all__


def test_unknownNamesStillRaise() -> None:
    """
    The lazy lookup answers only for C{mimeMessages}.
    """
    try:
        testing.noSuchHelper  # noqa: B018
    except AttributeError as error:
        assert "noSuchHelper" in str(error)
    else:
        raise AssertionError("no AttributeError")


def test_testingImportsWithoutHypothesis() -> None:
    """
    In a Python where hypothesis cannot be imported, popproxy.testing
    imports and runs a filter, and only C{mimeMessages} (and
    popproxy.strategies) say that hypothesis is missing.
    """
    script = textwrap.dedent(
        """
        import sys
        sys.modules["hypothesis"] = None
        from popproxy.testing import *
        from popproxy.testing import buildMessage, loadPlugin, runFilter
        import popproxy.testing
        assert "hypothesis" not in [m.split(".")[0] for m in sys.modules if sys.modules[m]]
        try:
            popproxy.testing.mimeMessages
        except ImportError:
            print("strategies need hypothesis")
        print(len(buildMessage()))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "strategies need hypothesis"
