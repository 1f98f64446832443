"""
End-to-end through `twistd -n popproxy` and the installed
`popproxy-quarantine`: a message whose 999 attachments strip removes (just
within the default max_parts, the shape of bench/hostile.py's
`exe-parts-999`) reaches the client with one notice per attachment, and
the administrator finds every removed attachment in the directory
quarantine, once, with its exact octets, also after the client retried.
"""

from __future__ import annotations

import email
import email.message
import email.policy
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from popproxy._quarantine import DirectoryQuarantine
from tests.peers.dovecot import RawPop3Client

PARTS = 999

#: Strip's default notice (DEFAULT_NOTICE), as a mail client shows it.
NOTICE = re.compile(
    r"The attachment (a\d+\.exe) was removed by the mail gateway .*\n"
    r"It is kept in quarantine as (\w+);"
)


def attachment(number: int) -> bytes:
    """
    One tiny program attachment, as it stands between its delimiters.
    """
    return b"Content-Type: application/octet-stream; name=a%d.exe\r\n\r\nMZ" % number


def manyPrograms() -> bytes:
    return (
        b"From: sender@example.test\r\nSubject: programs\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
        + b"".join(b"--b\r\n" + attachment(n) + b"\r\n" for n in range(PARTS))
        + b"--b--\r\n"
    )


def quarantineCli(*arguments: str) -> subprocess.CompletedProcess[bytes]:
    """
    The installed popproxy-quarantine, beside the Python running the tests.
    """
    command = [str(Path(sys.executable).parent / "popproxy-quarantine"), *arguments]
    return subprocess.run(command, capture_output=True, timeout=60)


def notices(delivered: bytes) -> list[tuple[str, str]]:
    """
    The file name and quarantine id of each notice, read from the text
    parts of C{delivered} as a mail client decodes them.
    """
    message = email.message_from_bytes(delivered, policy=email.policy.default)
    assert isinstance(message, email.message.EmailMessage)
    found = []
    for part in message.iter_parts():
        assert isinstance(part, email.message.EmailMessage)
        match = NOTICE.search(part.get_content())
        assert match is not None, part.get_content()
        found.append((match[1], match[2]))
    return found


def retrieved(port: int) -> bytes:
    with RawPop3Client("127.0.0.1", port, timeout=60) as client:
        client.login("u", "p")
        message = client.retrieve(1)
        client.quit()
    return message


@pytest.mark.timeout(120)
def test_everyRemovedAttachmentIsListedOnceWithItsOctets(
    rawPop3: Any, popproxyFactory: Any, tmp_path: Path
) -> None:
    """
    The client gets 999 notices naming 999 different quarantine ids and
    none of the programs; `popproxy-quarantine list` shows exactly those
    999 items, each keeps its attachment's exact octets (one exported by
    the CLI as well); a second RETR (a client retrying) delivers the same
    octets and adds no item.
    """
    server = rawPop3(messages=[manyPrograms()], user="u", password="p")
    directory = tmp_path / "quarantine"
    proxy = popproxyFactory(
        f"""
[proxy]
listen = ["tcp:{{PORT}}:interface=127.0.0.1"]
[upstream]
default = "tcp:127.0.0.1:{server.port}"
[chain]
quarantine = "{directory}"
[[filter]]
plugin = "strip"
"""
    )
    delivered = retrieved(proxy.port)
    shown = notices(delivered)
    assert [name for name, _ in shown] == [f"a{n}.exe" for n in range(PARTS)]
    ids = {identifier for _, identifier in shown}
    assert len(ids) == PARTS
    assert b"\r\n\r\nMZ\r\n" not in delivered

    listing = quarantineCli("--dir", str(directory), "list")
    assert listing.returncode == 0, listing.stderr
    lines = listing.stdout.decode().splitlines()
    assert {line.split()[0] for line in lines} == ids and len(lines) == PARTS
    reader = DirectoryQuarantine(directory, create=False)
    kept = sorted(reader.original(reader.get(identifier)) for identifier in ids)
    assert kept == sorted(attachment(n) for n in range(PARTS))
    first = shown[0][1]
    exported = tmp_path / "a0.exe.eml"
    assert (
        quarantineCli("--dir", str(directory), "export", first, "-o", str(exported)).returncode == 0
    )
    assert exported.read_bytes() == attachment(0)

    assert retrieved(proxy.port) == delivered
    again = quarantineCli("--dir", str(directory), "list")
    assert again.stdout.decode().splitlines() == lines
