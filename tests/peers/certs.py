"""Generate a throwaway certificate authority and server certificates for TLS tests, at test time.

Nothing here is stored in the repository: every test session makes a new CA and new keys
with C{cryptography}, valid for a few days, and writes them as PEM files. The set holds a
good certificate for C{localhost} (CN, DNS and IP names), one issued by the same CA for a
wrong host name, a self-signed one (trusted by nobody) and an expired one, so tests can
prove that verification succeeds exactly when it should.

Keys are ECDSA P-256: fast to generate, and accepted by OpenSSL (Dovecot, fetchmail, curl,
Python) and GnuTLS (mpop) alike.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "TEST_HOSTNAME",
    "WRONG_HOSTNAME",
    "GeneratedCertificates",
    "ServerCertificate",
    "TlsMode",
    "clientTlsContext",
    "testCertificates",
    "writeCaDirectory",
    "writeTestCertificates",
]

TEST_HOSTNAME = "localhost"
"""The name the good certificates are issued for (with IP names 127.0.0.1 and ::1)."""

WRONG_HOSTNAME = "wrong.example"
"""The only name on the certificate that a client expecting L{TEST_HOSTNAME} must refuse."""

TlsMode = Literal["implicit", "starttls"]
"""How a POP3 client reaches TLS: C{implicit} (POP3S: TLS from the first byte, port 995
style) or C{starttls} (STLS, RFC 2595, on a plain port 110 style). None means plain TCP."""

_VALID_DAYS = 7
# Backdating the start a little keeps a peer whose clock is a few seconds behind happy.
_BACKDATE = datetime.timedelta(hours=1)


@dataclass(frozen=True)
class ServerCertificate:
    """
    The PEM files of one server certificate and its key.

    @ivar names: the DNS names and IP addresses the certificate is issued for.
    @ivar certificate: the certificate alone.
    @ivar privateKey: the unencrypted private key (PKCS#8), mode 0600.
    @ivar chain: the certificate followed by its issuer's (just the certificate when it
        is self-signed): what a server should send, e.g. Dovecot's C{ssl_cert = <chain}
        or Twisted's C{ssl:} server endpoint C{certKey=chain:privateKey=key}.
    @ivar keyAndChain: the private key followed by the chain, in one file, mode 0600, for
        software that wants a single file.
    """

    names: tuple[str, ...]
    certificate: Path
    privateKey: Path
    chain: Path
    keyAndChain: Path


@dataclass(frozen=True)
class GeneratedCertificates:
    """
    A throwaway CA and the server certificates made with it, as files in C{directory}.

    @ivar caFile: the CA certificate (PEM): what clients trust (curl C{--cacert},
        fetchmail C{sslcertfile}, mpop C{tls_trust_file}, getmail C{ca_certs}).
    @ivar caDirectory: a directory holding only C{ca.pem}, for software that loads every
        C{*.pem} file of a directory (Twisted's C{tls:} endpoint C{trustRoots=DIR}).
    @ivar hostname: the name the good certificates are issued for (L{TEST_HOSTNAME}).
    @ivar localhost: issued by the CA for C{localhost}, 127.0.0.1 and ::1 (CN=localhost,
        since fetchmail checks CN and DNS names but not IP addresses).
    @ivar wrongHost: issued by the CA for L{WRONG_HOSTNAME} only.
    @ivar selfSigned: for the same names as C{localhost}, but signed by its own key.
    @ivar expired: issued by the CA for the same names as C{localhost}; it expired a day ago.
    """

    directory: Path
    caFile: Path
    caDirectory: Path
    hostname: str
    localhost: ServerCertificate
    wrongHost: ServerCertificate
    selfSigned: ServerCertificate
    expired: ServerCertificate


def _newKey() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(commonName: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "popproxy tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, commonName),
        ]
    )


def _subjectAlternativeNames(names: Sequence[str]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for name in names:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return x509.SubjectAlternativeName(entries)


@dataclass(frozen=True)
class _Authority:
    """An issuer in memory: its key and certificate."""

    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate


def _makeAuthority(now: datetime.datetime) -> _Authority:
    key = _newKey()
    name = _name("popproxy test CA")
    publicKey = key.public_key()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(publicKey)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + datetime.timedelta(days=_VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(publicKey), critical=False)
        .sign(key, hashes.SHA256())
    )
    return _Authority(key, certificate)


def _makeServerCertificate(
    names: Sequence[str],
    issuer: _Authority | None,
    notBefore: datetime.datetime,
    notAfter: datetime.datetime,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """Issue a TLS server certificate for C{names}; self-signed when C{issuer} is None."""
    key = _newKey()
    publicKey = key.public_key()
    subject = _name(names[0])
    if issuer is None:
        issuerName, signingKey = subject, key
        authorityKeyIdentifier = x509.AuthorityKeyIdentifier.from_issuer_public_key(publicKey)
    else:
        issuerName, signingKey = issuer.certificate.subject, issuer.key
        authorityKeyIdentifier = x509.AuthorityKeyIdentifier.from_issuer_public_key(
            issuer.key.public_key()
        )
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuerName)
        .public_key(publicKey)
        .serial_number(x509.random_serial_number())
        .not_valid_before(notBefore)
        .not_valid_after(notAfter)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(_subjectAlternativeNames(names), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(publicKey), critical=False)
        .add_extension(authorityKeyIdentifier, critical=False)
        .sign(signingKey, hashes.SHA256())
    )
    return key, certificate


def _pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def _writePrivate(path: Path, data: bytes) -> None:
    """Write C{data} to a new file readable by its owner only, from the start."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as output:
        output.write(data)


def _writeServerCertificate(
    directory: Path,
    stem: str,
    names: Sequence[str],
    key: ec.EllipticCurvePrivateKey,
    certificate: x509.Certificate,
    issuer: _Authority | None,
) -> ServerCertificate:
    keyPem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    chainPem = _pem(certificate) + (b"" if issuer is None else _pem(issuer.certificate))
    files = ServerCertificate(
        names=tuple(names),
        certificate=directory / f"{stem}.crt.pem",
        privateKey=directory / f"{stem}.key.pem",
        chain=directory / f"{stem}.chain.pem",
        keyAndChain=directory / f"{stem}.key-and-chain.pem",
    )
    files.certificate.write_bytes(_pem(certificate))
    files.chain.write_bytes(chainPem)
    _writePrivate(files.privateKey, keyPem)
    _writePrivate(files.keyAndChain, keyPem + chainPem)
    return files


def writeCaDirectory(caFile: Path, directory: Path) -> Path:
    """
    Make C{directory} hold a copy of C{caFile} as C{ca.pem} and nothing else; return it.

    Twisted's C{tls:} client endpoint C{trustRoots=DIR} loads every C{*.pem} file of DIR,
    so a directory shared with keys or other certificates would trust too much.
    """
    directory.mkdir(parents=True, exist_ok=True)
    stray = [entry.name for entry in directory.iterdir() if entry.name != "ca.pem"]
    if stray:
        raise ValueError(f"{directory} must hold only ca.pem, not {sorted(stray)}")
    shutil.copyfile(caFile, directory / "ca.pem")
    return directory


def writeTestCertificates(
    directory: Path, *, hostname: str = TEST_HOSTNAME
) -> GeneratedCertificates:
    """
    Generate a new CA and the server certificates of L{GeneratedCertificates} in C{directory}.

    Takes a few tens of milliseconds; the good certificates are valid for a week from now.
    """
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    authority = _makeAuthority(now)
    caFile = directory / "ca.pem"
    caFile.write_bytes(_pem(authority.certificate))
    goodNames = (hostname, "127.0.0.1", "::1")
    validFrom, validUntil = now - _BACKDATE, now + datetime.timedelta(days=_VALID_DAYS)

    def issue(
        stem: str,
        names: Sequence[str],
        issuer: _Authority | None,
        notBefore: datetime.datetime = validFrom,
        notAfter: datetime.datetime = validUntil,
    ) -> ServerCertificate:
        key, certificate = _makeServerCertificate(names, issuer, notBefore, notAfter)
        return _writeServerCertificate(directory, stem, names, key, certificate, issuer)

    return GeneratedCertificates(
        directory=directory,
        caFile=caFile,
        caDirectory=writeCaDirectory(caFile, directory / "trust-roots"),
        hostname=hostname,
        localhost=issue("localhost", goodNames, authority),
        wrongHost=issue("wrong-host", (WRONG_HOSTNAME,), authority),
        selfSigned=issue("self-signed", goodNames, None),
        expired=issue(
            "expired",
            goodNames,
            authority,
            notBefore=now - datetime.timedelta(days=30),
            notAfter=now - datetime.timedelta(days=1),
        ),
    )


def clientTlsContext(caFile: Path) -> ssl.SSLContext:
    """
    Return a client context that trusts only C{caFile} and verifies the host name.

    Pass the name to expect as C{server_hostname} (L{RawPop3Client}'s C{serverHostname}).
    """
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(caFile))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


@pytest.fixture(scope="session")
def testCertificates(tmp_path_factory: pytest.TempPathFactory) -> GeneratedCertificates:
    """
    The session's throwaway CA and server certificates (L{GeneratedCertificates}).

    The files live under pytest's basetemp, which only root (the test user) can read:
    a peer that drops privileges must be given its own copy (getmail's is).
    """
    return writeTestCertificates(tmp_path_factory.mktemp("certs"))
