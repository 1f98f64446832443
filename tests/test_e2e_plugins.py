"""
The shipped plugins end to end: `twistd -n popproxy` with strip, scan and
tag in front of Dovecot, with a real clamd and a real spamd, read by
fetchmail.  A stripped, a virus-replaced and a spam-tagged message arrive as
such, the clean one intact, and every original is retrievable from the
quarantine with popproxy-quarantine.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

from popproxy._quarantinecli import main as quarantineMain
from tests.peers.clamd import eicar
from tests.peers.clients import CLIENTS, stripClientHeaders
from tests.peers.dovecot import DovecotMailbox

GTUBE = b"XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"


def attachment(name: str, data: bytes, boundary: bytes = b"B") -> bytes:
    return (
        b"--" + boundary + b"\r\n"
        b'Content-Type: application/octet-stream; name="' + name.encode() + b'"\r\n'
        b'Content-Disposition: attachment; filename="' + name.encode() + b'"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\n"
        + base64.encodebytes(data).replace(b"\n", b"\r\n")
    )


TEXT = b"--B\r\nContent-Type: text/plain\r\n\r\nHello, see the attachment.\r\n"


def multipart(subject: bytes, *parts: bytes) -> bytes:
    return (
        b"From: sender@example.com\r\nTo: demo@example.com\r\nSubject: " + subject + b"\r\n"
        b"Message-ID: <" + subject.replace(b" ", b"-") + b"@example.com>\r\n"
        b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="B"\r\n\r\n'
        + b"".join(parts)
        + b"--B--\r\n"
    )


EXE = multipart(
    b"invoice",
    TEXT,
    attachment("invoice.pdf.exe", b"MZ\x90\x00" + b"\x00" * 60 + b"PE\x00\x00" * 10),
)
VIRUS = multipart(b"test file", TEXT, attachment("readme.txt", eicar()))
SPAM = (
    b"From: winner@example.net\r\nTo: demo@example.com\r\nSubject: You won\r\n"
    b"Message-ID: <spam@example.net>\r\n\r\n" + GTUBE + b"\r\n"
)
CLEAN = (
    b"From: friend@example.org\r\nTo: demo@example.com\r\nSubject: lunch\r\n"
    b"Message-ID: <lunch@example.org>\r\n\r\nLunch at noon?\r\n"
)


def test_shippedPluginsWithRealPeers(
    dovecot: DovecotMailbox,
    clamdServer: Any,
    spamdServer: Any,
    popproxyFactory: Any,
    tmp_path: Path,
) -> None:
    """
    fetchmail through strip + scan + tag: the .exe is gone (notice, subject
    tag), the EICAR part is replaced by a virus notice, GTUBE is tagged
    [SPAM], the clean message only gains header lines; nothing is deleted
    upstream and the quarantine CLI exports the exact removed parts.
    """
    for message in (EXE, VIRUS, SPAM, CLEAN):
        dovecot.deliver(message)
    quarantine = tmp_path / "quarantine"
    proxy = popproxyFactory(
        f"""
[proxy]
listen = ["tcp:{{PORT}}:interface=127.0.0.1"]
[upstream]
default = "tcp:127.0.0.1:{dovecot.port}"
[chain]
quarantine = "{quarantine}"
[[filter]]
plugin = "strip"
[[filter]]
plugin = "scan"
settings = {{ address = "{clamdServer.tcpAddress}" }}
[[filter]]
plugin = "tag"
settings = {{ spamd = "{spamdServer.endpoint}" }}
"""
    )
    received = CLIENTS["fetchmail"](
        "127.0.0.1", proxy.port, dovecot.user, dovecot.password, tmp_path / "fetchmail"
    )
    exe, virus, spam, clean = [stripClientHeaders(m, "fetchmail") for m in received]

    assert b"Subject: [ATTACHMENT REMOVED] invoice" in exe
    assert b"invoice.pdf.exe was removed" in exe or b"The attachment invoice.pdf.exe" in exe
    assert TEXT in exe and b"TVqQ" not in exe

    assert b"Subject: [VIRUS] test file" in virus
    assert b"Popproxy.Test.EICAR" in virus
    assert TEXT in virus and base64.b64encode(eicar()[:30]) not in virus

    assert b"Subject: [SPAM] You won" in spam and b"X-Spam-Flag: YES" in spam

    assert clean.endswith(CLEAN.split(b"\r\n", 1)[1]) and b"X-Spam-Flag: NO" in clean
    assert b"X-Virus-Scanned: popproxy/clamd; clean" in clean
    assert dovecot.messagesOnServer() == 4

    listing = io.StringIO()
    assert quarantineMain(["--dir", str(quarantine), "list"], listing) == 0
    lines = listing.getvalue().splitlines()
    assert {line.split()[4] for line in lines} == {"strip", "scan"}, lines
    exported = []
    for line in lines:
        target = tmp_path / f"{line.split()[0]}.eml"
        assert (
            quarantineMain(["--dir", str(quarantine), "export", line.split()[0], "-o", str(target)])
            == 0
        )
        exported.append(target.read_bytes())
    assert any(b"invoice.pdf.exe" in part and part in EXE for part in exported)
    assert any(
        base64.encodebytes(eicar())[:40] in part.replace(b"\r\n", b"\n") for part in exported
    )
