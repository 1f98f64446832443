"""
Tests for popproxy._runas: the identity twistd's -u/-g switch to, the
directories created for it, and the check, in a child that has become that
user, of everything the proxy will do as it.

They change owners and switch users, so they need root, as in CI; run
elsewhere they fail saying so rather than pass without checking anything.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import stat
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from twisted.logger import LogLevel, capturedLogs, formatEvent

from popproxy._config import ConfigError, parseConfig
from popproxy._runas import (
    READ,
    RUN,
    WRITE,
    Requirement,
    RunAs,
    createOwned,
    failuresAs,
    prepareFor,
    requirements,
)


@pytest.fixture
def nobody() -> RunAs:
    """
    What C{-u nobody -g nogroup} switch to; the test fails unless this
    process is root and both exist.
    """
    if os.geteuid() != 0:
        pytest.fail("these tests change owners and switch users: run them as root (CI does)")
    return RunAs.fromTwistd(pwd.getpwnam("nobody").pw_uid, grp.getgrnam("nogroup").gr_gid)


@pytest.fixture
def shared() -> Iterator[Path]:
    """
    A fresh directory nobody can reach (pytest's own shared is under a
    root-only directory), removed afterwards.
    """
    directory = Path(tempfile.mkdtemp(prefix="popproxy-runas-"))
    directory.chmod(0o755)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def owner(path: Path) -> tuple[int, int]:
    info = path.stat()
    return info.st_uid, info.st_gid


def test_twistdRulesForTheIdentity(nobody: RunAs) -> None:
    """
    Like twistd's switchUID: no -u/-g keeps this process's identity; -u
    alone takes the user's primary group and its supplementary groups; -g
    alone changes only the group.
    """
    entry = pwd.getpwnam("nobody")
    assert RunAs.fromTwistd(None, None) == RunAs.current()
    alone = RunAs.fromTwistd(entry.pw_uid, None)
    assert (alone.uid, alone.gid) == (entry.pw_uid, entry.pw_gid)
    assert set(alone.groups) == set(os.getgrouplist("nobody", entry.pw_gid))
    groupOnly = RunAs.fromTwistd(None, nobody.gid)
    assert (groupOnly.uid, groupOnly.gid) == (os.geteuid(), nobody.gid)
    assert nobody.describe() == f"user nobody:nogroup (uid {nobody.uid}, gid {nobody.gid})"


def test_createdDirectoriesBelongToTheUser(shared: Path, nobody: RunAs) -> None:
    """
    A missing directory and its missing parents are created owned by the
    run-as user, the directory itself 0700; existing ones keep their owner
    and mode.
    """
    target = shared / "state" / "popproxy" / "quarantine"
    createOwned(target, nobody)
    for created in (target, target.parent, target.parent.parent):
        assert owner(created) == (nobody.uid, nobody.gid), created
    assert stat.S_IMODE(target.stat().st_mode) == 0o700
    assert owner(shared) == (0, 0)

    existing = shared / "existing"
    existing.mkdir(mode=0o750)
    createOwned(existing, nobody)
    assert owner(existing) == (0, 0)
    assert stat.S_IMODE(existing.stat().st_mode) == 0o750


def test_probeSeesWhatTheUserSees(shared: Path, nobody: RunAs) -> None:
    """
    The check runs as the user: a root-only directory or file fails with
    the system's reason, the user's own directory passes, and nothing is
    left behind in it; a program the user may run passes.
    """
    rootOnly = shared / "root-only"
    rootOnly.mkdir(mode=0o700)
    secret = shared / "secret.conf"
    secret.write_text("x")
    secret.chmod(0o600)
    own = shared / "own"
    createOwned(own, nobody)
    required = [
        Requirement(rootOnly, WRITE, "s", "r"),
        Requirement(own, WRITE, "s", "r"),
        Requirement(secret, READ, "s", "r"),
        Requirement(Path("/bin/sh"), RUN, "s", "r"),
    ]
    assert failuresAs(required, nobody) == {0: "Permission denied", 2: "Permission denied"}
    assert list(own.iterdir()) == []
    # As root, all of it can be done.
    assert failuresAs(required, RunAs.current()) == {}


def test_prepareCreatesTheQuarantineForTheUser(shared: Path, nobody: RunAs) -> None:
    """
    A configured quarantine (and spool directory) that does not exist yet
    is created with blobs/ and records/, all owned by the run-as user, and
    the checked spool directory is kept in the configuration.
    """
    config = parseConfig(
        '[upstream]\ndefault = "tcp:127.0.0.1:1"\n'
        '[chain]\nquarantine = "q"\nspool_directory = "spool"\n',
        str(shared / "twistd.conf"),
        shared,
    )
    prepared = prepareFor(config, nobody)
    for directory in ("q", "q/blobs", "q/records", "spool"):
        assert owner(shared / directory) == (nobody.uid, nobody.gid), directory
    assert prepared.chain.spoolDirectory == (shared / "spool").absolute()


def test_unwritableQuarantineIsOneLine(shared: Path, nobody: RunAs) -> None:
    """
    An existing quarantine the user cannot write (root's, 0700) is left
    alone and reported in one line naming the file, the key, the
    directory, the user, the reason and the command that fixes it.
    """
    (shared / "q").mkdir(mode=0o700)
    source = str(shared / "twistd.conf")
    config = parseConfig(
        '[upstream]\ndefault = "tcp:127.0.0.1:1"\n[chain]\nquarantine = "q"\n', source, shared
    )
    with pytest.raises(ConfigError) as raised:
        prepareFor(config, nobody)
    quarantine = shared / "q"
    assert str(raised.value) == (
        f"{source}: [chain] quarantine: {quarantine}: user nobody:nogroup "
        f"(uid {nobody.uid}, gid {nobody.gid}) cannot write to it (Permission denied); "
        f"give it to that user (chown -R nobody:nogroup {quarantine}) or choose another directory"
    )
    assert owner(quarantine) == (0, 0)
    assert not (quarantine / "blobs").exists()


def test_rootOwnedBlobDirectoryIsFound(shared: Path, nobody: RunAs) -> None:
    """
    A quarantine handed to the user except for one blobs/xx/ directory
    left by an earlier run as root is refused, naming that directory: the
    next blob stored there would fail.
    """
    quarantine = shared / "q"
    (quarantine / "blobs" / "ab").mkdir(parents=True)
    (quarantine / "records").mkdir()
    for directory in (quarantine, quarantine / "blobs", quarantine / "records"):
        os.chown(directory, nobody.uid, nobody.gid)
    config = parseConfig(
        '[upstream]\ndefault = "tcp:127.0.0.1:1"\n[chain]\nquarantine = "q"\n', "t.conf", shared
    )
    with pytest.raises(
        ConfigError, match=f"t.conf: \\[chain\\] quarantine: {quarantine}/blobs/ab: "
    ):
        prepareFor(config, nobody)


def test_systemTemporaryDirectoryNeverChanged(
    shared: Path, nobody: RunAs, monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    Without [chain] spool_directory the spool goes to the system's
    temporary directory; one the user cannot write is reported with the
    setting to use instead, never handed over.
    """
    rootOnly = shared / "tmp"
    rootOnly.mkdir(mode=0o700)
    monkeypatch.setattr(tempfile, "tempdir", str(rootOnly))
    config = parseConfig('[upstream]\ndefault = "tcp:127.0.0.1:1"\n', "t.conf", shared)
    with pytest.raises(ConfigError) as raised:
        prepareFor(config, nobody)
    assert str(raised.value).startswith(
        f"t.conf: [chain] spool_directory (not set: the system's temporary directory): {rootOnly}: "
    )
    assert str(raised.value).endswith(
        "; set [chain] spool_directory to a directory that user can write"
    )
    assert owner(rootOnly) == (0, 0)


def test_workersNeedTheConfigurationFile(shared: Path, nobody: RunAs) -> None:
    """
    With workers > 1 every worker starts the interpreter and reads the
    configuration file as the user, so both are required; with one
    process neither is (the main process read the file before the switch).
    """
    path = shared / "twistd.conf"
    text = '[proxy]\nworkers = 2\n[upstream]\ndefault = "tcp:127.0.0.1:1"\n'
    two = parseConfig(text, str(path), shared)
    needs = {(r.path, r.need) for r in requirements(two, nobody)}
    assert (Path(sys.executable).absolute(), RUN) in needs
    assert (path, READ) in needs
    one = parseConfig(text.replace("workers = 2", "workers = 1"), str(path), shared)
    assert all(r.need == WRITE for r in requirements(one, nobody))


def privateFile(directory: Path, name: str) -> Path:
    """
    A file only root may read.
    """
    path = directory / name
    path.write_text("-----BEGIN CERTIFICATE-----\n")
    path.chmod(0o600)
    return path


def test_unreadableCaFileStopsStartUp(shared: Path, nobody: RunAs) -> None:
    """
    An upstream ca_file the user cannot read would fail every login (it is
    read for each upstream connection): start-up stops, naming it.
    """
    ca = privateFile(shared, "ca.pem")
    config = parseConfig(
        '[upstream]\ndefault = "tcp:pop.example.com:110"\nca_file = "ca.pem"\n', "t.conf", shared
    )
    with pytest.raises(ConfigError) as raised:
        prepareFor(config, nobody)
    assert str(raised.value).startswith(f"t.conf: ca_file: {ca}: user nobody:nogroup ")
    assert "cannot read it (Permission denied); it is read for every upstream connection" in str(
        raised.value
    )


def test_unreadableKeyWarnsWithOneProcessStopsWithWorkers(shared: Path, nobody: RunAs) -> None:
    """
    The proxy's own key, root-only: with one process it was read before
    the switch, and only a renewal cannot be read again, so start-up goes
    on with a warning; with workers, which read it as the user, start-up
    stops.
    """
    key = privateFile(shared, "key.pem")
    text = (
        '[proxy]\nworkers = 1\n[upstream]\ndefault = "tcp:127.0.0.1:1"\n'
        '[tls]\ncertificate = "key.pem"\n'
    )
    config = parseConfig(text, "t.conf", shared)
    with capturedLogs() as events:
        prepareFor(config, nobody)
    warned = [formatEvent(e) for e in events if e["log_level"] == LogLevel.warn]
    assert len(warned) == 1
    assert warned[0].startswith(f"t.conf: [tls]: {key}: user nobody:nogroup ")
    assert warned[0].endswith("or restart popproxy after each renewal")

    workers = parseConfig(text.replace("workers = 1", "workers = 2"), "t.conf", shared)
    keyNeed = {r.path: r for r in requirements(workers, nobody)}[key]
    assert (keyNeed.need, keyNeed.fatal) == (READ, True)
    assert (
        keyNeed.remedy
        == "every worker reads it; let nobody:nogroup read it, or set [proxy] workers = 1"
    )
    assert failuresAs([keyNeed], nobody) == {0: "Permission denied"}
