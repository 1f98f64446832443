"""
Tests for popproxy._capabilityanswer: the CAPA answer a client gets, from
which upstream it is asked (or the cache, or nobody), over fakes of the
slot's connect and the link's CAPA request that answer at once; a real
CapabilityCache.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred, fail, succeed

from popproxy._capabilities import CapabilityCache, UpstreamCapabilities
from popproxy._capabilityanswer import IMPLEMENTATION, CapabilityAnswer
from popproxy._config import Config
from popproxy._tls import UpstreamTarget

SHARED = Config(upstream="tcp:shared:110").target("tcp:shared:110")
OTHER = Config(upstream="tcp:other:110").target("tcp:other:110")
UPSTREAM = UpstreamCapabilities.fromLines((b"UIDL", b"LOGIN-DELAY 900", b"SASL PLAIN"))


class FakeUpstreams:
    """
    The slot and link as CapabilityAnswer sees them: notes each connect
    and CAPA request; addresses in C{unreachable} fail to connect.
    """

    def __init__(self) -> None:
        self.connected: list[UpstreamTarget] = []
        self.usable: set[UpstreamTarget] = set()
        self.unreachable: set[UpstreamTarget] = set()
        self.asked = 0

    def connect(self, address: UpstreamTarget) -> Deferred[object]:
        self.connected.append(address)
        if address in self.unreachable:
            return fail(ConnectionRefusedError("refused"))
        return succeed(object())

    def isUsable(self, address: UpstreamTarget) -> bool:
        return address in self.usable

    def ask(self) -> Deferred[UpstreamCapabilities]:
        self.asked += 1
        return succeed(UPSTREAM)


def capaFor(
    upstreams: FakeUpstreams,
    cache: CapabilityCache,
    sharedUpstream: UpstreamTarget | None = None,
    cacheFirst: bool = False,
) -> CapabilityAnswer:
    return CapabilityAnswer(
        connect=upstreams.connect,
        isUsable=upstreams.isUsable,
        ask=upstreams.ask,
        cache=cache,
        sharedUpstream=sharedUpstream,
        cacheFirst=cacheFirst,
    )


def answerOf(
    capa: CapabilityAnswer,
    current: UpstreamTarget | None,
    beforeLogin: bool = True,
    loginsAllowed: bool = True,
    offerSTLS: bool = False,
) -> bytes:
    answers: list[bytes] = []
    answering = capa.answer(
        current, beforeLogin=beforeLogin, loginsAllowed=loginsAllowed, offerSTLS=offerSTLS
    )
    Deferred.fromCoroutine(answering).addCallback(answers.append)
    assert len(answers) == 1
    return answers[0]


def listing(*lines: bytes) -> bytes:
    tail = (b"PIPELINING", b"RESP-CODES", b"AUTH-RESP-CODE", b"IMPLEMENTATION " + IMPLEMENTATION)
    body = b"".join(line + b"\r\n" for line in lines + tail)
    return b"+OK capability list follows\r\n" + body + b".\r\n"


def test_noUpstreamYetMeansTheProxysOwnList() -> None:
    """
    Before login with no upstream known, CAPA announces TOP and UIDL and
    the proxy's logins without asking anybody.
    """
    upstreams = FakeUpstreams()
    answer = answerOf(capaFor(upstreams, CapabilityCache()), None)
    assert answer == listing(b"TOP", b"UIDL", b"USER", b"SASL PLAIN LOGIN")
    assert upstreams.connected == [] and upstreams.asked == 0


def test_beforeLoginTheSharedUpstreamSpeaksAndIsCached() -> None:
    """
    Before login CAPA asks the one upstream every login goes to, not the
    one the session last used; its policy lines are relayed, and its
    answer is remembered for that address.
    """
    upstreams = FakeUpstreams()
    cache = CapabilityCache()
    answer = answerOf(capaFor(upstreams, cache, sharedUpstream=SHARED), OTHER)
    assert answer == listing(b"UIDL", b"LOGIN-DELAY 900", b"USER", b"SASL PLAIN LOGIN")
    assert upstreams.connected == [SHARED] and upstreams.asked == 1
    assert cache.lookUp(SHARED) == UPSTREAM and cache.lookUp(OTHER) is None


def test_afterLoginTheSessionsUpstreamSpeaksUncached() -> None:
    """
    After login the session's own upstream answers, and nothing is cached
    (its answer may differ after login, RFC 2449).
    """
    upstreams = FakeUpstreams()
    cache = CapabilityCache()
    capa = capaFor(upstreams, cache, sharedUpstream=SHARED)
    answerOf(capa, OTHER, beforeLogin=False)
    assert upstreams.connected == [OTHER] and cache.lookUp(OTHER) is None


def test_cacheFirstAnswersWithoutConnecting() -> None:
    """
    Under [limits], before login, with no usable connection, a cached
    answer is used and nobody is connected; without one, or with a usable
    connection, the upstream is asked.
    """
    upstreams = FakeUpstreams()
    cache = CapabilityCache()
    capa = capaFor(upstreams, cache, sharedUpstream=SHARED, cacheFirst=True)
    answerOf(capa, None)
    assert upstreams.connected == [SHARED]
    cache.remember(SHARED, UpstreamCapabilities())
    assert answerOf(capa, None) == listing(b"USER", b"SASL PLAIN LOGIN")
    assert upstreams.connected == [SHARED]
    upstreams.usable.add(SHARED)
    answerOf(capa, None)
    assert upstreams.connected == [SHARED, SHARED] and upstreams.asked == 2


def test_unreachableUpstreamStillGetsAnAnswer() -> None:
    """
    An upstream that cannot be reached leaves the proxy's own list; it is
    not asked and nothing is cached.
    """
    upstreams = FakeUpstreams()
    upstreams.unreachable.add(SHARED)
    cache = CapabilityCache()
    answer = answerOf(capaFor(upstreams, cache, sharedUpstream=SHARED), None)
    assert answer == listing(b"TOP", b"UIDL", b"USER", b"SASL PLAIN LOGIN")
    assert upstreams.asked == 0 and cache.lookUp(SHARED) is None


def test_loginsAndSTLSAnnouncedAsTold() -> None:
    """
    Logins that wait for TLS are not announced; STLS is when offered.
    """
    capa = capaFor(FakeUpstreams(), CapabilityCache())
    answer = answerOf(capa, None, loginsAllowed=False, offerSTLS=True)
    assert answer == listing(b"TOP", b"UIDL", b"STLS")
