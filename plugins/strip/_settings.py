"""
The strip filter's settings: the default policy (blocked extensions and
content types, the notice), L{StripPolicy}, and the checks that turn a
C{[[filter]]} settings table into one.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from popproxy.interfaces import SettingsReader

# The default policy.

#: Executables, scripts, shortcuts, installers, help files that run code
#: and disk images, in the spirit of amavisd-new's banned files, MIMEDefang's
#: bad file names and the "level 1" list Outlook refuses to open.
DEFAULT_EXTENSIONS: tuple[str, ...] = (
    # Windows programs and libraries.
    "exe", "com", "scr", "pif", "cpl", "dll", "ocx", "sys", "drv", "vxd",
    # Command and script files.
    "bat", "cmd", "vb", "vbs", "vbe", "vbp", "js", "jse", "ws", "wsf", "wsh", "wsc", "sct",
    "hta", "htc", "ps1", "ps1xml", "ps2", "ps2xml", "psc1", "psc2", "psd1", "psm1", "pssc",
    "msh", "msh1", "msh2", "mshxml", "msh1xml", "msh2xml", "csh", "ksh", "bas", "fxp",
    "py", "pyc", "pyo", "pyw", "pyz", "pyzw", "jar", "jnlp", "reg", "inf", "ins", "isp",
    # Shortcuts and shell tricks.
    "lnk", "url", "scf", "shb", "shs", "xnk", "website", "webpnp", "settingcontent-ms",
    "library-ms", "searchconnector-ms",
    # Installers and packages.
    "msi", "msp", "mst", "msu", "msix", "msixbundle", "appx", "appxbundle", "application",
    "appref-ms", "gadget", "xbap", "vsix", "vsmacros", "vsw", "diagcab", "grp", "cnt",
    "ops", "osd", "plg", "prf", "prg", "ade", "adp", "app", "bgi", "its", "xll", "wsb",
    "pkg", "dmg",
    # Help and console files that run code.
    "chm", "hlp", "hpj", "msc",
    # Disk images (they hide their contents from scanners and Mark of the Web).
    "iso", "img", "vhd", "vhdx",
)  # fmt: skip

#: Declared content types that are executables or installers whatever the
#: file is called.
DEFAULT_CONTENT_TYPES: tuple[str, ...] = (
    "application/x-msdownload",
    "application/x-msdos-program",
    "application/x-dosexec",
    "application/x-ms-dos-executable",
    "application/x-winexe",
    "application/x-executable",
    "application/x-sharedlib",
    "application/x-mach-binary",
    "application/vnd.microsoft.portable-executable",
    "application/x-ms-installer",
    "application/x-msi",
    "application/x-ole-storage-msi",
    "application/x-ms-shortcut",
    "application/x-ms-application",
    "application/x-bat",
    "application/bat",
    "application/hta",
    "application/x-javascript-hta",
    "application/java-archive",
    "application/x-java-archive",
    "application/x-java-jnlp-file",
    "application/x-iso9660-image",
    "application/x-apple-diskimage",
)

DEFAULT_NOTICE = (
    "The attachment {filename} was removed by the mail gateway ({reason}).\n"
    "It is kept in quarantine as {id}; ask your administrator if you need it.\n"
)

SETTINGS = (
    "extensions",
    "content_types",
    "detect",
    "archives",
    "max_nesting",
    "max_members",
    "max_inflated",
    "encrypted",
    "unreadable",
    "uuencode",
    "tnef",
    "max_size",
    "signed",
    "notice",
)

_NOTICE_FIELDS = frozenset({"filename", "reason", "id", "url"})


@dataclass(frozen=True)
class StripPolicy:
    """
    What the filter removes; see docs/plugins/strip.md for each field.
    """

    extensions: frozenset[str] = frozenset(DEFAULT_EXTENSIONS)
    contentTypes: frozenset[str] = frozenset(DEFAULT_CONTENT_TYPES)
    detect: bool = True
    archives: bool = True
    maxNesting: int = 3
    maxMembers: int = 1000
    maxInflated: int = 100 * 1024 * 1024
    encrypted: str = "allow"
    unreadable: str = "strip"
    uuencode: bool = True
    tnef: bool = True
    maxSize: int = 0
    signed: str = "strip"
    notice: str = DEFAULT_NOTICE


# Reading the settings.


def parsePolicy(settings: Mapping[str, Any]) -> StripPolicy:
    """
    The policy the C{settings} table of a C{[[filter]]} entry asks for.

    @raise ValueError: an unknown setting, or a value of the wrong kind.
    """
    read = SettingsReader(settings)
    default = StripPolicy()
    policy = StripPolicy(
        extensions=_extensions(read.strings("extensions", DEFAULT_EXTENSIONS)),
        contentTypes=_contentTypes(read.strings("content_types", DEFAULT_CONTENT_TYPES)),
        detect=read.boolean("detect", default.detect),
        archives=read.boolean("archives", default.archives),
        maxNesting=read.integer("max_nesting", default.maxNesting, minimum=1),
        maxMembers=read.integer("max_members", default.maxMembers, minimum=1),
        maxInflated=read.integer("max_inflated", default.maxInflated, minimum=1),
        encrypted=read.choice("encrypted", default.encrypted, ("allow", "strip")),
        unreadable=read.choice("unreadable", default.unreadable, ("strip", "allow")),
        uuencode=read.boolean("uuencode", default.uuencode),
        tnef=read.boolean("tnef", default.tnef),
        maxSize=read.integer("max_size", default.maxSize, minimum=0),
        signed=read.choice("signed", default.signed, ("strip", "replace")),
        notice=_notice(read.value("notice", default.notice)),
    )
    read.finish()
    return policy


def _extensions(items: tuple[str, ...]) -> frozenset[str]:
    extensions = set()
    for item in items:
        extension = item.strip().lstrip(".").casefold()
        if not extension or re.search(r"[\s/\\]", extension):
            raise ValueError(f"extensions: {item!r} is not a file extension")
        extensions.add(extension)
    return frozenset(extensions)


def _contentTypes(items: tuple[str, ...]) -> frozenset[str]:
    types = set()
    for item in items:
        contentType = item.strip().lower()
        if not re.fullmatch(r"[a-z0-9!#$&^_.+-]+/[a-z0-9!#$&^_.+-]+", contentType):
            raise ValueError(f"content_types: {item!r} is not a type/subtype")
        types.add(contentType)
    return frozenset(types)


def _notice(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"notice must be a non-empty text, not {value!r}")
    try:
        fields = {name for _, name, _, _ in string.Formatter().parse(value) if name is not None}
    except ValueError as e:
        raise ValueError(f"notice is not a valid template: {e}") from None
    unknown = sorted(fields - _NOTICE_FIELDS)
    if unknown:
        raise ValueError(
            f"notice: unknown field {{{unknown[0]}}} "
            "(use {filename}, {reason}, {id}, {url})"
        )
    try:
        value.format(filename="setup.exe", reason="blocked extension .exe", id="id", url="u")
    except (ValueError, IndexError, KeyError, AttributeError) as e:
        raise ValueError(f"notice is not a valid template: {e}") from None
    return value
