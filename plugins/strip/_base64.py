"""
Lenient base64 decoding of the start (or the end) of a text, as
C{popproxy.message} decodes a whole body: junk skipped, each padding sign
ending one run.  It lets the strip filter look at a part's first (or last)
octets without decoding the rest.
"""

from __future__ import annotations

import binascii
import re
import string

_BASE64_ALPHABET = string.ascii_letters + string.digits + "+/="
NOT_BASE64 = bytes(octet for octet in range(256) if chr(octet) not in _BASE64_ALPHABET)
_PADDING = re.compile(rb"=+")


def base64Prefix(chunk: bytes, limit: int | None = None) -> bytes:
    """
    Decode the start of a base64 text leniently, like popproxy.message:
    junk skipped, a padding sign ends one run and starts the next.  With
    C{limit}, what is decoded may stop once it holds the first C{limit}
    octets.
    """
    kept = chunk.translate(None, NOT_BASE64)
    if b"=" in kept:
        runs = _PADDING.split(kept)
    else:
        # The usual body, one run: the first whole quanta that hold
        # C{limit} octets decode to exactly the start of the rest.
        runs = [kept if limit is None else kept[: -(-limit // 3) * 4]]
    decoded = []
    for run in runs:
        run = run[: len(run) - len(run) % 4] if len(run) % 4 == 1 else run
        if run:
            decoded.append(binascii.a2b_base64(run + b"=" * (-len(run) % 4)))
    return b"".join(decoded)


def base64Suffixes(chunk: bytes) -> tuple[bytes, ...]:
    """
    What the end of a base64 text decodes to, given only C{chunk}, its last
    characters: one answer when the text ends in padding or a padding sign
    inside C{chunk} starts its last run, else one for each way the last
    run's quanta may fall (the characters before C{chunk} are not counted).
    """
    kept = chunk.translate(None, NOT_BASE64)
    data = kept.rstrip(b"=")
    inner = data.rfind(b"=")
    if inner != -1:
        return (base64Prefix(kept[inner + 1 :]),)
    if len(data) < len(kept):
        return (quanta(data[len(kept) % 4 :]),)
    # Unpadded: the run's length modulo 4 decides where the quanta start.
    return tuple(quanta(data[(len(data) - rest) % 4 :]) for rest in (0, 2, 3, 1))


def quanta(run: bytes) -> bytes:
    """
    Decode one run of base64 alphabet characters without padding signs,
    as L{base64Prefix} decodes each run.
    """
    run = run[: len(run) - len(run) % 4] if len(run) % 4 == 1 else run
    return binascii.a2b_base64(run + b"=" * (-len(run) % 4)) if run else b""
