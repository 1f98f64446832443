"""
What one benchmark run measures: the parsed command line, as a frozen value.

C{bench/run.py} builds L{Settings} from its options; every phase reads it
and nothing changes it.  L{Variant} says how one popproxy target is started,
L{Balanced} how a target of several instances behind HAProxy is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from bench._pinning import Pinning

#: Targets that are not popproxy: Dovecot alone, nginx's mail proxy, and a
#: bare Twisted byte forwarder (L{bench._forward}; measured only when named).
REFERENCES = ("direct", "nginx", "forward")

#: C{haproxyN}: N instances of the C{popproxy} target behind HAProxy;
#: C{haproxyN-VARIANT}: of the variant named VARIANT.
_BALANCED = re.compile(r"haproxy([1-9][0-9]?)(?:-(.+))?")

#: The mailboxes the throughput part can use.
THROUGHPUT_MAILBOXES = ("50k", "mixed")


@dataclass(frozen=True)
class Variant:
    """
    How one popproxy target is started: with this configuration file (else
    none: an empty filter chain) and with this directory on C{PYTHONPATH}
    (else the installed popproxy).
    """

    config: Path | None = None
    source: Path | None = None


def parseVariant(text: str, defaultSource: Path | None) -> tuple[str, Variant]:
    """
    C{"chain,config=chain.toml"} -> C{("chain", Variant(Path("chain.toml")))}.

    @raise ValueError: the text is malformed or names a missing file.
    """
    name, *settings = text.split(",")
    if not name or not name.replace("-", "").replace("_", "").isalnum():
        raise ValueError("it needs a name of letters, digits, - and _ first")
    if parseBalanced(name) is not None:
        raise ValueError(f"{name!r} names a balanced target (haproxyN[-VARIANT])")
    found: dict[str, Path] = {}
    for setting in settings:
        key, separator, value = setting.partition("=")
        if not separator or key not in ("config", "source") or key in found:
            raise ValueError(f"unknown or repeated setting {setting!r}")
        found[key] = Path(value)
    if "config" in found and not found["config"].is_file():
        raise ValueError(f"no such file: {found['config']}")
    if "source" in found and not found["source"].is_dir():
        raise ValueError(f"no such directory: {found['source']}")
    return name, Variant(found.get("config"), found.get("source", defaultSource))


@dataclass(frozen=True)
class Balanced:
    """
    A target of C{instances} popproxy processes, each started as the variant
    named C{variant} says but listening with C{haproxy:}, behind one HAProxy.
    """

    instances: int
    variant: str


def parseBalanced(name: str) -> Balanced | None:
    """
    C{"haproxy2"} -> C{Balanced(2, "popproxy")}, C{"haproxy2-chain"} ->
    C{Balanced(2, "chain")}; C{None} for any other target name.
    """
    found = _BALANCED.fullmatch(name)
    if found is None:
        return None
    return Balanced(int(found.group(1)), found.group(2) or "popproxy")


@dataclass(frozen=True)
class Settings:
    """
    Everything a run is told; see C{python3 bench/run.py --help}.
    """

    mode: str = "all"
    sessionCounts: tuple[int, ...] = (1, 10, 50)
    repeats: int = 5
    minMegabytes: float = 200.0
    messages: int = 200
    messageSize: int = 50_000
    mixedScale: float = 1.0
    mailboxes: tuple[str, ...] = THROUGHPUT_MAILBOXES
    targets: tuple[str, ...] = ("direct", "nginx", "popproxy")
    variants: dict[str, Variant] = field(default_factory=lambda: {"popproxy": Variant()})
    nginxWorkers: str = "1"
    loadProcesses: int = 4
    timeout: float = 120.0
    idleSessions: int = 1000
    bigMegabytes: float = 20.0
    slowRateMegabytes: float = 4.0
    profileDirectory: Path | None = None
    profileSessions: int = 10
    profileSeconds: float = 15.0
    #: Issue #16: the CPUs of the proxy and of the rest (C{--pin}), the
    #: memory-under-load mode's sessions and mailbox, and the target pairs
    #: whose throughput ratio is printed (C{--scaling}).
    pin: Pinning | None = None
    loadSessions: int = 50
    loadMailbox: str = "mixed"
    scaling: tuple[tuple[str, str], ...] = ()

    @property
    def popproxyTargets(self) -> tuple[str, ...]:
        """
        The targets that are popproxy (the subjects of the ratios).
        """
        return tuple(name for name in self.targets if name not in REFERENCES)

    def variantOf(self, name: str) -> str:
        """
        The variant a popproxy target runs: its own name, or for a balanced
        target (C{haproxy2-chain}) the variant of its instances (C{chain}).
        """
        balanced = parseBalanced(name)
        return name if balanced is None else balanced.variant

    def describe(self) -> dict[str, object]:
        """
        The settings as plain values, for the JSON file.
        """
        return {
            "mode": self.mode,
            "sessionCounts": list(self.sessionCounts),
            "repeats": self.repeats,
            "minMegabytes": self.minMegabytes,
            "messages": self.messages,
            "messageSize": self.messageSize,
            "mixedScale": self.mixedScale,
            "mailboxes": list(self.mailboxes),
            "targets": list(self.targets),
            "variants": {
                name: {"config": str(v.config or ""), "source": str(v.source or "")}
                for name, v in self.variants.items()
            },
            "nginxWorkers": self.nginxWorkers,
            "loadProcesses": self.loadProcesses,
            "timeout": self.timeout,
            "idleSessions": self.idleSessions,
            "bigMegabytes": self.bigMegabytes,
            "slowRateMegabytes": self.slowRateMegabytes,
            "profileDirectory": str(self.profileDirectory or ""),
            "profileSessions": self.profileSessions,
            "profileSeconds": self.profileSeconds,
            "pin": self.pin.describe() if self.pin is not None else None,
            "loadSessions": self.loadSessions,
            "loadMailbox": self.loadMailbox,
            "scaling": [list(pair) for pair in self.scaling],
        }
