"""
Protocol tests for the values a client's login sends upstream: a CR, LF or
NUL in a decoded value is refused with -ERR [AUTH] before the upstream
hears anything; a value too long for the line that would carry it (248
octets in USER/PASS, the SASL line for AUTH PLAIN) is refused with none of
it sent; a refusal counts as a failed login, and one client login never
becomes more upstream commands than its translation; log events show
client-supplied names escaped.
"""

from __future__ import annotations

import base64

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.logger import capturedLogs, formatEvent

from popproxy._config import Config
from tests.sessionharness import Harness

#: CAPA answers of the three kinds of upstream a login may meet.
CAPAS = {
    "userpass": b"+OK\r\nTOP\r\nUIDL\r\nUSER\r\n.\r\n",
    "sasl": b"+OK\r\nTOP\r\nUIDL\r\nSASL PLAIN LOGIN\r\nUSER\r\n.\r\n",
    "saslonly": b"+OK\r\nTOP\r\nUIDL\r\nSASL PLAIN\r\n.\r\n",
}
TIMESTAMP = b"<1896.697170952@dbc.mtview.ca.us>"
DIGEST = b"c4c9334bac560ecc979e58001b3e22fb"
MAX_VALUE = 248


def b64(data: bytes) -> bytes:
    return base64.b64encode(data)


def harness(**options: object) -> Harness:
    h = Harness(greet=False, **options)  # type: ignore[arg-type]
    h.upstream.reply(b"+OK ready " + TIMESTAMP + b"\r\n")
    h.received()
    return h


def serve(h: Harness, kind: str) -> list[bytes]:
    """
    Play the upstream until the session stops sending: answer every line
    it gets as a server of this kind answers a login that fails, and
    return the lines (CRLF-separated) in the order received.
    """
    lines: list[bytes] = []
    for _ in range(100):
        data = h.upstream.received()
        if not data:
            return lines
        assert data.endswith(b"\r\n")
        for line in data[:-2].split(b"\r\n"):
            lines.append(line)
            if line == b"CAPA":
                h.upstream.reply(CAPAS[kind])
            elif line.startswith(b"USER ") and kind != "saslonly":
                h.upstream.reply(b"+OK\r\n")
            elif line == b"AUTH PLAIN":
                h.upstream.reply(b"+ \r\n")
            else:
                h.upstream.reply(b"-ERR [AUTH] no\r\n")
        h.settle()
    raise AssertionError("the session kept sending")


def clean(*values: bytes) -> bool:
    return all(not {13, 10, 0} & set(v) for v in values)


def short(*values: bytes) -> bool:
    """
    Each value fits a USER or PASS line (255 octets with CRLF).
    """
    return all(len(v) <= MAX_VALUE for v in values)


def plainLines(authzid: bytes, authcid: bytes, password: bytes) -> list[bytes]:
    token = b64(authzid + b"\0" + authcid + b"\0" + password)
    if len(b"AUTH PLAIN " + token + b"\r\n") <= 255:
        return [b"AUTH PLAIN " + token]
    return [b"AUTH PLAIN", token]


def translated(kind: str, authzid: bytes, user: bytes, password: bytes) -> list[bytes]:
    """
    What an upstream of this kind must receive for an AUTH with these
    values: nothing when a value holds CR, LF or NUL, else CAPA and the
    login: AUTH PLAIN if offered (any length the SASL line takes), else
    USER/PASS if each value fits its line (248 octets), else nothing more.
    """
    proxy = bool(authzid) and authzid != user
    if not clean(*((authzid, user, password) if proxy else (user, password))):
        return []
    if kind != "userpass":
        return [b"CAPA"] + plainLines(authzid if proxy else b"", user, password)
    if proxy or not short(user, password):
        return [b"CAPA"]
    return [b"CAPA", b"USER " + user, b"PASS " + password]


