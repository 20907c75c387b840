"""
The C{scf} role's config schema: the [scf] section and its cross-key checks.

    [scf]
    udp_listen = "udp:5070:interface=127.0.0.1"   # "" turns UDP off
    tcp_listen = "tcp:5070:interface=127.0.0.1"   # "" turns TCP off
    bmsc_url = "local"                            # the bmsc role of this node, in-process
                                                  # (the default there); or the BM-SC.UPF
                                                  # key management URL, or a list: its
                                                  # nodes, tried in turn
    bmsc_timeout = 5                              # seconds, then SIP 504
    trusted_pcscfs = ["127.0.0.1"]                # P-Asserted-Identity only from these

    [[scf.service]]
    id = "urn:mbmsd:news"
    media = "video"
    port = 5000
    formats = ["96"]
    address = "127.0.0.1"
    attributes = ["rtpmap:96 H264/90000"]

    [[scf.subscription]]
    impu = "sip:user1@home1.net"
    services = ["urn:mbmsd:news"]
"""

import ipaddress
import re

from mbmsd import config as c
from mbmsd import overload
from mbmsd.protocols.identity import PUBLIC_ID, normalize_impu
from mbmsd.sip.listeners import (
    check_worker_ports,
    parse_udp_listen,
    tcp_listen_field,
    udp_listen_field,
    worker_ports_field,
)

__all__ = ["SCF_SECTION", "check_node", "effective_bmsc_url", "parse_udp_listen"]

SERVICE_ID = r"[!-~]{1,256}"


def _impu():
    pattern = c.string(PUBLIC_ID, "a SIP or tel URI such as 'sip:user1@home1.net'")

    def check(value):
        value = pattern(value)
        try:
            return normalize_impu(value)
        except ValueError:
            raise c.Invalid("must be a SIP or tel URI such as 'sip:user1@home1.net'") from None

    return check


LOCAL_BMSC = "local"


class DefaultBmscUrl(str):
    """
    The value of C{scf.bmsc_url} when the config leaves it out: equal to
    this URL, and read as L{LOCAL_BMSC} on a node that also runs the bmsc
    role (L{effective_bmsc_url}).
    """


DEFAULT_BMSC_URL = DefaultBmscUrl("http://127.0.0.1:1234")


def effective_bmsc_url(section, roles):
    """
    C{scf.bmsc_url} as the SCF uses it: "local", a URL or a list of them.

    @param roles: the node's C{node.roles}.
    """
    url = section["bmsc_url"]
    if isinstance(url, DefaultBmscUrl) and "bmsc" in roles:
        return LOCAL_BMSC
    return url


def _bmsc_urls():
    one = c.string(r"https?://[^\s/?#]+/?", "an http(s) base URL such as "
                   "'http://127.0.0.1:1234'")
    single = c.string(r"local|https?://[^\s/?#]+/?", "'local' (the bmsc role of this node) "
                      "or an http(s) base URL such as 'http://127.0.0.1:1234'")

    def check(value):
        if not isinstance(value, list):
            return single(value)
        if not value:
            raise c.Invalid("must name at least one URL")
        return c.array(one)(value)

    return check


def _sdp_line():
    # one SDP attribute value after "a=" (no line breaks)
    return c.string(r"[!-~][ -~]{0,250}", "printable text of one line")


def _connection_address():
    def check(value):
        if not isinstance(value, str):
            raise c.Invalid("must be an IP address, optionally '/ttl' (multicast)")
        address, _, rest = value.partition("/")
        try:
            ipaddress.ip_address(address)
        except ValueError:
            raise c.Invalid("must be an IP address, optionally '/ttl' (multicast)") from None
        if rest and not re.fullmatch(r"\d{1,3}(/\d{1,3})?", rest):
            raise c.Invalid("the part after '/' must be a TTL (and count)")
        return value

    return check


SERVICE_SECTION = c.Section(
    fields={
        "id": c.Field(c.string(SERVICE_ID, "an MBMS User Service ID such as 'urn:mbmsd:news'"),
                      c.REQUIRED, "MBMS User Service ID (the Request-URI's user part)"),
        "name": c.Field(c.string(r"[ -~]{1,100}", "printable text"), None,
                        "SDP s= line (default: the service ID)"),
        "media": c.Field(c.choice("video", "audio", "application", "text"), "video",
                         "SDP m= media type"),
        "port": c.Field(c.integer(1, 65535), 5000, "SDP m= port of the service's stream"),
        "protocol": c.Field(c.choice("RTP/AVP", "RTP/SAVP", "UDP", "FLUTE/UDP"), "RTP/AVP",
                            "SDP m= transport protocol"),
        "formats": c.Field(c.array(c.string(r"[!-~]{1,32}", "a format token such as '96'"),
                                   minimum=1), ["96"], "SDP m= formats (payload types)"),
        "address": c.Field(_connection_address(), "127.0.0.1",
                           "SDP c= address of the stream (multicast: 'ADDR/TTL')"),
        "attributes": c.Field(c.array(_sdp_line()), [],
                              "SDP a= lines, without 'a=' (e.g. 'rtpmap:96 H264/90000')"),
    }
)

