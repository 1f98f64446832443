"""
The user the proxy will run as, and what that user must be able to do,
made ready and checked before twistd drops privileges.

twistd builds the service (C{makeService}) and binds the listeners as the
user who started it, often root, and only then switches to C{-u}/C{-g}.
Anything created before the switch belongs to root, and a wrong owner on an
existing directory would only show at the first stripped attachment.  So,
still privileged, the proxy creates the directories it will write (the
quarantine and the spool directory) with the run-as user as owner, then
checks, in a forked child that has become that user, everything the proxy
will need as that user: writing those directories (the child creates the
quarantine's C{blobs/} and C{records/} itself), reading the TLS files
read after the switch and, with C{[proxy] workers > 1}, starting the
Python interpreter and reading the configuration file.  The child sees
what the daemon will see (owners, modes, ACLs, groups, read-only mounts);
the first thing it cannot do stops start-up with one line (a certificate
it could not read again after a renewal only earns a warning).
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from twisted.logger import Logger

from popproxy._config import Config, ConfigError
from popproxy._routing import Router

log = Logger(namespace="popproxy")


@dataclass(frozen=True)
class RunAs:
    """
    An identity the proxy's processes run as.

    @ivar uid: the user id.
    @ivar gid: the primary group id.
    @ivar groups: the supplementary group ids.
    """

    uid: int
    gid: int
    groups: tuple[int, ...]

    @classmethod
    def current(cls) -> RunAs:
        """
        This process's own (effective) identity.
        """
        return cls(os.geteuid(), os.getegid(), tuple(os.getgroups()))

    @classmethod
    def fromTwistd(cls, uid: int | None, gid: int | None) -> RunAs:
        """
        The identity twistd switches to for C{-u uid -g gid} (either may be
        missing), by twistd's own rules (C{switchUID}): C{-u} alone takes
        the user's primary group, and another user gets that user's
        supplementary groups (C{initgroups}); otherwise the groups stay
        this process's.
        """
        current = cls.current()
        if uid is None or uid == current.uid:
            return cls(current.uid, current.gid if gid is None else gid, current.groups)
        entry = pwd.getpwuid(uid)
        primary = entry.pw_gid if gid is None else gid
        return cls(uid, primary, tuple(os.getgrouplist(entry.pw_name, primary)))

    def ownerName(self) -> str:
        """
        C{user:group}, as C{chown} takes it.
        """
        try:
            user = pwd.getpwuid(self.uid).pw_name
        except KeyError:
            user = str(self.uid)
        try:
            group = grp.getgrgid(self.gid).gr_name
        except KeyError:
            group = str(self.gid)
        return f"{user}:{group}"

    def describe(self) -> str:
        """
        How messages name this identity: C{user nobody:nogroup (uid 65534, gid 65534)}.
        """
        return f"user {self.ownerName()} (uid {self.uid}, gid {self.gid})"

    def become(self) -> None:
        """
        Switch this process to this identity for good (in the probe child).

        @raise OSError: this process may not (it is not root).
        """
        if self == RunAs.current():
            return
        os.setgroups(list(self.groups))
        os.setgid(self.gid)
        os.setuid(self.uid)


#: What a requirement asks of the run-as user, as the verb of the message.
WRITE, READ, RUN = "write to", "read", "run"


@dataclass(frozen=True)
class Requirement:
    """
    Something the proxy will do as the run-as user.

    @ivar path: the file or directory.
    @ivar need: L{WRITE} (a directory: create and remove files in it),
        L{READ} (a file) or L{RUN} (a program).
    @ivar setting: what in the configuration asks for it, for messages
        (C{[chain] quarantine}).
    @ivar remedy: what the administrator can do when it fails.
    @ivar create: how a missing directory is created: L{OWNED} (by this
        process, then given to the run-as user: its parent may be root's),
        L{AS_USER} (by the run-as user, when checked: only inside a
        directory that user may write), or not at all (C{""}).
    @ivar fatal: whether start-up stops when it cannot be done (else a
        warning is logged).
    """

    path: Path
    need: str
    setting: str
    remedy: str
    create: str = ""
    fatal: bool = True


#: How a missing directory is created (L{Requirement.create}).
OWNED, AS_USER = "owned", "as user"


#: The quarantine's own directories (see L{popproxy._quarantine}).
SUBDIRECTORIES = ("blobs", "records")


def spoolDirectory(config: Config) -> Path:
    """
    Where big messages are spooled: C{[chain] spool_directory}, or the
    system's temporary directory (C{TMPDIR}, else C{/tmp}).
    """
    if config.chain.spoolDirectory is not None:
        return config.chain.spoolDirectory
    return Path(tempfile.gettempdir())


def quarantineRequirements(config: Config, runAs: RunAs) -> list[Requirement]:
    """
    The quarantine and its C{blobs/} and C{records/} (created if missing)
    and each existing C{blobs/xx/}, all written by the proxy.
    """
    if not isinstance(config.chain.quarantine, Path):
        return []  # none, or a database
    quarantine = config.chain.quarantine.absolute()
    setting = "[chain] quarantine"
    remedy = (
        f"give it to that user (chown -R {runAs.ownerName()} {quarantine})"
        " or choose another directory"
    )
    required = [Requirement(quarantine, WRITE, setting, remedy, create=OWNED)]
    required += [
        Requirement(quarantine / sub, WRITE, setting, remedy, create=AS_USER)
        for sub in SUBDIRECTORIES
    ]
    blobs = quarantine / "blobs"
    if blobs.is_dir():
        existing = sorted(entry for entry in blobs.iterdir() if entry.is_dir())
        required += [Requirement(path, WRITE, setting, remedy) for path in existing]
    return required


def spoolRequirement(config: Config, runAs: RunAs) -> Requirement:
    """
    The spool directory: C{[chain] spool_directory} (created if missing),
    or the system's temporary directory, which is not the proxy's to
    change.
    """
    setting = "[chain] spool_directory"
    if config.chain.spoolDirectory is None:
        remedy = f"set {setting} to a directory that user can write"
        unset = f"{setting} (not set: the system's temporary directory)"
        return Requirement(spoolDirectory(config).absolute(), WRITE, unset, remedy)
    path = config.chain.spoolDirectory.absolute()
    remedy = f"give it to that user (chown {runAs.ownerName()} {path}) or choose another directory"
    return Requirement(path, WRITE, setting, remedy, create=OWNED)


def workerRequirements(config: Config, runAs: RunAs) -> list[Requirement]:
    """
    With C{[proxy] workers > 1}, what each worker process does as the
    run-as user when it starts: run the Python interpreter and read the
    configuration file.
    """
    if config.workers <= 1:
        return []
    setting = f"[proxy] workers = {config.workers}"
    fallback = "or set [proxy] workers = 1"
    required = [
        Requirement(
            Path(sys.executable),
            RUN,
            setting,
            f"the workers run it; install popproxy where that user can run it, {fallback}",
        )
    ]
    if config.source != "<command line>":
        reading = f"every worker reads it; let {runAs.ownerName()} read it, {fallback}"
        required.append(Requirement(Path(config.source).absolute(), READ, setting, reading))
    return required


def tlsRequirements(config: Config, runAs: RunAs) -> list[Requirement]:
    """
    The TLS files read as the run-as user: every C{ca_file} (read for each
    upstream connection); the proxy's certificate and key, read by every
    worker at start and by every process again when they change on disk
    (a renewal), which without workers only earns a warning.
    """
    owner = runAs.ownerName()
    targets = Router(config.routing).targets()
    caFiles = sorted({t.tls.caFile.absolute() for t in targets if t.tls.caFile is not None})
    remedy = f"it is read for every upstream connection; let {owner} read it"
    required = [Requirement(path, READ, "ca_file", remedy) for path in caFiles]
    ours = [config.tls.certificate, config.tls.key]
    workers = config.workers > 1
    remedy = (
        f"every worker reads it; let {owner} read it, or set [proxy] workers = 1"
        if workers
        else f"a renewed certificate is read as that user; let {owner} read it, "
        "or restart popproxy after each renewal"
    )
    required += [
        Requirement(path.absolute(), READ, "[tls]", remedy, fatal=workers)
        for path in ours
        if path is not None
    ]
    return required


def requirements(config: Config, runAs: RunAs) -> list[Requirement]:
    """
    Everything the proxy of C{config} will do as C{runAs}, directories
    before what they hold.
    """
    return [
        *quarantineRequirements(config, runAs),
        spoolRequirement(config, runAs),
        *workerRequirements(config, runAs),
        *tlsRequirements(config, runAs),
    ]


def createOwned(path: Path, owner: RunAs) -> None:
    """
    Create C{path} and its missing parents, each given to C{owner}
    (C{path} itself with mode 0700); an existing directory is left as it
    is.

    @raise OSError: it cannot be created.
    """
    missing = []
    for directory in (path, *path.parents):
        if directory.exists() or directory.is_symlink():
            break
        missing.append(directory)
    for directory in reversed(missing):
        directory.mkdir(mode=0o700 if directory == path else 0o755)
        os.chown(directory, owner.uid, owner.gid, follow_symlinks=False)


def attempt(requirement: Requirement) -> None:
    """
    Do what C{requirement} asks, as this process is, leaving nothing
    behind but a directory to be created as this user: list the directory
    and create and remove a file in it, open the file, or check that the
    program may be executed.

    @raise OSError: it cannot be done.
    """
    path = requirement.path
    if requirement.create == AS_USER and not path.exists():
        path.mkdir(mode=0o700)
    if requirement.need == WRITE:
        os.close(os.open(path, os.O_RDONLY | os.O_DIRECTORY))
        descriptor, name = tempfile.mkstemp(dir=path, prefix=".popproxy-probe-")
        os.close(descriptor)
        os.unlink(name)
    elif requirement.need == READ:
        os.close(os.open(path, os.O_RDONLY))
    elif not os.access(path, os.X_OK):
        raise PermissionError(13, os.strerror(13), str(path))


def failures(required: Sequence[Requirement]) -> dict[int, str]:
    """
    Which of C{required} this process cannot do (by position), and why.
    """
    failed = {}
    for number, requirement in enumerate(required):
        try:
            attempt(requirement)
        except OSError as e:
            failed[number] = e.strerror or str(e)
    return failed


def _report(required: Sequence[Requirement], runAs: RunAs) -> bytes:
    """
    What the probe child sends back: the failures as C{runAs}, or why it
    could not become C{runAs}.
    """
    try:
        runAs.become()
    except OSError as e:
        return json.dumps({"error": str(e)}).encode("utf-8")
    return json.dumps({"failed": failures(required)}).encode("utf-8")


def failuresAs(required: Sequence[Requirement], runAs: RunAs) -> dict[int, str]:
    """
    L{failures} as C{runAs}: tried in a forked child that becomes
    C{runAs} (nothing here has started a thread yet), its findings sent
    back through a pipe.

    @raise OSError: the child could not become C{runAs}.
    """
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: whatever happens, it never returns
        try:
            os.close(reader)
            os.write(writer, _report(required, runAs))
        finally:
            os._exit(0)
    os.close(writer)
    with os.fdopen(reader, "rb") as answers:
        report = json.loads(answers.read() or b'{"error": "the probe died"}')
    os.waitpid(pid, 0)
    if "error" in report:
        raise OSError(report["error"])
    return {int(number): reason for number, reason in report["failed"].items()}


def problemLine(source: str, requirement: Requirement, reason: str, runAs: RunAs) -> str:
    """
    The one line that stops start-up when C{runAs} cannot do
    C{requirement}: what, where, why, and what to do about it.
    """
    return (
        f"{source}: {requirement.setting}: {requirement.path}: {runAs.describe()} "
        f"cannot {requirement.need} it ({reason}); {requirement.remedy}"
    )


def prepareFor(config: Config, runAs: RunAs) -> Config:
    """
    Create the directories C{config}'s proxy writes to, owned by C{runAs}
    (those inside another created by C{runAs} itself, so nothing is created
    in a directory C{runAs} may not write), and check that C{runAs} can do
    all it must; return C{config} with its
    spool directory fixed to the one checked.

    @raise ConfigError: something cannot be created or done, in one line.
    """
    required = requirements(config, runAs)
    for requirement in required:
        if requirement.create != OWNED:
            continue
        try:
            createOwned(requirement.path, runAs)
        except OSError as e:
            raise ConfigError(
                f"{config.source}: {requirement.setting}: {requirement.path}: "
                f"cannot create it ({e.strerror})"
            ) from None
    try:
        failed = failuresAs(required, runAs)
    except OSError as e:
        raise ConfigError(f"{config.source}: cannot become {runAs.describe()}: {e}") from None
    for number, requirement in enumerate(required):
        if number in failed and requirement.fatal:
            raise ConfigError(problemLine(config.source, requirement, failed[number], runAs))
        if number in failed:
            log.warn(
                "{problem}", problem=problemLine(config.source, requirement, failed[number], runAs)
            )
    chain = replace(config.chain, spoolDirectory=spoolDirectory(config))
    return replace(config, chain=chain)
