"""
Which CPUs the benchmark's processes may run on (C{--pin}).

C{--pin auto} splits the CPUs this process may use in two halves, C{--pin
PROXY:REST} names them (taskset's list syntax on each side: C{0:1},
C{0,1:2,3}, C{0-1:2-3}).  The proxy under test (popproxy and its workers,
nginx, the forwarder, every process of a target) runs on the first set;
Dovecot, the load generator and the benchmark itself on the second, so the
proxy's cores are its own and scaling with C{[proxy] workers} shows where
cores exist.  L{pinProcess} sets the affinity of every thread of a process,
as C{taskset -a -p} does (the same C{sched_setaffinity} call); children
started later inherit it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Pinning:
    """
    The CPUs of the proxy under test, and those of everything else.
    """

    proxy: frozenset[int]
    rest: frozenset[int]

    def describe(self) -> dict[str, list[int]]:
        return {"proxy": sorted(self.proxy), "rest": sorted(self.rest)}


def parseCpuList(text: str) -> frozenset[int]:
    """
    C{"0,2-3"} -> C{{0, 2, 3}}.

    @raise ValueError: the text is not a CPU list.
    """
    cpus: set[int] = set()
    for item in text.split(","):
        first, dash, last = item.partition("-")
        if not first.isdigit() or (dash and not last.isdigit()):
            raise ValueError(f"{text!r} is not a CPU list like 0,2-3")
        cpus.update(range(int(first), int(last if dash else first) + 1))
    if not cpus:
        raise ValueError(f"{text!r} names no CPU")
    return frozenset(cpus)


def parsePinning(text: str, available: frozenset[int] | None = None) -> Pinning:
    """
    The pinning C{--pin} asks for: C{"auto"} or C{"PROXY:REST"}.

    @param available: the CPUs this process may use (default: its affinity).
    @raise ValueError: malformed, overlapping, or naming an unusable CPU.
    """
    usable = available if available is not None else frozenset(os.sched_getaffinity(0))
    if text == "auto":
        if len(usable) < 2:
            raise ValueError("auto needs at least two CPUs")
        ordered = sorted(usable)
        half = len(ordered) // 2
        return Pinning(frozenset(ordered[:half]), frozenset(ordered[half:]))
    proxyText, colon, restText = text.partition(":")
    if not colon:
        raise ValueError("expected auto or PROXYCPUS:RESTCPUS, e.g. 0:1 or 0-1:2-3")
    pinning = Pinning(parseCpuList(proxyText), parseCpuList(restText))
    if pinning.proxy & pinning.rest:
        raise ValueError("the two sets share CPUs")
    if not (pinning.proxy | pinning.rest) <= usable:
        raise ValueError(f"this process may only use CPUs {sorted(usable)}")
    return pinning


def pinProcess(pid: int, cpus: frozenset[int]) -> None:
    """
    Let every thread of C{pid} run only on C{cpus} (gone threads and a
    gone process are skipped).
    """
    try:
        threads = [int(entry.name) for entry in Path(f"/proc/{pid}/task").iterdir()]
    except OSError:
        threads = [pid]
    for thread in threads:
        try:
            os.sched_setaffinity(thread, cpus)
        except (ProcessLookupError, FileNotFoundError):
            pass


def affinity(pid: int) -> list[int]:
    """
    The CPUs C{pid} may run on now (empty if it is gone), for the report.
    """
    try:
        return sorted(os.sched_getaffinity(pid))
    except OSError:
        return []
