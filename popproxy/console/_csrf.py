"""
Form tokens against cross-site request forgery: every POST the console
accepts carries a token an attacker's page cannot know.

A signed-in session's forms carry its own random token (kept with the
session).  The sign-in form, which comes before any session, carries a
token derived (HMAC-SHA256 with a secret of the process) from a random
value in a cookie of its own: a forged POST has neither that cookie's
value nor the secret, and nothing is kept per visitor.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

#: The form field every POST carries its token in.
FIELD = b"csrf"


def sameToken(expected: str, given: str | bytes | None) -> bool:
    """
    Whether C{given} is C{expected}, in time that does not tell how much
    of it matched.
    """
    if given is None or not expected:
        return False
    if isinstance(given, bytes):
        try:
            given = given.decode("ascii")
        except UnicodeDecodeError:
            return False
    return hmac.compare_digest(expected.encode("ascii"), given.encode("ascii", "replace"))


class SignInTokens:
    """
    The sign-in form's tokens, bound to the browser's sign-in cookie.

    @param secret: the key (random per process by default: a restart only
        means a sign-in form must be loaded again).
    """

    def __init__(self, secret: bytes | None = None) -> None:
        self._secret = secret if secret is not None else secrets.token_bytes(32)

    def token(self, cookie: str) -> str:
        """
        The token a form must send with the sign-in cookie C{cookie}.
        """
        digest = hmac.new(self._secret, cookie.encode("utf-8"), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")

    def check(self, cookie: str | None, given: str | bytes | None) -> bool:
        """
        Whether C{given} is the token for C{cookie} (no cookie: never).
        """
        return bool(cookie) and sameToken(self.token(cookie or ""), given)
