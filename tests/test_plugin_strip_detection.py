"""
What a file's first octets are (plugins/strip/_detection.py): programs,
shortcuts, disk images and installers are recognized whatever their name,
and ordinary documents or text that merely start alike are not.
"""

from __future__ import annotations

from plugins.strip._detection import detectionReason, detectTypes
from plugins.strip._settings import StripPolicy
from tests import strip_corpus

POLICY = StripPolicy()


def test_executablesAndImagesAreDetected() -> None:
    """
    A PE program, an ELF program, a Windows shortcut, an ISO image and an
    MSI package are each told by their octets.
    """
    assert "exe" in {found.extension for found in detectTypes(strip_corpus.peExecutable())}
    elf = detectTypes(strip_corpus.elfExecutable())
    assert "application/x-executable" in {found.mimeType for found in elf}
    assert "lnk" in {found.extension for found in detectTypes(strip_corpus.windowsShortcut())}
    assert "iso" in {found.extension for found in detectTypes(strip_corpus.isoImage())}
    assert "msi" in {found.extension for found in detectTypes(strip_corpus.msiPackage())}


def test_machOIsDetected() -> None:
    """
    A Mach-O program is told by its magic number alone.
    """
    found = detectTypes(b"\xcf\xfa\xed\xfe" + bytes(60))
    assert [item.mimeType for item in found] == ["application/x-mach-binary"]


def test_documentsAndLookalikesAreNotDetected() -> None:
    """
    A PDF, a PNG, nothing at all, and a text that starts with "MZ" but has
    no PE header are none of the blocked kinds.
    """
    for head in (strip_corpus.pdfDocument(), strip_corpus.pngImage(), b"", b"MZ" + b"a" * 200):
        assert detectTypes(head) == []
        assert detectionReason(head, POLICY) is None


def test_detectionReasonFollowsThePolicy() -> None:
    """
    A detected program is a reason to remove the file while its extension
    (or its MIME type) is blocked, and none when neither is.
    """
    head = strip_corpus.peExecutable()
    reason = detectionReason(head, POLICY)
    assert reason is not None and reason.startswith("detected ") and reason.endswith("(.exe)")
    byExtension = StripPolicy(extensions=frozenset({"exe"}), contentTypes=frozenset())
    assert detectionReason(head, byExtension) == reason
    neither = StripPolicy(extensions=frozenset({"zip"}), contentTypes=frozenset())
    assert detectionReason(head, neither) is None
