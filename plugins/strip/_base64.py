"""
Lenient base64 decoding of the start of a text, as C{popproxy.message}
decodes a whole body: junk skipped, each padding sign ending one run.  It
lets the strip filter look at a part's first octets without decoding the
rest.
"""

from __future__ import annotations

import binascii
import re
import string

_BASE64_ALPHABET = string.ascii_letters + string.digits + "+/="
_NOT_BASE64 = bytes(octet for octet in range(256) if chr(octet) not in _BASE64_ALPHABET)
_PADDING = re.compile(rb"=+")


def base64Prefix(chunk: bytes, limit: int | None = None) -> bytes:
    """
    Decode the start of a base64 text leniently, like popproxy.message:
    junk skipped, a padding sign ends one run and starts the next.  With
    C{limit}, what is decoded may stop once it holds the first C{limit}
    octets.
    """
    kept = chunk.translate(None, _NOT_BASE64)
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
