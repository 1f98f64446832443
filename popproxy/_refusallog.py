"""
The log of connections refused at the door, kept to a few lines however
fast a client retries: L{RefusalLog} logs a client network's first refusal
(for a reason) at once, in the fixed format administrators know, then
counts the next ones and logs one line per interval with how many there
were:

    connection from 192.0.2.7:40112 refused: rate
    refused 8734 more connections from 192.0.2.7/32 in the last 60s: rate

A network that is quiet for a whole interval is forgotten, so its next
refusal is logged at once again.  At most C{maxNetworks} networks are
counted one by one; refusals from further networks within an interval are
counted together, as C{other networks}.  Refusals counted in the last
interval before the process stops are not logged (the metrics have them).
Why: each refused connection as
a line of its own let one address write 16.5 MB of log in 90 s (about
1,500 refusals a second).  The metrics still count every refusal.

Given the clock, never a session; keyed by text (the network, the reason).
"""

from __future__ import annotations

from dataclasses import dataclass

from twisted.internet.interfaces import IDelayedCall, IReactorTime

from popproxy._printable import PrintableLogger

__all__ = ["OTHER_NETWORKS", "RefusalLog"]

#: How refusals beyond C{maxNetworks} networks are named in the log.
OTHER_NETWORKS = "other networks"

#: The first refusal's line (unchanged from when every refusal had one).
FIRST_FORMAT = "connection from {client} refused: {reason}"
#: The line of each interval's further refusals.
MORE_FORMAT = "refused {count} more connections from {network} in the last {seconds}s: {reason}"


@dataclass(slots=True)
class _Counting:
    """
    One network's refusals for one reason since its last line.
    """

    count: int
    seconds: float
    call: IDelayedCall | None = None


class RefusalLog:
    """
    Logs refused connections once per network, reason and interval.
    """

    log = PrintableLogger()

    def __init__(
        self, clock: IReactorTime, interval: float = 60.0, maxNetworks: int = 10_000
    ) -> None:
        """
        @param interval: seconds between a network's lines.
        @param maxNetworks: networks counted one by one at once.
        """
        self._clock = clock
        self._interval = interval
        self._maxNetworks = maxNetworks
        self._counting: dict[tuple[str, str], _Counting] = {}

    def reconfigure(self, interval: float) -> None:
        """
        Apply a reloaded interval from each network's next line on; the
        networks being counted stay counted.
        """
        self._interval = interval

    def refused(self, client: str, network: str, reason: str) -> None:
        """
        A connection from C{client} (its address and port, as the log
        shows it), of client network C{network}, was refused for C{reason}.
        """
        key = (network, reason)
        counting = self._counting.get(key)
        if counting is not None:
            counting.count += 1
            return
        if len(self._counting) >= self._maxNetworks:
            self._countOther(reason)
            return
        self.log.info(FIRST_FORMAT, client=client, reason=reason)
        self._start(key, 0)

    def _countOther(self, reason: str) -> None:
        key = (OTHER_NETWORKS, reason)
        counting = self._counting.get(key)
        if counting is None:
            self._start(key, 1)
        else:
            counting.count += 1

    def _start(self, key: tuple[str, str], count: int) -> None:
        counting = self._counting[key] = _Counting(count, self._interval)
        counting.call = self._clock.callLater(self._interval, self._intervalOver, key)

    def _intervalOver(self, key: tuple[str, str]) -> None:
        counting = self._counting.pop(key)
        if counting.count == 0:
            return
        network, reason = key
        self.log.info(
            MORE_FORMAT,
            count=counting.count,
            network=network,
            seconds=round(counting.seconds),
            reason=reason,
        )
        self._start(key, 0)

    @property
    def networksCounted(self) -> int:
        """
        How many network and reason pairs are being counted now.
        """
        return len(self._counting)
