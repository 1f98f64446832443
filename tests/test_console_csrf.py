"""
The console's form tokens: a session's own token compared in constant
time, and the sign-in form's token bound to its cookie by the process's
secret.
"""

from __future__ import annotations

from popproxy.console._csrf import SignInTokens, sameToken


def test_sameToken() -> None:
    """
    Only the exact token passes; missing, empty or non-ASCII ones do not.
    """
    assert sameToken("abc", "abc") and sameToken("abc", b"abc")
    assert not sameToken("abc", "abd") and not sameToken("abc", None)
    assert not sameToken("", "") and not sameToken("abc", b"\xff")


def test_signInTokenIsBoundToItsCookieAndSecret() -> None:
    """
    The token of one cookie does not fit another cookie, nor the same
    cookie under another process's secret; no cookie never passes.
    """
    tokens = SignInTokens(b"s" * 32)
    token = tokens.token("cookie-1")
    assert tokens.check("cookie-1", token)
    assert not tokens.check("cookie-2", token)
    assert not SignInTokens(b"t" * 32).check("cookie-1", token)
    assert not tokens.check(None, token) and not tokens.check("", tokens.token(""))
