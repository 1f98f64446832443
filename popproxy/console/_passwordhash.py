"""
Administrators' password hashes: C{hashlib.scrypt} with a random salt,
written as one line to paste into the configuration
(C{scrypt$N$r$p$SALT$KEY}, salt and key in URL-safe base64), and checked
in time that does not depend on where a wrong password differs.  Nothing
here does I/O; a check costs what the hash's parameters say (about 50 ms
and 16 MiB at the default N=2**14, r=8), so callers run it off the
reactor thread.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass

#: The word every hash line starts with.
SCHEME = "scrypt"
#: The defaults of new hashes (RFC 7914's interactive-login parameters).
DEFAULT_N = 2**14
DEFAULT_R = 8
DEFAULT_P = 1
#: The largest parameters a configured hash may ask for (a check of one
#: may not take the process's memory).
MAX_N = 2**20
MAX_R = 32
MAX_P = 16
KEY_LENGTH = 32


@dataclass(frozen=True, slots=True)
class PasswordHash:
    """
    One parsed hash line.
    """

    n: int
    r: int
    p: int
    salt: bytes
    key: bytes

    def line(self) -> str:
        """
        The hash as the configuration holds it.
        """
        return "$".join(
            (SCHEME, str(self.n), str(self.r), str(self.p), _encode(self.salt), _encode(self.key))
        )

    def matches(self, password: str) -> bool:
        """
        Whether C{password} is the one hashed (constant-time comparison).
        """
        return hmac.compare_digest(derive(password, self.salt, self.n, self.r, self.p), self.key)


def _encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def derive(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    """
    The scrypt key of C{password} (UTF-8) under C{salt}.
    """
    return hashlib.scrypt(
        password.encode("utf-8"),
        salt=salt,
        n=n,
        r=r,
        p=p,
        maxmem=256 * n * r * p + 2**20,
        dklen=KEY_LENGTH,
    )


def hashPassword(
    password: str, n: int = DEFAULT_N, r: int = DEFAULT_R, p: int = DEFAULT_P
) -> PasswordHash:
    """
    A new hash of C{password} with a random 16-byte salt.
    """
    salt = secrets.token_bytes(16)
    return PasswordHash(n, r, p, salt, derive(password, salt, n, r, p))


def parseHash(line: str) -> PasswordHash:
    """
    The hash a configuration line holds.

    @raise ValueError: it is not a hash this module makes (a plain
        password, another scheme, parameters out of bounds).
    """
    fields = line.split("$")
    if len(fields) != 6 or fields[0] != SCHEME:
        raise ValueError("not a scrypt$N$r$p$SALT$KEY line (make one with hash-password)")
    try:
        n, r, p = (int(field) for field in fields[1:4])
        salt, key = _decode(fields[4]), _decode(fields[5])
    except ValueError:
        raise ValueError("its N, r, p or base64 fields are malformed") from None
    if not (2 <= n <= MAX_N and n & (n - 1) == 0 and 1 <= r <= MAX_R and 1 <= p <= MAX_P):
        raise ValueError(
            f"N must be a power of two up to {MAX_N}, r up to {MAX_R}, p up to {MAX_P}"
        )
    if len(salt) < 8 or len(key) < 16:
        raise ValueError("its salt or key is too short")
    return PasswordHash(n, r, p, salt, key)