SUBSCRIPTION_SECTION = c.Section(
    fields={
        "impu": c.Field(_impu(), c.REQUIRED, "the user's IMPU"),
        "services": c.Field(c.array(c.string(SERVICE_ID, "an MBMS User Service ID"), minimum=1),
                            c.REQUIRED, "MBMS User Service IDs the user is subscribed to"),
    }
)

SCF_SECTION = c.Section(
    fields={
        "udp_listen": udp_listen_field(5070),
        "tcp_listen": tcp_listen_field(5070),
        "worker_ports": worker_ports_field(5200),
        "advertised_host": c.Field(c.ip_address(), None,
                                   "address in our Contact and Via "
                                   "(default: the listen interface, 127.0.0.1 for 0.0.0.0)"),
        "service_domain": c.Field(c.fqdn(), None,
                                  "domain of the services' Request-URIs "
                                  "(default mbms.<home_domain>)"),
        "bmsc_url": c.Field(_bmsc_urls(), DEFAULT_BMSC_URL,
                            "'local': the bmsc role of this node, in-process (the default "
                            "there); or the BM-SC.UPF key management base URL, or a list of "
                            "them (nodes sharing one database; the next is tried when one "
                            "gives no answer); default elsewhere http://127.0.0.1:1234"),
        "bmsc_timeout": c.Field(c.number(0.1, 60), 5.0,
                                "seconds the BM-SC has to acknowledge (then SIP 504)"),
        "naf_fqdn": c.Field(c.fqdn(), None,
                            "the SCF's NAF FQDN in the SIP-based security procedure "
                            "(default scf.<home_domain>)"),
        "zn_url": c.Field(c.string(r"https?://.+", "an http(s) URL"), None,
                          "BSF Zn base URL of the SIP-based security procedure; default: "
                          "the BSF role of this node, in-process"),
        "zn_timeout": c.Field(c.number(0.1, 60), 5.0, "seconds to wait for Zn (then SIP 504)"),
        "retries": c.Field(c.integer(0, 5), 1,
                           "further attempts after a connection failure to the BM-SC"),
        "authorization_margin": c.Field(c.integer(0, 3600), 60,
                                        "seconds the BM-SC's authorization outlives the session "
                                        "interval"),
        "trusted_pcscfs": c.Field(c.array(c.ip_address()), ["127.0.0.1"],
                                  "addresses whose P-Asserted-Identity is honoured"),
        "session_expires": c.Field(c.integer(90, 86400), 1800,
                                   "RFC 4028 session interval we grant at most, seconds"),
        "min_se": c.Field(c.integer(90, 86400), 90,
                          "RFC 4028 shortest session interval we accept (else 422), seconds"),
        "max_message_size": c.Field(c.integer(1024, 65535), 65535,
                                    "bytes; larger messages are answered 413"),
        "t1": c.Field(c.number(0.05, 10), 0.5, "RFC 3261 T1, seconds"),
        # UEs reach the SCF through the trusted P-CSCFs (not bounded per peer)
        **overload.concurrency_fields(maxConcurrent=1000, perPeer=100),
        **overload.transaction_fields(maxTransactions=50_000),
    },
    arrays={"service": SERVICE_SECTION, "subscription": SUBSCRIPTION_SECTION},
)


def check_node(config):
    """
    The checks that span keys: services listed and unique, subscriptions
    naming known services, the session timer bounds, a listener, and, on
    a node that also runs the BM-SC, services it knows.
    """
    errors = []
    section = config.get("scf", {})
    services = section.get("service", [])
    ids = [s.get("id") for s in services]
    if not services:
        errors.append("scf.service: at least one [[scf.service]] is required")
    for dup in sorted({i for i in ids if ids.count(i) > 1 and i is not None}):
        errors.append("scf.service: duplicate MBMS User Service ID %r" % (dup,))
    for i, sub in enumerate(section.get("subscription", [])):
        for sid in sub.get("services", []):
            if sid not in ids:
                errors.append("scf.subscription[%d].services: unknown service %r "
                              "(not an [[scf.service]])" % (i, sid))
    lo, hi = section.get("min_se"), section.get("session_expires")
    if lo is not None and hi is not None and lo > hi:
        errors.append("scf.min_se: must be <= scf.session_expires (%d)" % (hi,))
    if section.get("udp_listen") == "" and section.get("tcp_listen") == "":
        errors.append("scf.udp_listen: UDP and TCP cannot both be off ('')")
    errors += check_worker_ports(config, "scf")
    if not section.get("bmsc_url"):
        errors.append("scf.bmsc_url: required (the BM-SC.UPF to authorize users at)")
    roles = config.get("node", {}).get("roles", ())
    if section.get("bmsc_url") == LOCAL_BMSC and "bmsc" not in roles:
        errors.append("scf.bmsc_url: 'local' needs the bmsc role on this node (node.roles); "
                      "a node without it names the BM-SC.UPF's URL")
    if "bmsc" in config.get("node", {}).get("roles", ()) and "bmsc" in config:
        known = {s.get("id") for s in config["bmsc"].get("service", [])}
        for i, sid in enumerate(ids):
            if sid is not None and sid not in known:
                errors.append("scf.service[%d].id: %r is not a service of the bmsc role "
                              "on this node" % (i, sid))
    return errors