def assertWellFormed(lines: list[bytes], most: int = 3) -> None:
    """
    Each line the upstream got is one command: no CR, LF or NUL inside,
    at most 255 octets with CRLF (a SASL response line: 8192), and there
    are no more than C{most}: an AUTH becomes at most CAPA and two login
    lines (USER and PASS, or AUTH PLAIN and its response).
    """
    assert len(lines) <= most, lines
    for line in lines:
        assert not {13, 10, 0} & set(line), line
        limit = 255 if b" " in line or line in (b"CAPA", b"AUTH PLAIN") else 8192
        assert len(line) + 2 <= limit, line


def test_crlfInAuthPlainPasswordNeverReachesUpstream() -> None:
    """
    A password carrying CRLF DELE 1 CRLF QUIT, to an upstream without SASL
    (so the login would become USER/PASS), is refused before the upstream
    hears anything, CAPA included: no DELE, no QUIT upstream.
    """
    h = harness()
    h.send(b"AUTH PLAIN " + b64(b"\0alice\0pw\r\nDELE 1\r\nQUIT") + b"\r\n")
    assert h.received() == (
        b"-ERR [AUTH] the password contains a control character (CR, LF or NUL)\r\n"
    )
    assert h.upstream.received() == b""
    assert h.session.state == "AUTHORIZATION"


def test_manyPairsInOneAuthAreOneFailedLogin() -> None:
    """
    One AUTH PLAIN (after the challenge) carrying 63 CRLF-separated
    USER/PASS pairs is one failed login, not 63 guesses; the third such
    AUTH ends the session (max_failed_logins = 3) and the upstream never
    got a password.
    """
    h = harness()
    guesses = b"".join(b"\r\nUSER alice\r\nPASS guess%d" % n for n in range(63))
    for attempt in range(3):
        h.send(b"AUTH PLAIN\r\n")
        assert h.received() == b"+ \r\n"
        h.send(b64(b"\0alice\0x" + guesses) + b"\r\n")
        assert h.received().startswith(b"-ERR [AUTH] the password contains a control")
        assert h.session._login.failedLogins == attempt + 1
    h.settle()
    assert h.client.closedBy is not None
    assert h.upstream.received() == b""


def test_nulAndOverlongValuesRefused() -> None:
    """
    A NUL in an AUTH LOGIN user name is refused before the upstream hears
    anything; a password one octet over 248, to an upstream that takes
    only USER/PASS, is refused after its CAPA with no USER or PASS sent; a
    password at the bound goes through in a PASS line of exactly 255
    octets.
    """
    h = harness()
    h.send(b"AUTH LOGIN " + b64(b"al\0ice") + b"\r\n" + b64(b"pw") + b"\r\n")
    assert h.received() == (
        b"+ UGFzc3dvcmQ6\r\n"
        b"-ERR [AUTH] the user name contains a control character (CR, LF or NUL)\r\n"
    )
    assert h.upstream.received() == b""
    h.send(b"AUTH PLAIN\r\n")
    h.send(b64(b"\0alice\0" + b"p" * (MAX_VALUE + 1)) + b"\r\n")
    assert serve(h, "userpass") == [b"CAPA"]
    assert h.received() == b"+ \r\n-ERR [AUTH] the password is longer than 248 octets\r\n"
    h.send(b"AUTH PLAIN\r\n")
    h.send(b64(b"\0alice\0" + b"p" * MAX_VALUE) + b"\r\n")
    assert serve(h, "userpass") == [b"CAPA", b"USER alice", b"PASS " + b"p" * MAX_VALUE]
    assert h.received() == b"+ \r\n-ERR [AUTH] no\r\n"


#: A password of 1,000 printable octets, spaces included.
TOKEN = (bytes(range(32, 127)) * 11)[:1000]


def test_longPasswordLogsInWithPlain() -> None:
    """
    A 1,000-octet password (an application token) sent with AUTH PLAIN
    reaches an upstream that offers PLAIN as exactly one AUTH PLAIN
    exchange, its response the exact base64 of the client's values, and
    the login succeeds.
    """
    assert len(TOKEN) == 1000
    for capa in (CAPAS["sasl"], CAPAS["saslonly"]):
        h = harness()
        h.send(b"AUTH PLAIN\r\n")
        assert h.received() == b"+ \r\n"
        h.send(b64(b"\0alice\0" + TOKEN) + b"\r\n")
        assert h.upstream.received() == b"CAPA\r\n"
        h.upstream.reply(capa)
        assert h.upstream.received() == b"AUTH PLAIN\r\n"
        h.upstream.reply(b"+ \r\n")
        assert h.upstream.received() == b64(b"\0alice\0" + TOKEN) + b"\r\n"
        h.upstream.reply(b"+OK logged in\r\n")
        assert h.received() == b"+OK logged in\r\n"
        assert h.upstream.received() == b""
        assert h.session.state == "TRANSACTION"
        assert h.session._login.failedLogins == 0


