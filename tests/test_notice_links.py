"""
The C{{url}} placeholder of the strip and scan notices: with a console
whose C{public_url} is set, the notice a recipient reads links to the
item's page (the chain hands its filters the console's links); without a
console, or without a public URL, the placeholder is empty and the rest
of the notice stays.
"""

from __future__ import annotations

from pathlib import Path

from twisted.internet.task import Clock

from popproxy._assembly import buildChain
from popproxy._chain import ChainEntry, FilterChain
from popproxy._config import parseConfig
from popproxy._plugins import loadFilter
from popproxy._testkit import settle
from popproxy.console._links import itemLinks, itemPath
from popproxy.interfaces import FilterContext
from popproxy.message import Message
from popproxy.testing import attachmentPart, buildMessage, runInline
from tests.test_plugin_scan import eicarAttachment, fakeFilter, findEicar

CONTEXT = FilterContext("RETR", 1, "alice", "127.0.0.1:5", "tcp:u:110", "s1", "uid-1")
TEXT = b"Content-Type: text/plain\r\n\r\nhello\r\n"
STRIP_NOTICE = "Removed {filename}. Get it back: <{url}> (id {id})"
SCAN_NOTICE = "Virus {virus} in {filename}. Details: <{url}>"


def run(filter: object, name: str, raw: bytes, quarantine: Path, publicUrl: str | None) -> bytes:
    """
    The octets the client gets from a chain of one filter whose console
    is at C{publicUrl} (or absent).
    """
    from popproxy._quarantine import DirectoryQuarantine

    chain = FilterChain(
        [ChainEntry(name, filter)],
        Clock(),
        DirectoryQuarantine(quarantine),
        runInline,
        itemUrl=itemLinks(publicUrl),
    )
    return settle(chain.processMessage(CONTEXT, raw))


def stripped(tmp_path: Path, publicUrl: str | None) -> tuple[str, str]:
    strip = loadFilter("strip", {"notice": STRIP_NOTICE}, Path("."), ())
    raw = buildMessage(TEXT, attachmentPart(b"MZ\x90\x00", "setup.exe"))
    output = run(strip, "strip", raw, tmp_path / "q", publicUrl)
    [record] = (tmp_path / "q" / "records").glob("*.json")
    return Message.fromBytes(output).partAt((1,)).text(), record.stem


def test_stripNoticeLinksToTheItem(tmp_path: Path) -> None:
    """
    The notice carries public_url + the item's path.
    """
    text, identifier = stripped(tmp_path, "https://mail.example.com/console")
    link = f"https://mail.example.com/console/item/{identifier}"
    assert text.startswith(f"Removed setup.exe. Get it back: <{link}> (id {identifier})")


def test_stripNoticeWithoutConsole(tmp_path: Path) -> None:
    """
    Without a console link the placeholder is empty.
    """
    text, identifier = stripped(tmp_path, None)
    assert text.startswith(f"Removed setup.exe. Get it back: <> (id {identifier})")


def scanned(tmp_path: Path, publicUrl: str | None) -> tuple[str, str]:
    virusScan, _ = fakeFilter(findEicar, notice=SCAN_NOTICE)
    raw = buildMessage(TEXT, eicarAttachment())
    output = run(virusScan, "scan", raw, tmp_path / "q", publicUrl)
    [record] = (tmp_path / "q" / "records").glob("*.json")
    return Message.fromBytes(output).partAt((1,)).text(), record.stem


def test_scanNoticeLinksToTheItem(tmp_path: Path) -> None:
    """
    The scan filter's part notice carries the link the same way.
    """
    text, identifier = scanned(tmp_path, "http://127.0.0.1:8110")
    assert f"Details: <http://127.0.0.1:8110/item/{identifier}>" in text


def test_scanNoticeWithoutConsole(tmp_path: Path) -> None:
    """
    And without a console, nothing is put in its place.
    """
    text, _ = scanned(tmp_path, None)
    assert "Details: <>" in text


def test_configurationGivesTheChainItsLinks(tmp_path: Path) -> None:
    """
    The chain built from a configuration links to the console of its
    C{[console] public_url}, and to nothing without one.
    """
    base = f'[upstream]\ndefault = "tcp:127.0.0.1:1"\n[chain]\nquarantine = "{tmp_path}"\n'
    withUrl = parseConfig(
        base + '[console]\nlisten = "tcp:0"\npublic_url = "https://q.example.com/"\n'
    )
    assert buildChain(withUrl, Clock())._itemUrl("p1") == "https://q.example.com/item/p1"
    noUrl = parseConfig(base + '[console]\nlisten = "tcp:0"\n')
    assert buildChain(noUrl, Clock())._itemUrl("p1") == ""
    assert buildChain(parseConfig(base), Clock())._itemUrl("p1") == ""
    assert itemPath("a/b?c") == "/item/a%2Fb%3Fc"
