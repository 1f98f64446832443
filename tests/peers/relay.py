"""A loopback TCP relay that notes what went through each of its connections.

It runs in a thread of the test process, forwards every connection to one target (a real
clamd, or a stand-in), and keeps per connection the octets the client sent, how many
NUL-terminated replies the target sent back, and whether each side closed.  Told to, it cuts
connections after forwarding a number of replies (a clamd that closes mid-session, or closes a
session it found idle), and then, if told so, closes every later connection at once (a clamd
gone).
"""

from __future__ import annotations

import selectors
import socket
import threading
import time
from dataclasses import dataclass, field

__all__ = ["Relay", "RelayedConnection"]


@dataclass
class RelayedConnection:
    """One client connection through the relay, as the relay saw it."""

    fromClient: bytearray = field(default_factory=bytearray)
    replies: int = 0
    clientClosed: bool = False
    cut: bool = False
    finished: bool = False


class Relay:
    """
    Listens on a free loopback port and relays each connection to C{target}.

    @param cutAfterReplies: close both sides of a connection once this many replies went
        back to the client (None: never).
    @param cuts: how many connections are cut so (None: every one).
    @param refuseAfterCut: once a connection was cut, close each new one as soon as it is
        accepted, without connecting it to the target.
    """

    def __init__(
        self,
        target: tuple[str, int],
        cutAfterReplies: int | None = None,
        cuts: int | None = None,
        refuseAfterCut: bool = False,
    ) -> None:
        self.target = target
        self.cutAfterReplies = cutAfterReplies
        self.cuts = cuts
        self.refuseAfterCut = refuseAfterCut
        self.connections: list[RelayedConnection] = []
        self._selector = selectors.DefaultSelector()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.setblocking(False)
        self._selector.register(self._listener, selectors.EVENT_READ)
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._serve, name="relay", daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        """The client endpoint string of the relay."""
        return f"tcp:127.0.0.1:{self._listener.getsockname()[1]}"

    def settled(self, timeout: float = 10.0) -> list[RelayedConnection]:
        """
        The connections, once every one has finished (both sides closed), or after C{timeout}.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if all(connection.finished for connection in self.connections):
                    break
            time.sleep(0.01)
        with self._lock:
            return list(self.connections)

    def stop(self) -> None:
        """Stop relaying and close every socket."""
        self._stopping.set()
        self._thread.join(timeout=5)
        for key in list(self._selector.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]
        self._selector.close()

    def _serve(self) -> None:
        while not self._stopping.is_set():
            for key, _ in self._selector.select(timeout=0.05):
                if key.fileobj is self._listener:
                    self._accept()
                else:
                    self._relay(*key.data)

    def _accept(self) -> None:
        client, _ = self._listener.accept()
        with self._lock:
            refused = self.refuseAfterCut and any(c.cut for c in self.connections)
            if refused:
                self.connections.append(RelayedConnection(cut=True, finished=True))
        if refused:
            client.close()
            return
        upstream = socket.create_connection(self.target, timeout=5)
        record = RelayedConnection()
        with self._lock:
            self.connections.append(record)
        pair = (client, upstream, record)
        self._selector.register(client, selectors.EVENT_READ, (client, pair, True))
        self._selector.register(upstream, selectors.EVENT_READ, (upstream, pair, False))

    def _relay(
        self,
        readable: socket.socket,
        pair: tuple[socket.socket, socket.socket, RelayedConnection],
        fromClient: bool,
    ) -> None:
        client, upstream, record = pair
        if record.finished:
            return
        try:
            data = readable.recv(65536)
        except OSError:
            data = b""
        with self._lock:
            if fromClient and data:
                record.fromClient += data
                _sendQuietly(upstream, data)
            elif fromClient:
                # What the target does after the client's close is not what is counted.
                record.clientClosed = True
                self._finish(pair)
            elif data:
                record.replies += data.count(b"\0")
                _sendQuietly(client, data)
                if self._shouldCut(record):
                    record.cut = True
                    self._finish(pair)
            else:
                self._finish(pair)

    def _shouldCut(self, record: RelayedConnection) -> bool:
        if self.cutAfterReplies is None or record.replies < self.cutAfterReplies:
            return False
        return self.cuts is None or sum(c.cut for c in self.connections) < self.cuts

    def _finish(self, pair: tuple[socket.socket, socket.socket, RelayedConnection]) -> None:
        client, upstream, record = pair
        for sock in (client, upstream):
            if sock.fileno() != -1:
                self._selector.unregister(sock)
                sock.close()
        record.finished = True


def _sendQuietly(sock: socket.socket, data: bytes) -> None:
    try:
        sock.sendall(data)
    except OSError:
        pass