def test_longPasswordToUserPassUpstreamRefused() -> None:
    """
    The same 1,000-octet password to an upstream without SASL PLAIN is
    refused after its CAPA with the USER/PASS bound as the reason: no USER
    or PASS reaches the upstream, the refusal counts as a failed login,
    and the session goes on.
    """
    h = harness()
    h.send(b"AUTH PLAIN\r\n")
    assert h.received() == b"+ \r\n"
    h.send(b64(b"\0alice\0" + TOKEN) + b"\r\n")
    assert h.upstream.received() == b"CAPA\r\n"
    h.upstream.reply(CAPAS["userpass"])
    h.settle()
    assert h.upstream.received() == b""
    assert h.received() == b"-ERR [AUTH] the password is longer than 248 octets\r\n"
    assert h.session._login.failedLogins == 1
    assert h.session.state == "AUTHORIZATION"
    h.send(b"NOOP\r\n")
    assert h.received() == b"-ERR NOOP is not valid in the AUTHORIZATION state\r\n"


def test_refusalWaitsForTheFailureDelay() -> None:
    """
    A refused value is answered after the failed-login delay, like a wrong
    password, and commands pipelined behind it wait their turn.
    """
    h = harness(loginFailureDelay=2.0)
    h.send(b"AUTH PLAIN " + b64(b"\0alice\0a\nb") + b"\r\nNOOP\r\n")
    h.clock.advance(1.9)
    assert h.received() == b""
    h.clock.advance(0.2)
    assert h.received() == (
        b"-ERR [AUTH] the password contains a control character (CR, LF or NUL)\r\n"
        b"-ERR NOOP is not valid in the AUTHORIZATION state\r\n"
    )


#: Arbitrary octets, commands spliced in with line ends and NULs, clean
#: values around the USER/PASS bound, and long ones (tokens as passwords)
#: that only AUTH PLAIN can carry.
values = st.one_of(
    st.binary(max_size=MAX_VALUE + 8),
    st.integers(900, 2000).map(lambda size: b"t" * size),
    st.lists(
        st.sampled_from(
            [b"\r\n", b"\r", b"\n", b"\0", b" ", b"DELE 1", b"QUIT", b"USER a", b"PASS b", b"alice"]
        ),
        max_size=12,
    ).map(b"".join),
    st.integers(MAX_VALUE - 3, MAX_VALUE + 3).map(lambda size: b"v" * size),
)
#: What a client can put in one command line: CRLF would end it.
oneLine = values.filter(lambda value: b"\r\n" not in value)
kinds = st.sampled_from(sorted(CAPAS))
examples = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@examples
@given(kind=kinds, authzid=st.one_of(st.just(b""), values), user=values, password=values)
def test_authPlainSendsOnlyItsTranslation(
    kind: str, authzid: bytes, user: bytes, password: bytes
) -> None:
    """
    For any authzid, user name and password, AUTH PLAIN with an initial
    response and AUTH PLAIN after the challenge each make the upstream
    receive exactly the expected login lines (or nothing, if a value is
    refused), well formed and bounded.
    """
    decoded = authzid + b"\0" + user + b"\0" + password
    fields = decoded.split(b"\0")
    wellFormed = len(fields) == 3 and fields[1] != b""
    for initial in (True, False):
        h = harness()
        if initial:
            line = b"AUTH PLAIN " + b64(decoded) + b"\r\n"
            h.send(line)
            fits = len(line) <= 255
        else:
            # After the challenge, as a client sends it (a response sent
            # with the command is framed with the command's bound); the
            # longest, 3 * 2,000 octets, is 8,004 base64 characters.
            h.send(b"AUTH PLAIN\r\n")
            h.send(b64(decoded) + b"\r\n")
            fits = True
        lines = serve(h, kind)
        assertWellFormed(lines)
        assert lines == (translated(kind, *fields) if wellFormed and fits else [])
        if lines[1:]:
            assert h.received().endswith(b"-ERR [AUTH] no\r\n")
        else:
            assert h.received().split(b"\r\n")[-2].startswith(b"-ERR")


