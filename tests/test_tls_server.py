"""
Tests for popproxy._tls.ServerTLS, the proxy's own certificate: chain
files, key mismatch, and reloading when the files change.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from twisted.logger import capturedLogs, formatEvent

from popproxy._tls import ServerTLS, TlsSettingsError
from tests.peers.certs import GeneratedCertificates


def served(creator: ServerTLS) -> str:
    """
    The names in the certificate the creator presents now.
    """
    connection = creator.serverConnectionForTLS(None)
    certificate = connection.get_certificate(as_cryptography=True)
    assert certificate is not None
    return certificate.subject.rfc4514_string()


def copy(source: Path, target: Path) -> None:
    shutil.copyfile(source, target)
    stamp = target.stat().st_mtime_ns + 5_000_000_000
    os.utime(target, ns=(stamp, stamp))


def test_reloadsWhenFilesChange(tmp_path: Path, testCertificates: GeneratedCertificates) -> None:
    """
    Replacing the certificate and key files makes the next TLS connection
    use the new certificate, without a restart.
    """
    chain, key = tmp_path / "chain.pem", tmp_path / "key.pem"
    copy(testCertificates.localhost.chain, chain)
    copy(testCertificates.localhost.privateKey, key)
    creator = ServerTLS(chain, key)
    assert "localhost" in served(creator)
    copy(testCertificates.wrongHost.chain, chain)
    copy(testCertificates.wrongHost.privateKey, key)
    with capturedLogs() as events:
        assert "wrong.example" in served(creator)
    assert any("reloaded the TLS certificate" in formatEvent(e) for e in events)


def test_brokenReplacementKeepsOldCertificate(
    tmp_path: Path, testCertificates: GeneratedCertificates
) -> None:
    """
    A replacement key that does not match the certificate is logged and the
    previous certificate stays in use.
    """
    chain, key = tmp_path / "chain.pem", tmp_path / "key.pem"
    copy(testCertificates.localhost.chain, chain)
    copy(testCertificates.localhost.privateKey, key)
    creator = ServerTLS(chain, key)
    copy(testCertificates.wrongHost.privateKey, key)
    with capturedLogs() as events:
        assert "localhost" in served(creator)
    assert any("cannot reload the TLS certificate" in formatEvent(e) for e in events)


def test_startupErrors(tmp_path: Path, testCertificates: GeneratedCertificates) -> None:
    """
    A key that does not match, or a file without a certificate, is refused
    at start-up with a clear reason.
    """
    with pytest.raises(TlsSettingsError, match="does not match"):
        ServerTLS(testCertificates.localhost.chain, testCertificates.wrongHost.privateKey)
    empty = tmp_path / "empty.pem"
    empty.write_text("nothing here")
    with pytest.raises(TlsSettingsError, match="no PEM certificate"):
        ServerTLS(empty, testCertificates.localhost.privateKey)
