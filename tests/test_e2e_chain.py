"""
End-to-end filtering through `twistd -n popproxy` in front of Dovecot, with
test plugins loaded from files exactly as the configuration loads them: one
that tags, one that replaces an attachment, one that tempfails.  Checks the
bytes real clients receive, TOP/RETR consistency, the quarantine and that a
tempfailed message stays on the server.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.corpus import _base64Lines
from tests.peers.clients import CLIENTS, stripClientHeaders
from tests.peers.dovecot import DovecotMailbox, RawPop3Client

TAGGER = """
from zope.interface import implementer
from popproxy.interfaces import IMessageFilter, Rewrite

@implementer(IMessageFilter)
class Tagger:
    name = "tagger"
    def filterMessage(self, message, context):
        return Rewrite(message.withHeaderAdded("X-Tagged", f"{context.uidl}"), note="tagged")

def makeFilter(settings):
    return Tagger()
"""

STRIPPER = """
from zope.interface import implementer
from popproxy.interfaces import IMessageFilter, Deliver, Rewrite
from popproxy.message import textPart

@implementer(IMessageFilter)
class Stripper:
    name = "stripper"
    def __init__(self, extension):
        self.extension = extension
    async def filterMessage(self, message, context):
        for part in message.walk():
            if any(name.lower().endswith(self.extension) for name in part.filenames):
                notice = textPart(f"{part.filename} was removed.", lineEnding=message.lineEnding)
                edited = message.withPartReplaced(part, notice)
                return Rewrite(edited, note=f"removed {part.filename}")
        return Deliver()

def makeFilter(settings):
    return Stripper(settings.get("extension", ".exe"))
"""

TEMPFAILER = """
from zope.interface import implementer
from popproxy.interfaces import IMessageFilter, Deliver, TempFail

@implementer(IMessageFilter)
class TempFailer:
    name = "tempfailer"
    def filterMessage(self, message, context):
        if "tempfail" in (message.headers.get("Subject") or ""):
            return TempFail("scanner unavailable")
        return Deliver()

def makeFilter(settings):
    return TempFailer()
"""

PLAIN = b"From: a@example.com\r\nSubject: plain\r\n\r\n.dot line\r\nbody\r\n"
TEXT_PART = b"Content-Type: text/plain\r\n\r\nSee attached.\r\n"
PDF_PART = (
    b'Content-Type: application/pdf; name="doc.pdf"\r\n'
    b"Content-Transfer-Encoding: base64\r\n\r\n" + _base64Lines(b"%PDF-1.4 " * 200)
)
EXE_PART = (
    b"Content-Type: application/octet-stream\r\n"
    b'Content-Disposition: attachment; filename="invoice.pdf.exe"\r\n'
    b"Content-Transfer-Encoding: base64\r\n\r\n" + _base64Lines(b"MZ\x90\x00" * 300)
)
WITH_EXE = (
    b"From: b@example.com\r\nSubject: invoice\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="XX"\r\n\r\n'
    b"--XX\r\n" + TEXT_PART + b"--XX\r\n" + PDF_PART + b"--XX\r\n" + EXE_PART + b"--XX--\r\n"
)
TEMPFAIL = b"From: c@example.com\r\nSubject: please tempfail\r\n\r\nbody\r\n"


def setUp(
    tmp_path: Path,
    mailbox: DovecotMailbox,
    popproxyFactory: Any,
    messages: tuple[bytes, ...] = (PLAIN, WITH_EXE, TEMPFAIL),
) -> Any:
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "tagger.py").write_text(TAGGER)
    (plugins / "stripper.py").write_text(STRIPPER)
    (plugins / "tempfailer.py").write_text(TEMPFAILER)
    for message in messages:
        mailbox.deliver(message)
    config = f"""
[proxy]
listen = ["tcp:{{PORT}}:interface=127.0.0.1"]
[upstream]
default = "tcp:127.0.0.1:{mailbox.port}"
[chain]
plugin_dirs = ["{plugins}"]
quarantine = "{tmp_path / "quarantine"}"
[[filter]]
plugin = "tempfailer"
[[filter]]
plugin = "stripper"
settings = {{ extension = ".exe" }}
[[filter]]
plugin = "{plugins / "tagger.py"}"
"""
    return popproxyFactory(config)


def test_filteredBytes(dovecot: DovecotMailbox, popproxyFactory: Any, tmp_path: Path) -> None:
    """
    Through the chain: the plain message gets only the tag header (the rest
    byte-identical); the .exe attachment is replaced by a notice while the
    text and PDF parts stay byte-identical; the tempfail message gets
    -ERR [SYS/TEMP] and stays on the server; TOP shows RETR's headers.
    """
    proxy = setUp(tmp_path, dovecot, popproxyFactory)
    uidls = dovecot.uidls()
    with RawPop3Client("127.0.0.1", proxy.port) as client:
        client.login(dovecot.user, dovecot.password)
        first = client.retrieve(1)
        second = client.retrieve(2)
        top = b"".join(client.multiline(b"TOP 2 0"))
        failed = client.command(b"RETR 3")
        sizes = dict(client.listSizes())
        client.quit()
    assert first == b"X-Tagged: " + uidls[0] + b"\r\n" + PLAIN
    assert second.startswith(b"X-Tagged: " + uidls[1] + b"\r\nFrom: b@example.com\r\n")
    assert TEXT_PART in second and PDF_PART in second
    assert b"invoice.pdf.exe was removed." in second and b"MZ" not in second
    assert EXE_PART not in second and second.endswith(b"--XX--\r\n")
    assert top == second[: second.index(b"\r\n\r\n") + 4]
    assert failed == b"-ERR [SYS/TEMP] scanner unavailable"
    assert sizes[1] == len(first) and sizes[2] == len(second)
    assert dovecot.messagesOnServer() == 3
    assert "filter stripper" in proxy.log() and "removed invoice.pdf.exe" in proxy.log()


@pytest.mark.parametrize("client", ["fetchmail", "getmail", "mpop", "curl", "poplib"])
def test_realClientsGetFilteredMail(
    client: str, dovecot: DovecotMailbox, popproxyFactory: Any, tmp_path: Path
) -> None:
    """
    Real clients receive the filtered messages: tagged, the .exe replaced by
    a notice, the other parts byte-identical; nothing is deleted upstream.
    """
    proxy = setUp(tmp_path, dovecot, popproxyFactory, (PLAIN, WITH_EXE))
    received = CLIENTS[client](
        "127.0.0.1", proxy.port, dovecot.user, dovecot.password, tmp_path / "client"
    )
    stripped = [stripClientHeaders(m, client) for m in received]
    assert stripped[0].startswith(b"X-Tagged: ") and stripped[0].endswith(PLAIN)
    assert b"was removed." in stripped[1] and PDF_PART in stripped[1] and TEXT_PART in stripped[1]
    assert dovecot.messagesOnServer() == 2


def test_quarantineUnused(dovecot: DovecotMailbox, popproxyFactory: Any, tmp_path: Path) -> None:
    """
    Rewrites do not quarantine anything (only Replace verdicts do).
    """
    proxy = setUp(tmp_path, dovecot, popproxyFactory)
    with RawPop3Client("127.0.0.1", proxy.port) as client:
        client.login(dovecot.user, dovecot.password)
        client.retrieve(2)
        client.quit()
    assert list((tmp_path / "quarantine" / "records").iterdir()) == []