@examples
@given(kind=kinds, user=values, password=values)
def test_authLoginSendsOnlyItsTranslation(kind: str, user: bytes, password: bytes) -> None:
    """
    For any user name and password, AUTH LOGIN makes the upstream receive
    exactly the expected login lines, or nothing if a value is refused.
    """
    h = harness()
    h.send(b"AUTH LOGIN\r\n")
    h.send(b64(user) + b"\r\n")
    if user:
        h.send(b64(password) + b"\r\n")
    lines = serve(h, kind)
    assertWellFormed(lines)
    assert lines == (translated(kind, b"", user, password) if user else [])


@examples
@given(kind=kinds, user=oneLine, password=oneLine)
def test_userPassSendsOneCommandEach(kind: str, user: bytes, password: bytes) -> None:
    """
    For any USER name and password (each one client line: CRLF ends a
    line), USER and PASS each reach the upstream as one command carrying
    the value unchanged (PASS as AUTH PLAIN to an upstream that offers
    only SASL), or not at all.
    """
    h = harness()
    userLine = b"USER " + user + b"\r\n"
    h.send(userLine)
    expected: list[bytes] = []
    userSent = len(userLine) <= 255 and clean(user) and user[:1] not in (b"", b" ")
    if userSent:
        expected.append(b"USER " + user)
        if kind == "saslonly":
            expected.append(b"CAPA")
    lines = serve(h, kind)
    assert lines == expected
    passLine = b"PASS " + password + b"\r\n"
    h.send(passLine)
    lines += serve(h, kind)
    if userSent and len(passLine) <= 255 and clean(password):
        if kind == "saslonly":
            expected += plainLines(b"", user, password)
        else:
            expected.append(b"PASS " + password)
    # USER, and CAPA if the upstream refused it; PASS, or AUTH PLAIN and
    # its response if the upstream takes only SASL.
    assertWellFormed(lines, most=4)
    assert lines == expected


@examples
@given(name=oneLine)
def test_apopSendsOneCommand(name: bytes) -> None:
    """
    For any APOP name, the upstream receives one APOP line with the name
    unchanged, or nothing.
    """
    line = b"APOP " + name + b" " + DIGEST + b"\r\n"
    h = harness()
    h.send(line)
    lines = serve(h, "userpass")
    assertWellFormed(lines)
    sent = len(line) <= 255 and clean(name) and name != b""
    assert lines == ([b"APOP " + name + b" " + DIGEST] if sent else [])


def test_controlCharactersInNamesEscapedInLogs() -> None:
    """
    An ESC sequence in a USER name and a CR in an AUTH identity show in
    the log as escapes: no log line carries a raw control character.
    """
    h = Harness(config=Config(upstream="tcp:upstream:110"))
    h.received()
    with capturedLogs() as events:
        h.send(b"USER \x1b[2J\x1b]0;owned\x07mallory\r\n")
        h.upstream.reply(b"+OK\r\n")
        h.send(b"PASS x\r\n")
        h.upstream.reply(b"-ERR [AUTH] no\r\n")
        h.send(b"AUTH PLAIN " + b64(b"\0bob\rroot logged in\0p\nw") + b"\r\n")
        h.send(b"QUIT\r\n")
        h.settle()
    text = "\n".join(formatEvent(event) for event in events)
    assert "login failed for \\x1b[2J\\x1b]0;owned\\x07mallory" in text
    assert (
        "login values refused for bob\\x0droot logged in: "
        "the user name contains a control character" in text
    )
    assert not any(
        character in formatEvent(event) for event in events for character in "\x1b\r\x07\0"
    )
