"""
TLS for every role, in one place (pyOpenSSL through Twisted; docs/design.md 1.3):

  - L{TLS_SECTION}: the C{[<role>.tls]} table naming PEM files (the
    certificate chain, its private key, the CA that signs peers' client
    certificates) and C{[node.http_client]} (the node's client certificate
    and the CA that signs the servers it talks to); L{check} loads them, so a
    bad file stops start-up (and C{--check}) with one line naming the key;
  - L{serverOptions}: C{CertificateOptions} for a listener, asking for a
    client certificate (mutual TLS) when a CA is configured;
  - L{wrapServer}: any stream endpoint's factory over TLS (so C{tcp:},
    C{systemd:} and the rest keep working);
  - L{ClientPolicy}: the C{IPolicyForHTTPS} of an C{Agent} (server verified
    against the CA, hostname or IP checked, optional client certificate);
  - L{peerNames}: the names of a peer's verified certificate, what the
    BM-SC (trusted SCFs) and the BSF (NAFs on Zn) compare with their config.

TLS 1.2 at least (the 3GPP TLS profile of TS 33.210 for network domain
interfaces; TS 33.222 for HTTPS on Ua, the server authenticated by its
certificate and the UE by GBA).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtensionOID, NameOID
from OpenSSL import crypto
from twisted.internet import ssl
from twisted.internet.interfaces import IAddress, IOpenSSLContextFactory, IProtocolFactory
from twisted.internet.protocol import Protocol
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

from mbmsd import config as c

__all__ = ["TLS_SECTION", "HTTP_CLIENT_SECTION", "check", "enabled", "serverOptions",
           "ServerTls", "prepareReload",
           "wrapServer", "ClientPolicy", "clientPolicy", "peerNames", "requestPeer", "Peer"]

MINIMUM = ssl.TLSVersion.TLSv1_2


def pem_file(what: str) -> c.Check:
    """A readable file (checked when the config is loaded)."""

    def check(value: object) -> str:
        if not isinstance(value, str) or not value:
            raise c.Invalid("must be the path of a PEM file (%s)" % (what,))
        try:
            with open(value, "rb"):
                pass
        except OSError as e:
            raise c.Invalid("cannot read the file (%s)" % (e.strerror or e,)) from None
        return value

    return check


TLS_SECTION = c.Section(
    fields={
        "certificate": c.Field(pem_file("certificate chain"), None,
                               "PEM: this role's certificate, then its intermediate CAs"),
        "private_key": c.Field(pem_file("private key"), None,
                               "PEM: the certificate's private key, unencrypted (mode 0600)"),
        "ca": c.Field(pem_file("CA certificates"), None,
                      "PEM: CAs whose client certificates are verified (mutual TLS)"),
    }
)

HTTP_CLIENT_SECTION = c.Section(
    fields={
        "certificate": c.Field(pem_file("certificate chain"), None,
                               "PEM: the client certificate this node presents over HTTPS"),
        "private_key": c.Field(pem_file("private key"), None,
                               "PEM: its private key, unencrypted (mode 0600)"),
        "ca": c.Field(pem_file("CA certificates"), None,
                      "PEM: CAs that sign the HTTPS servers (default: the system's)"),
    }
)


class TlsConfigError(ValueError):
    """A TLS file that cannot be used; the message names no key material."""


# ---------------------------------------------------------------- loading


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _certificates(path: str) -> list[x509.Certificate]:
    try:
        certs = x509.load_pem_x509_certificates(_read(path))
    except (OSError, ValueError):
        raise TlsConfigError("no PEM certificate in %s" % (path,)) from None
    return certs


def _key(path: str) -> Any:
    try:
        return serialization.load_pem_private_key(_read(path), password=None)
    except (OSError, ValueError, TypeError):
        # TypeError: an encrypted key (no passphrase here)
        raise TlsConfigError("no unencrypted PEM private key in %s" % (path,)) from None


def _public(key: Any) -> bytes:
    der: bytes = key.public_bytes(serialization.Encoding.DER,
                                  serialization.PublicFormat.SubjectPublicKeyInfo)
    return der


def check(
    section: Mapping[str, Any], prefix: str, needCertificate: bool = False, server: bool = True,
) -> list[str]:
    """
    Load the files of a TLS section.

    @param prefix: its key path, e.g. C{"bsf.tls"}.
    @param needCertificate: the role listens with TLS, so a certificate and
        its key are required.
    @param server: a listener's section, where C{ca} (for client
        certificates) means nothing without a certificate; False for
        L{HTTP_CLIENT_SECTION}.
    @return: a list of C{"<key>: <problem>"} lines (empty when usable).
    """
    errors: list[str] = []
    cert, key = section.get("certificate"), section.get("private_key")
    if needCertificate and cert is None:
        errors.append("%s.certificate: required (the role listens with TLS)" % (prefix,))
    elif server and cert is None and section.get("ca") is not None:
        errors.append("%s.certificate: required with %s.ca (client certificates are asked "
                      "for over TLS only)" % (prefix, prefix))
    if (cert is None) != (key is None):
        missing = "private_key" if key is None else "certificate"
        errors.append("%s.%s: required with %s.%s" % (
            prefix, missing, prefix, "certificate" if key is None else "private_key"))
    chain = None
    if cert is not None:
        try:
            chain = _certificates(cert)
        except TlsConfigError as e:
            errors.append("%s.certificate: %s" % (prefix, e))
    if key is not None:
        try:
            private = _key(key)
        except TlsConfigError as e:
            errors.append("%s.private_key: %s" % (prefix, e))
        else:
            if chain and _public(chain[0].public_key()) != _public(private.public_key()):
                errors.append("%s.private_key: does not match the first certificate of %s"
                              % (prefix, cert))
    if section.get("ca") is not None:
        try:
            _certificates(section["ca"])
        except TlsConfigError as e:
            errors.append("%s.ca: %s" % (prefix, e))
    return errors


def enabled(section: Mapping[str, Any] | None) -> bool:
    """Does the TLS section name a certificate (the role listens with TLS)?"""
    return section is not None and bool(section) and section.get("certificate") is not None


def _privateCertificate(
    section: Mapping[str, Any],
) -> tuple[crypto.X509, crypto.PKey, list[crypto.X509]]:
    chain = [crypto.X509.from_cryptography(x) for x in _certificates(section["certificate"])]
    key = crypto.PKey.from_cryptography_key(_key(section["private_key"]))
    return chain[0], key, chain[1:]


def _trustRoot(path: str) -> Any:
    return ssl.trustRootFromCertificates(
        [ssl.Certificate(crypto.X509.from_cryptography(x)) for x in _certificates(path)])


def serverOptions(
    section: Mapping[str, Any], clientCertificates: bool = True,
) -> ssl.CertificateOptions:
    """
    The server side of a role's listener.

    @param clientCertificates: ask for a client certificate, verified
        against the section's C{ca}, when one is configured. It is optional:
        a client without one is then judged by its address (the caller's
        policy); one that presents an unverifiable certificate fails the
        handshake.
    @return: an C{IOpenSSLContextFactory} (C{CertificateOptions}).
    """
    cert, key, extra = _privateCertificate(section)
    if clientCertificates and section.get("ca") is not None:
        # verify a certificate when one comes, do not require it (trustRoot
        # would): caCerts with verify
        return ssl.CertificateOptions(
            privateKey=key, certificate=cert, extraCertChain=extra, raiseMinimumTo=MINIMUM,
            verify=True, requireCertificate=False,
            caCerts=[crypto.X509.from_cryptography(x) for x in _certificates(section["ca"])])
    return ssl.CertificateOptions(privateKey=key, certificate=cert, extraCertChain=extra,
                                  raiseMinimumTo=MINIMUM)


@implementer(IOpenSSLContextFactory)
class ServerTls:
    """
    A listener's TLS that a reload can replace: the context of each new
    connection comes from the current L{serverOptions}; connections already
    open keep theirs.
    """

    def __init__(self, section: Mapping[str, Any], clientCertificates: bool = True) -> None:
        self.clientCertificates = clientCertificates
        self.options = serverOptions(section, clientCertificates)

    def getContext(self) -> Any:
        return self.options.getContext()

    @classmethod
    def forSection(
        cls, section: Mapping[str, Any] | None, clientCertificates: bool = True,
    ) -> ServerTls | None:
        """A L{ServerTls} when C{section} names a certificate, else None."""
        return cls(section, clientCertificates) if section and enabled(section) else None


def prepareReload(
    current: ServerTls | None, section: Mapping[str, Any], prefix: str,
) -> Callable[[], None]:
    """
    The reload of a listener's TLS: the new certificate, key and CA are
    loaded now, so a bad file refuses the reload before anything changes.

    @param current: the listener's L{ServerTls}, or None (TLS off).
    @param prefix: the section's key path, e.g. C{"bsf.tls"}.
    @return: a callable that switches new connections to the new files.
    @raise TlsConfigError: TLS turned on or off (that needs a restart), or a
        file that cannot be used; the message names the key.
    """
    if (current is not None) != enabled(section):
        raise TlsConfigError("%s.certificate: turning TLS on or off needs a restart" % (prefix,))
    if current is None:
        return lambda: None
    try:
        options = serverOptions(section, current.clientCertificates)
        options.getContext()
    except TlsConfigError as e:
        raise TlsConfigError("%s: %s" % (prefix, e)) from None
    except Exception as e:
        raise TlsConfigError("%s: cannot use the files (%s)" % (prefix, e)) from None

    def apply() -> None:
        assert current is not None
        current.options = options

    return apply


class _ServerFactory(TLSMemoryBIOFactory):
    noisy = False

    def buildProtocol(self, addr: IAddress) -> Protocol | None:  # type: ignore[override]
        inner = self.wrappedFactory.buildProtocol(addr)
        if inner is None:
            # the wrapped factory refused the connection (a bound is full):
            # close it, as it would without TLS
            return None
        return self.protocol(self, inner)


def wrapServer(options: IOpenSSLContextFactory, factory: IProtocolFactory) -> _ServerFactory:
    """C{factory} behind TLS, for any stream server endpoint."""
    return _ServerFactory(options, False, factory)


@implementer(IPolicyForHTTPS)
class ClientPolicy:
    """
    For C{twisted.web.client.Agent(contextFactory=...)}: verify the server
    against C{trustRoot} (None: the platform's roots) and its hostname or
    IP address (RFC 2818 3.1, via service_identity); present
    C{clientCertificate} (a C{PrivateCertificate}) when given.
    """

    def __init__(
        self, trustRoot: Any = None, clientCertificate: ssl.PrivateCertificate | None = None,
        extraCertChain: Iterable[crypto.X509] = (),
    ) -> None:
        self.trustRoot = trustRoot
        self.clientCertificate = clientCertificate
        self.extra: dict[str, Any] = {"raiseMinimumTo": MINIMUM}
        if extraCertChain:
            self.extra["extraCertChain"] = list(extraCertChain)

    def replaceWith(self, other: ClientPolicy) -> None:
        """Take the CA and client certificate of C{other} (a reload): new connections use them."""
        self.trustRoot, self.clientCertificate, self.extra = (
            other.trustRoot, other.clientCertificate, other.extra)

    def creatorForNetloc(self, hostname: bytes, port: int) -> Any:
        return ssl.optionsForClientTLS(
            hostname.decode("ascii"), trustRoot=self.trustRoot,
            clientCertificate=self.clientCertificate, extraCertificateOptions=self.extra)


def clientPolicy(section: Mapping[str, Any] | None = None, ca: str | None = None) -> ClientPolicy:
    """
    The C{ClientPolicy} of a C{[node.http_client]} section (or of a CA file
    alone, for mbms-ue).
    """
    section = dict(section or {})
    if ca is not None:
        section["ca"] = ca
    trustRoot = _trustRoot(section["ca"]) if section.get("ca") else None
    clientCertificate: ssl.PrivateCertificate | None = None
    extra: list[crypto.X509] = []
    if section.get("certificate"):
        cert, key, extra = _privateCertificate(section)
        clientCertificate = ssl.PrivateCertificate.fromCertificateAndKeyPair(
            ssl.Certificate(cert), ssl.KeyPair(key))
    return ClientPolicy(trustRoot, clientCertificate, extra)


# ---------------------------------------------------------------- peers

class Peer(NamedTuple):
    """
    Who is asking: C{address} (IP address, str) and C{names} (frozenset of the
    lower-case DNS names of its verified TLS client certificate; empty without).
    """

    address: str
    names: frozenset[str]


def peerNames(transport: object) -> frozenset[str]:
    """
    The DNS names (subjectAltName dNSName, else the subject CN) of the
    certificate the peer on C{transport} presented, lower case; empty when
    the connection is not TLS or the peer sent none. Only a certificate
    that verified against the listener's CA reaches here (L{serverOptions}).
    """
    get = getattr(transport, "getPeerCertificate", None)
    if get is None:
        return frozenset()
    try:
        cert = get()
    except Exception:
        return frozenset()
    if cert is None:
        return frozenset()
    certificate = cert.to_cryptography()
    try:
        san = certificate.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME)
        names = san.value.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        names = []
    if not names:
        names = [a.value for a in certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    return frozenset(n.lower() for n in names if isinstance(n, str))


def requestPeer(request: Any) -> Peer:
    """The L{Peer} of a twisted.web request."""
    address = getattr(request.getClientAddress(), "host", "?")
    transport = getattr(getattr(request, "channel", None), "transport", None)
    return Peer(address, peerNames(transport))
