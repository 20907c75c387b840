"""
The C{pcscf} role's config schema: the [pcscf] section and its cross-key checks.

    [pcscf]
    udp_listen = "udp:5060:interface=127.0.0.1"   # "" turns UDP off
    tcp_listen = "tcp:5060:interface=127.0.0.1"   # "" turns TCP off
    tls_listen = "tcp:5061:interface=127.0.0.1"   # SIP over TLS ("" or absent: off)
    worker_ports = 5100                           # node.workers > 1: worker k's own port
    [pcscf.tls]                                   # its certificate (mbmsd.tls)
    certificate = "/etc/mbmsd/tls/pcscf.pem"
    private_key = "/etc/mbmsd/tls/pcscf.key"
    scf = "sip:127.0.0.1:5070"                    # ;transport=tcp for TCP
"""

import ipaddress

from mbmsd import config as c
from mbmsd import overload, tls
from mbmsd.sip.listeners import (
    check_worker_ports,
    parse_udp_listen,
    tcp_listen_field,
    tls_listen_field,
    udp_listen_field,
    worker_ports_field,
)

__all__ = ["PCSCF_SECTION", "check_node", "parse_next_hop", "parse_udp_listen"]


def parse_next_hop(value):
    """
    A next hop: C{"sip:HOST[:PORT][;transport=udp|tcp]"} or C{"HOST:PORT"},
    HOST an IP address -> C{(host, port, transport)}, transport upper-case.

    @raise c.Invalid: anything else.
    """
    from mbmsd.sip.grammar import SipParseError, parse_uri

    if not isinstance(value, str):
        raise c.Invalid("must be a string such as 'sip:127.0.0.1:5070'")
    text = value if value.lower().startswith("sip:") else "sip:" + value
    try:
        uri = parse_uri(text)
    except SipParseError:
        raise c.Invalid("must be a SIP URI such as 'sip:127.0.0.1:5070;transport=tcp'") from None
    if uri.scheme != "sip" or uri.user is not None:
        raise c.Invalid("must be a sip: URI without a user part")
    try:
        ipaddress.ip_address(uri.host)
    except ValueError:
        raise c.Invalid("the host must be an IP address (no DNS lookups)") from None
    transport = (uri.params.get("transport") or "udp").upper()
    if transport not in ("UDP", "TCP"):
        raise c.Invalid("transport must be udp or tcp")
    return uri.host, uri.port or 5060, transport


def _next_hop():
    def check(value):
        parse_next_hop(value)
        return value

    return check


PCSCF_SECTION = c.Section(
    fields={
        "udp_listen": udp_listen_field(5060),
        "tcp_listen": tcp_listen_field(5060),
        "tls_listen": tls_listen_field(5061),
        "worker_ports": worker_ports_field(5100),
        "advertised_host": c.Field(c.ip_address(), None,
                                   "address put in Via and Record-Route "
                                   "(default: the listen interface, 127.0.0.1 for 0.0.0.0)"),
        "scf": c.Field(_next_hop(), "sip:127.0.0.1:5070",
                       "next hop for the UEs' initial requests: sip:IP:PORT[;transport=tcp]"),
        "realm": c.Field(c.fqdn(), None, "Digest realm of REGISTER (default: home_domain)"),
        "min_expires": c.Field(c.integer(1, 86400), 60,
                               "shortest registration accepted (else 423), seconds"),
        "max_expires": c.Field(c.integer(1, 7 * 86400), 7200,
                               "registrations longer than this are cut to it, seconds"),
        "default_expires": c.Field(c.integer(1, 7 * 86400), 3600,
                                   "registration time when the UE asks none, seconds"),
        "challenge_lifetime": c.Field(c.integer(5, 600), 30,
                                      "seconds a REGISTER nonce may be answered"),
        "trusted_peers": c.Field(c.array(c.ip_address()), [],
                                 "addresses besides the SCF to which P-Asserted-Identity "
                                 "is sent despite 'Privacy: id' (RFC 3325 9.3)"),
        "max_message_size": c.Field(c.integer(1024, 65535), 65535,
                                    "bytes; larger messages are answered 413"),
        "max_bindings": c.Field(c.integer(1, 10_000_000), 100_000,
                                "registration bindings held in memory (and the dialogs "
                                "remembered); a REGISTER for a new one beyond it is "
                                "answered 503"),
        "prune_interval": c.Field(c.integer(1, 86400), 60,
                                  "seconds between removals of expired bindings"),
        "t1": c.Field(c.number(0.05, 10), 0.5, "RFC 3261 T1, seconds"),
        **overload.concurrency_fields(maxConcurrent=1000, perPeer=100),
        **overload.transaction_fields(maxTransactions=50_000),
        **overload.auth_fields(perImpi=5, perSource=100, window=300),
    },
    # [pcscf.tls]: the certificate of the TLS listener (tls_listen)
    tables={"tls": tls.TLS_SECTION},
)


def check_node(config):
    """
    The checks that span keys: the registration times in order, and at
    least one listener.
    """
    errors = []
    section = config.get("pcscf", {})
    lo, default, hi = (section.get(k) for k in ("min_expires", "default_expires",
                                                "max_expires"))
    if None not in (lo, default, hi):
        if lo > hi:
            errors.append("pcscf.min_expires: must be <= pcscf.max_expires (%d)" % (hi,))
        elif not lo <= default <= hi:
            errors.append("pcscf.default_expires: must lie between pcscf.min_expires (%d) "
                          "and pcscf.max_expires (%d)" % (lo, hi))
    if section.get("udp_listen") == "" and section.get("tcp_listen") == "":
        errors.append("pcscf.udp_listen: UDP and TCP cannot both be off ('')")
    errors += check_worker_ports(config, "pcscf")
    if section.get("tls_listen") or tls.enabled(section.get("tls")):
        errors += tls.check(section.get("tls") or {}, "pcscf.tls",
                            needCertificate=bool(section.get("tls_listen")))
    return errors
