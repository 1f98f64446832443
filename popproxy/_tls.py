"""
TLS settings and OpenSSL connection creators for both sides of the proxy.

Towards upstreams: the settings of one upstream and the client connection
creators that enforce them.  Towards clients: L{ServerTLS}, the proxy's own
certificate, reloaded when its files change.

Certificates are verified by default (service_identity checks the host
name, against the system trust store or a configured CA bundle), TLS 1.2 is
the minimum, and plain text is chosen only where the configuration says so
or the upstream is on the loopback interface.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, replace
from pathlib import Path

from OpenSSL import SSL
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator
from twisted.internet.ssl import (
    Certificate,
    CertificateOptions,
    TLSVersion,
    optionsForClientTLS,
    platformTrust,
    trustRootFromCertificates,
)
from twisted.logger import Logger
from zope.interface import implementer

#: How popproxy talks TLS to an upstream.
TLS_MODES = ("implicit", "starttls", "none")

#: How an upstream learns the client's address: a PROXY header (v1 or v2)
#: before anything else, Dovecot's POP3 XCLIENT after the greeting, or not.
CLIENT_ADDRESS_MODES = ("none", "proxy-v1", "proxy-v2", "xclient")

MINIMUM_VERSION = TLSVersion.TLSv1_2

#: TLS 1.2 ciphers offered to clients: forward secrecy and AEAD only (TLS
#: 1.3 suites are always modern).
MODERN_CIPHERS = b"ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20:!aNULL:!MD5:!DSS"


class TlsSettingsError(ValueError):
    """
    The TLS settings cannot work (e.g. no host name to verify).
    """


@dataclass(frozen=True)
class UpstreamTls:
    """
    TLS settings of one upstream.

    @ivar mode: C{"implicit"} (TLS from the first byte, port 995 style),
        C{"starttls"} (STLS after the greeting, RFC 2595), C{"none"}; C{None}
        until resolved by L{resolveUpstreamTls}.
    @ivar caFile: PEM bundle of trusted CAs; C{None} means the system store.
    @ivar verify: check the certificate and host name (the default); turning
        it off is logged at start-up.
    @ivar hostname: the name to verify; by default the endpoint's host.
    """

    mode: str | None = None
    caFile: Path | None = None
    verify: bool = True
    hostname: str | None = None


@dataclass(frozen=True)
class UpstreamTarget:
    """
    One upstream server: its client endpoint string, TLS settings and how
    it learns the client's address (one of L{CLIENT_ADDRESS_MODES}).
    """

    endpoint: str
    tls: UpstreamTls = UpstreamTls(mode="none")
    clientAddress: str = "none"

    def __str__(self) -> str:
        mode = self.tls.mode
        return self.endpoint if mode in (None, "none") else f"{self.endpoint} ({mode})"


def _unescapedFields(description: str) -> list[str]:
    fields, current, escaped = [], "", False
    for character in description:
        if escaped:
            current += character
            escaped = False
        elif character == "\\":
            escaped = True
        elif character == ":":
            fields.append(current)
            current = ""
        else:
            current += character
    fields.append(current)
    return fields


def endpointHost(description: str) -> str | None:
    """
    The host named by a client endpoint string such as C{tcp:host:110},
    C{tcp:host=h:port=110} or C{tls:host:995}, if it names one.
    """
    fields = _unescapedFields(description)
    if len(fields) < 2:
        return None
    for field in fields[1:]:
        if field.startswith("host="):
            return field[5:]
    if fields[0] in ("tcp", "tls", "tcp6") and "=" not in fields[1]:
        return fields[1]
    return None


def isLoopback(host: str | None) -> bool:
    """
    Whether C{host} (an address, bracketed or not, or C{localhost}) is this
    machine's loopback, including an IPv4 loopback address as a C{tcp6}
    listener sees it (C{::ffff:127.0.0.1}).
    """
    if host is None:
        return False
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def resolveUpstreamTls(endpoint: str, tls: UpstreamTls) -> UpstreamTls:
    """
    Fill in what the configuration left open: the mode (C{tls:} endpoints
    are implicit TLS already; loopback hosts default to plain text, every
    other host to STLS) and the host name to verify.

    @raise TlsSettingsError: TLS is wanted but there is no name to verify.
    """
    host = endpointHost(endpoint)
    mode = tls.mode
    if endpoint.startswith("tls:"):
        if mode not in (None, "implicit"):
            raise TlsSettingsError(f"a tls: endpoint is implicit TLS, not tls = {mode!r}")
        mode = "implicit"
    elif mode is None:
        mode = "none" if isLoopback(host) else "starttls"
    if mode not in TLS_MODES:
        raise TlsSettingsError(f"tls must be one of {', '.join(TLS_MODES)}, not {mode!r}")
    hostname = tls.hostname or host
    if mode != "none" and tls.verify and not hostname:
        raise TlsSettingsError(f"cannot tell which host name to verify for {endpoint!r}")
    return replace(tls, mode=mode, hostname=hostname)


def _loadBundle(path: Path) -> list[Certificate]:
    text = path.read_text("ascii", "replace")
    marker = "-----END CERTIFICATE-----"
    pieces = [piece + marker for piece in text.split(marker) if "BEGIN CERTIFICATE" in piece]
    if not pieces:
        raise TlsSettingsError(f"{path} holds no PEM certificate")
    return [Certificate.loadPEM(piece.strip().encode("ascii")) for piece in pieces]


def clientCreator(tls: UpstreamTls) -> object:
    """
    The OpenSSL client connection creator (or context factory) enforcing
    C{tls}; C{tls} must be resolved.
    """
    if not tls.verify:
        return CertificateOptions(verify=False, raiseMinimumTo=MINIMUM_VERSION)
    assert tls.hostname is not None
    trustRoot = (
        trustRootFromCertificates(_loadBundle(tls.caFile))
        if tls.caFile is not None
        else platformTrust()
    )
    return optionsForClientTLS(
        tls.hostname,
        trustRoot=trustRoot,
        extraCertificateOptions={"raiseMinimumTo": MINIMUM_VERSION},
    )


@implementer(IOpenSSLServerConnectionCreator)
class ServerTLS:
    """
    The proxy's own certificate, for STLS and implicit-TLS listeners.

    The files are read at start-up and again whenever they change on disk
    (checked when a TLS connection begins), so a renewed certificate is used
    by new connections while running sessions keep theirs.

    @param certificate: PEM file: the server certificate first, then any
        intermediate CA certificates (a chain file).  May also hold the key.
    @param key: PEM file with the private key; C{None} if C{certificate}
        holds it.
    """

    log = Logger()

    def __init__(
        self,
        certificate: Path,
        key: Path | None = None,
        minimumVersion: TLSVersion = MINIMUM_VERSION,
    ) -> None:
        self._certificate = certificate
        self._key = key or certificate
        self._minimumVersion = minimumVersion
        self._stamp: tuple[float, ...] = ()
        self._context: SSL.Context | None = None
        self._reload()

    def _files(self) -> tuple[float, ...]:
        return tuple(path.stat().st_mtime_ns for path in (self._certificate, self._key))

    def _reload(self) -> None:
        stamp = self._files()
        if b"BEGIN CERTIFICATE" not in self._certificate.read_bytes():
            raise TlsSettingsError(f"{self._certificate} holds no PEM certificate")
        context = SSL.Context(SSL.TLS_METHOD)
        context.set_min_proto_version(
            SSL.TLS1_3_VERSION if self._minimumVersion == TLSVersion.TLSv1_3 else SSL.TLS1_2_VERSION
        )
        context.set_options(SSL.OP_NO_COMPRESSION | SSL.OP_CIPHER_SERVER_PREFERENCE)
        context.set_cipher_list(MODERN_CIPHERS)
        try:
            context.use_certificate_chain_file(str(self._certificate))
        except SSL.Error as e:
            raise TlsSettingsError(
                f"{self._certificate}: not a usable certificate chain: {e}"
            ) from None
        try:
            context.use_privatekey_file(str(self._key))
        except SSL.Error:
            raise TlsSettingsError(
                f"{self._key}: not a private key, or it does not match the certificate in "
                f"{self._certificate}"
            ) from None
        try:
            context.check_privatekey()
        except SSL.Error:
            raise TlsSettingsError(
                f"{self._key} does not match the certificate in {self._certificate}"
            ) from None
        self._context = context
        self._stamp = stamp

    def context(self) -> SSL.Context:
        """
        The current context, reloaded first if the files changed.
        """
        try:
            if self._files() != self._stamp:
                self._reload()
                self.log.info("reloaded the TLS certificate {path}", path=str(self._certificate))
        except (OSError, TlsSettingsError) as e:
            # Keep serving with the certificate we have; say why.
            self.log.error(
                "cannot reload the TLS certificate {path}: {error}",
                path=str(self._certificate),
                error=str(e),
            )
            self._stamp = ()
        assert self._context is not None
        return self._context

    def serverConnectionForTLS(self, tlsProtocol: object) -> SSL.Connection:
        return SSL.Connection(self.context(), None)


def minimumVersion(text: str) -> TLSVersion:
    """
    C{"1.2"} or C{"1.3"} as a L{TLSVersion}.
    """
    versions = {"1.2": TLSVersion.TLSv1_2, "1.3": TLSVersion.TLSv1_3}
    if text not in versions:
        raise TlsSettingsError(f"min_version must be 1.2 or 1.3, not {text!r}")
    return versions[text]
