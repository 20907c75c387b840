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

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, NamedTuple

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes, PublicKeyTypes
from cryptography.x509.oid import NameOID
from OpenSSL import SSL, crypto
from twisted.internet import ssl
from twisted.internet.interfaces import (
    IAddress,
    IOpenSSLClientConnectionCreator,
    IOpenSSLContextFactory,
    IProtocolFactory,
)
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from twisted.web.iweb import IPolicyForHTTPS, IRequest
from zope.interface import implementer

from mbmsd import config as c

if TYPE_CHECKING:
    # the interface of ssl.trustRootFromCertificates' answers; Twisted
    # defines it there only
    from twisted.internet._sslverify import IOpenSSLTrustRoot

__all__ = ["TLS_SECTION", "HTTP_CLIENT_SECTION", "check", "enabled", "serverOptions",
           "ServerTls", "prepareReload",
           "wrapServer", "ClientPolicy", "clientPolicy", "peerNames", "requestPeer", "Peer"]

MINIMUM = ssl.TLSVersion.TLSv1_2

# a validated TLS_SECTION or HTTP_CLIENT_SECTION: key -> PEM file path, or None
TlsSection = Mapping[str, str | None]

# the private keys crypto.PKey takes (the others it refuses with TypeError)
_PKEY_TYPES = (dsa.DSAPrivateKey, ec.EllipticCurvePrivateKey, ed25519.Ed25519PrivateKey,
               ed448.Ed448PrivateKey, rsa.RSAPrivateKey)


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


def _key(path: str) -> PrivateKeyTypes:
    try:
        return serialization.load_pem_private_key(_read(path), password=None)
    except (OSError, ValueError, TypeError):
        # TypeError: an encrypted key (no passphrase here)
        raise TlsConfigError("no unencrypted PEM private key in %s" % (path,)) from None


def _public(key: PublicKeyTypes) -> bytes:
    return key.public_bytes(serialization.Encoding.DER,
                            serialization.PublicFormat.SubjectPublicKeyInfo)


def _path(section: TlsSection, key: str) -> str:
    path = section[key]
    if path is None:
        # the config checks (L{check}) require it wherever this is reached
        raise TlsConfigError("%s: not set" % (key,))
    return path


def check(
    section: TlsSection, prefix: str, needCertificate: bool = False, server: bool = True,
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
    cert, key, ca = section.get("certificate"), section.get("private_key"), section.get("ca")
    if needCertificate and cert is None:
        errors.append("%s.certificate: required (the role listens with TLS)" % (prefix,))
    elif server and cert is None and ca is not None:
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
    if ca is not None:
        try:
            _certificates(ca)
        except TlsConfigError as e:
            errors.append("%s.ca: %s" % (prefix, e))
    return errors


def enabled(section: TlsSection | None) -> bool:
    """Does the TLS section name a certificate (the role listens with TLS)?"""
    return section is not None and bool(section) and section.get("certificate") is not None


def _privateCertificate(
    section: TlsSection,
) -> tuple[crypto.X509, crypto.PKey, list[crypto.X509]]:
    chain = [crypto.X509.from_cryptography(x)
             for x in _certificates(_path(section, "certificate"))]
    private = _key(_path(section, "private_key"))
    if not isinstance(private, _PKEY_TYPES):
        raise TypeError("Unsupported key type")  # as crypto.PKey would
    key = crypto.PKey.from_cryptography_key(private)
    return chain[0], key, chain[1:]


def _trustRoot(path: str) -> IOpenSSLTrustRoot:
    root: IOpenSSLTrustRoot = ssl.trustRootFromCertificates(
        [ssl.Certificate(crypto.X509.from_cryptography(x)) for x in _certificates(path)])
    return root


def serverOptions(
    section: TlsSection, clientCertificates: bool = True,
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
    ca = section.get("ca")
    if clientCertificates and ca is not None:
        # verify a certificate when one comes, do not require it (trustRoot
        # would): caCerts with verify
        return ssl.CertificateOptions(
            privateKey=key, certificate=cert, extraCertChain=extra, raiseMinimumTo=MINIMUM,
            verify=True, requireCertificate=False,
            caCerts=[crypto.X509.from_cryptography(x) for x in _certificates(ca)])
    return ssl.CertificateOptions(privateKey=key, certificate=cert, extraCertChain=extra,
                                  raiseMinimumTo=MINIMUM)


@implementer(IOpenSSLContextFactory)
class ServerTls:
    """
    A listener's TLS that a reload can replace: the context of each new
    connection comes from the current L{serverOptions}; connections already
    open keep theirs.
    """

    def __init__(self, section: TlsSection, clientCertificates: bool = True) -> None:
        self.clientCertificates = clientCertificates
        self.options = serverOptions(section, clientCertificates)

    def getContext(self) -> SSL.Context:
        return self.options.getContext()

    @classmethod
    def forSection(
        cls, section: TlsSection | None, clientCertificates: bool = True,
    ) -> ServerTls | None:
        """A L{ServerTls} when C{section} names a certificate, else None."""
        return cls(section, clientCertificates) if section and enabled(section) else None


def prepareReload(
    current: ServerTls | None, section: TlsSection, prefix: str,
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

    # WrappingFactory (Twisted) declares a protocol always; IProtocolFactory
    # lets buildProtocol refuse with None, which this passes on
    def buildProtocol(  # type: ignore[override]
        self, addr: IAddress | None,
    ) -> TLSMemoryBIOProtocol | None:
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
        self, trustRoot: IOpenSSLTrustRoot | None = None,
        clientCertificate: ssl.PrivateCertificate | None = None,
        extraCertChain: Iterable[crypto.X509] = (),
    ) -> None:
        self.trustRoot = trustRoot
        self.clientCertificate = clientCertificate
        # keyword arguments of ssl.CertificateOptions
        self.extra: dict[str, object] = {"raiseMinimumTo": MINIMUM}
        if extraCertChain:
            self.extra["extraCertChain"] = list(extraCertChain)

    def replaceWith(self, other: ClientPolicy) -> None:
        """Take the CA and client certificate of C{other} (a reload): new connections use them."""
        self.trustRoot, self.clientCertificate, self.extra = (
            other.trustRoot, other.clientCertificate, other.extra)

    def creatorForNetloc(self, hostname: bytes, port: int) -> IOpenSSLClientConnectionCreator:
        return ssl.optionsForClientTLS(
            hostname.decode("ascii"), trustRoot=self.trustRoot,
            clientCertificate=self.clientCertificate, extraCertificateOptions=self.extra)


def clientPolicy(section: TlsSection | None = None, ca: str | None = None) -> ClientPolicy:
    """
    The C{ClientPolicy} of a C{[node.http_client]} section (or of a CA file
    alone, for mbms-ue).
    """
    section = dict(section or {})
    if ca is not None:
        section["ca"] = ca
    ca = section.get("ca")
    trustRoot = _trustRoot(ca) if ca else None
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
    certificate: x509.Certificate = cert.to_cryptography()
    names: Sequence[str | bytes]
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        names = san.value.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        names = []
    if not names:
        names = [a.value for a in certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    return frozenset(n.lower() for n in names if isinstance(n, str))


def requestPeer(request: IRequest) -> Peer:
    """The L{Peer} of a twisted.web request."""
    # IRequest.getClientAddress (-> IAddress) is unannotated in Twisted
    address = getattr(request.getClientAddress(), "host", "?")  # type: ignore[no-untyped-call]
    transport = getattr(getattr(request, "channel", None), "transport", None)
    return Peer(address, peerNames(transport))
