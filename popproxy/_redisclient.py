"""
A small Redis client on Twisted, for the counter store: one connection,
commands pipelined on it, a deadline per command, and a reconnection that
never makes a caller wait for a Redis known to be down.

Every failure (refused or lost connection, timeout, error reply, garbled
stream) reaches the caller as L{CounterStoreUnavailable}, so the store's
callers have one thing to handle.  After a failed connection attempt the
client does not try again before a backoff delay (doubling up to a
maximum); until then commands fail at once.  Nothing runs in the
background: the next command after the delay makes the next attempt.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import (
    CancelledError,
    Deferred,
    FirstError,
    TimeoutError,
    fail,
    gatherResults,
    succeed,
)
from twisted.internet.endpoints import connectProtocol
from twisted.internet.interfaces import IReactorTime, IStreamClientEndpoint
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure

from popproxy._counterstore import CounterStoreUnavailable
from popproxy._resp import RespError, RespParser, RespProtocolError, RespValue, encodeCommand

__all__ = ["Argument", "Backoff", "RedisClient", "RedisProtocol"]

Argument = bytes | str | int | float


class RedisProtocol(Protocol):
    """
    One connection to Redis: each command's Deferred fires with its reply,
    in the order sent (RESP answers in order, so commands pipeline).  An
    error reply fails that command's Deferred with the L{RespError} as a
    L{CounterStoreUnavailable}; a lost connection fails every pending one.
    """

    def __init__(self) -> None:
        self._parser = RespParser()
        self._pending: deque[Deferred[RespValue]] = deque()
        self.lost: Deferred[None] = Deferred()
        self.connected = False

    def connectionMade(self) -> None:
        self.connected = True
        # Commands are small and each one waits for its answer: Nagle's
        # algorithm would hold one back until the previous one is acknowledged.
        setNoDelay = getattr(self.transport, "setTcpNoDelay", None)
        if setNoDelay is not None:
            setNoDelay(True)

    def execute(self, *arguments: Argument) -> Deferred[RespValue]:
        """
        Send a command and return a Deferred for its reply; cancelling it
        drops the connection (its reply can no longer be told apart).
        """
        if not self.connected or self.transport is None:
            return fail(CounterStoreUnavailable("the connection to Redis is closed"))
        answer: Deferred[RespValue] = Deferred(self._cancelled)
        self._pending.append(answer)
        self.transport.write(encodeCommand(*arguments))
        return answer

    def _cancelled(self, answer: Deferred[RespValue]) -> None:
        self.abort()

    def abort(self) -> None:
        """
        Drop the connection at once; pending commands fail.
        """
        if self.transport is not None and self.connected:
            # Not connected from now on: TCP reports the loss a turn later, and a command
            # written meanwhile would be lost without an answer.
            self.connected = False
            self.transport.abortConnection()  # type: ignore[attr-defined]

    def dataReceived(self, data: bytes) -> None:
        try:
            replies = self._parser.feed(data)
        except RespProtocolError:
            self.abort()
            return
        for reply in replies:
            if not self._pending:
                self.abort()
                return
            answer = self._pending.popleft()
            if isinstance(reply, RespError):
                answer.errback(CounterStoreUnavailable(f"Redis answered {reply.message}"))
            else:
                answer.callback(reply)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.connected = False
        pending, self._pending = self._pending, deque()
        for answer in pending:
            if not answer.called:
                answer.errback(
                    CounterStoreUnavailable(f"connection to Redis lost: {reason.getErrorMessage()}")
                )
        self.lost.callback(None)


@dataclass(frozen=True)
class Backoff:
    """
    How long to wait before connecting again after C{failures} failed
    attempts in a row: C{initial} doubled each time, at most C{maximum}.
    """

    initial: float = 0.5
    maximum: float = 10.0

    def delay(self, failures: int) -> float:
        return float(min(self.maximum, self.initial * 2 ** max(failures - 1, 0)))


def _asUnavailable(failure: Failure, timeout: float) -> Failure:
    if failure.check(CounterStoreUnavailable):
        return failure
    if failure.check(TimeoutError, CancelledError):
        return Failure(CounterStoreUnavailable(f"no answer from Redis within {timeout}s"))
    return Failure(CounterStoreUnavailable(f"Redis unreachable: {failure.getErrorMessage()}"))


class RedisClient:
    """
    Commands to one Redis server, over one connection made when needed.

    @param endpoint: where Redis listens.
    @param timeout: the most a command (including connecting) may take.
    @param handshake: commands sent first on each new connection (C{AUTH},
        C{SELECT}); if one fails, the connection counts as failed.
    """

    def __init__(
        self,
        reactor: IReactorTime,
        endpoint: IStreamClientEndpoint,
        *,
        timeout: float = 0.5,
        backoff: Backoff = Backoff(),
        handshake: tuple[tuple[Argument, ...], ...] = (),
    ) -> None:
        self._reactor = reactor
        self._endpoint = endpoint
        self._timeout = timeout
        self._backoff = backoff
        self._handshake = handshake
        self._protocol: RedisProtocol | None = None
        self._connecting = False
        self._waiters: list[Deferred[RedisProtocol]] = []
        self._failures = 0
        self._retryAt = 0.0
        self._lastError = ""

    def execute(self, *arguments: Argument) -> Deferred[RespValue]:
        """
        Run one command; fail with L{CounterStoreUnavailable} within the
        timeout if Redis does not answer, at once if it is known down.
        """
        answer: Deferred[Any] = self._connection()
        answer.addCallback(RedisProtocol.execute, *arguments)
        answer.addTimeout(self._timeout, self._reactor)
        answer.addErrback(_asUnavailable, self._timeout)
        return answer

    def _connection(self) -> Deferred[RedisProtocol]:
        if self._protocol is not None and self._protocol.connected:
            return succeed(self._protocol)
        wait = self._retryAt - self._reactor.seconds()
        if not self._connecting and wait > 0:
            return fail(CounterStoreUnavailable(f"{self._lastError}; next attempt in {wait:.1f}s"))
        waiter: Deferred[RedisProtocol] = Deferred(self._waiters.remove)
        self._waiters.append(waiter)
        if not self._connecting:
            # After the waiter is listed: an endpoint may fail at once.
            self._connect()
        return waiter

    def _connect(self) -> None:
        self._connecting = True
        attempt: Deferred[Any] = connectProtocol(self._endpoint, RedisProtocol())
        attempt.addCallback(self._greet)
        attempt.addTimeout(self._timeout, self._reactor)
        attempt.addCallbacks(self._connected, self._connectFailed)

    def _greet(self, protocol: RedisProtocol) -> Deferred[RedisProtocol]:
        replies = [protocol.execute(*command) for command in self._handshake]
        greeted: Deferred[Any] = gatherResults(replies, consumeErrors=True)
        greeted.addCallback(lambda _: protocol)
        greeted.addErrback(self._greetingFailed, protocol)
        return greeted

    def _greetingFailed(self, failure: Failure, protocol: RedisProtocol) -> Failure:
        protocol.abort()
        failure.trap(FirstError)
        subFailure: Failure = failure.value.subFailure
        return subFailure

    def _connected(self, protocol: RedisProtocol) -> None:
        self._connecting = False
        self._protocol = protocol
        self._failures = 0
        self._retryAt = 0.0
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.callback(protocol)

    def _connectFailed(self, failure: Failure) -> None:
        self._connecting = False
        self._failures += 1
        self._retryAt = self._reactor.seconds() + self._backoff.delay(self._failures)
        reason = _asUnavailable(failure, self._timeout)
        self._lastError = reason.getErrorMessage()
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.errback(reason)

    def close(self) -> Deferred[None]:
        """
        Drop the connection (if any); fires once it is closed.
        """
        protocol, self._protocol = self._protocol, None
        if protocol is None or not protocol.connected:
            return succeed(None)
        assert protocol.transport is not None
        protocol.transport.loseConnection()
        return protocol.lost
