"""
The C{bmsc} role's config schema: the [bmsc] section and its cross-key checks.
"""

from mbmsd import config as c
from mbmsd import overload, tls


def udp_address(ipv4=False):
    """A UDP address 'HOST:PORT' (IPv6 as '[HOST]:PORT'), returned as (host, port)."""
    import ipaddress

    def check(value):
        if not isinstance(value, str):
            raise c.Invalid("must be a string 'HOST:PORT'")
        host, sep, port = value.rpartition(":")
        if not sep or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise c.Invalid("must be 'IP:PORT' with a port 1..65535")
        host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            raise c.Invalid("must be 'IP:PORT' with an IP address") from None
        if ipv4 and address.version != 4:
            raise c.Invalid("must be an IPv4 address and port")
        return (str(address), int(port))

    return check


SERVICE_SECTION = c.Section(
    fields={
        "id": c.Field(c.string(r"[!-~]{1,256}", "an MBMS User Service ID such as 'urn:mbmsd:news'"),
                      c.REQUIRED, "MBMS User Service ID"),
        "key_group": c.Field(c.integer(0, 0xFFFF), None,
                             "Key Group part of the service's MSK IDs (default: from the ID)"),
        # a streaming service (RFC 4563 2): plain RTP in, SRTP under the MTK out
        "media_source": c.Field(udp_address(), None,
                                "'IP:PORT' where the content provider's plain RTP arrives "
                                "(streaming service; with bearer)"),
        "bearer": c.Field(udp_address(ipv4=True), None,
                          "'IP:PORT' of the MBMS bearer: multicast group (or a unicast address) "
                          "and port the SRTP packets go to"),
        "bearer_key_port": c.Field(c.integer(1, 65535), None,
                                   "UDP port of the bearer the MTK messages go to (default 2269)"),
        "bearer_ttl": c.Field(c.integer(1, 255), 1, "multicast TTL of the bearer"),
        "bearer_interface": c.Field(c.ip_address(), None,
                                    "IPv4 address of the interface the bearer leaves from "
                                    "(default bmsc.mikey_interface)"),
        "mtk_rotation": c.Field(c.number(1, 86400), 60.0, "seconds between MTKs"),
        "mtk_repeat": c.Field(c.number(0.1, 3600), 1.0,
                              "seconds between MTK messages of the current MTK (a late joiner "
                              "waits at most this)"),
        "max_packet_rate": c.Field(c.integer(1, 1000000), 5000,
                                   "content packets per second forwarded at most; more are "
                                   "dropped"),
    }
)

# Ua security protocol ids a BM-SC may accept on Ua (TS 33.220 H.3): TS 26.237's
# HTTP-based procedure, and TS 33.246 alone for UEs that follow only it
UA_IDS = {"0100000003": "TS 26.237 HTTP-based", "0100000001": "TS 33.246"}


def _ua_id(value):
    if not isinstance(value, str) or value.lower() not in UA_IDS:
        raise c.Invalid("must be one of %s" % (", ".join(
            "%r (%s)" % item for item in UA_IDS.items()),))
    return bytes.fromhex(value)


def streaming(service):
    """Whether a [[bmsc.service]] is a streaming service (names a bearer)."""
    return service.get("bearer") is not None


# the keys of a [[bmsc.service]] that make its stream (sockets and MTK
# schedule, set up at start): a reload cannot change them
STREAM_KEYS = ("media_source", "bearer", "bearer_key_port", "bearer_ttl", "bearer_interface",
               "mtk_rotation", "mtk_repeat", "max_packet_rate")


def streams(section):
    """{service ID: its STREAM_KEYS} of the streaming services of [bmsc]."""
    return {s["id"]: {k: s[k] for k in STREAM_KEYS}
            for s in section["service"] if streaming(s)}

BMSC_SECTION = c.Section(
    fields={
        "listen": c.Field(c.endpoint(), "tcp:1234:interface=127.0.0.1",
                          "HTTP key management listener (authorize, register, ...)"),
        "naf_fqdn": c.Field(c.fqdn(), None, "the BM-SC's NAF FQDN (default bmsc.<home_domain>)"),
        "mcc": c.Field(c.string(r"[0-9]{3}", "three digits"), "001", "MCC of the Key Domain ID"),
        "mnc": c.Field(c.string(r"[0-9]{2,3}", "two or three digits"), "01",
                       "MNC of the Key Domain ID"),
        "trusted_scfs": c.Field(c.array(c.ip_address()), [],
                                "addresses whose X-3GPP-Asserted-Identity is honoured"),
        "trusted_scf_names": c.Field(c.array(c.fqdn()), [],
                                     "SCFs trusted by their TLS client certificate (its DNS "
                                     "name, verified against bmsc.tls.ca)"),
        "zn_url": c.Field(c.string(r"https?://.+", "an http(s) URL"), None,
                          "BSF Zn base URL; default: the BSF role of this node, in-process"),
        "zn_timeout": c.Field(c.number(0.1, 60), 5.0, "seconds to wait for Zn"),
        "mikey_interface": c.Field(c.ip_address(), "127.0.0.1", "source address of MIKEY pushes"),
        "mikey_source_port": c.Field(c.integer(0, 65535), 0,
                                     "UDP source port of MIKEY pushes (0: any); "
                                     "verifications come back here"),
        "ue_mikey_port": c.Field(c.integer(1, 65535), None,
                                 "UE UDP port for MSK messages (default: profile, 4359)"),
        "authorization_lifetime": c.Field(c.integer(10, 7 * 86400), 3600,
                                          "seconds, when the SCF gives none"),
        "msk_lifetime": c.Field(c.integer(60, 30 * 86400), 86400, "seconds an MSK is valid"),
        "msk_rotation": c.Field(c.integer(10, 30 * 86400), 3600,
                                "seconds between MSK rotations of each service"),
        "lease_duration": c.Field(c.number(1, 3600), 30.0,
                                  "seconds a node holds a service's MSK rotation lease in the "
                                  "database without renewing it (the takeover time when it dies)"),
        "rotation_shards": c.Field(c.integer(1, 4096), 1,
                                   "shards of each service's registered UEs, each with its own "
                                   "rotation lease, so several nodes push one rotation (the "
                                   "same on every node of a database)"),
        "lease_renewal": c.Field(c.number(0.1, 3600), None,
                                 "seconds between renewals (default lease_duration / 3)"),
        "ua_ids": c.Field(c.array(_ua_id, minimum=1), [bytes.fromhex("0100000003")],
                          "Ua security protocol ids (TS 33.220 H.3) whose Ks_NAF the Ua "
                          "Digest check accepts, tried in this order; add 0100000001 to also "
                          "serve UEs following TS 33.246 alone"),
        "nonce_lifetime": c.Field(c.integer(5, 3600), 60, "seconds a Ua Digest nonce is valid"),
        "prune_interval": c.Field(c.integer(1, 86400), 60,
                                  "seconds between removals of expired state"),
        **overload.concurrency_fields(maxConcurrent=1000, perPeer=100),
        **overload.auth_fields(perImpi=5, perSource=100, window=300),
    },
    # [bmsc.tls]: key management over HTTPS; with ca, SCFs may show a client certificate
    tables={"tls": tls.TLS_SECTION},
    arrays={"service": SERVICE_SECTION},
)


def lease_renewal(section):
    """Seconds between renewals of the MSK rotation leases."""
    if section.get("lease_renewal") is not None:
        return section["lease_renewal"]
    return section["lease_duration"] / 3.0


def check_node(config):
    section = config["bmsc"]
    errors = tls.check(section["tls"], "bmsc.tls")
    if section["trusted_scf_names"] and section["tls"]["ca"] is None:
        errors.append("bmsc.trusted_scf_names: needs bmsc.tls.ca (the CA of the SCFs' "
                      "client certificates)")
    if not section["zn_url"] and "bsf" not in config["node"]["roles"]:
        errors.append("bmsc.zn_url: required when the bsf role is not on this node")
    if not section["service"]:
        errors.append("bmsc.service: at least one [[bmsc.service]] is required")
    ids = [s["id"] for s in section["service"]]
    for dup in sorted({i for i in ids if ids.count(i) > 1}):
        errors.append("bmsc.service: duplicate MBMS User Service ID %r" % (dup,))
    if len(set(section["ua_ids"])) != len(section["ua_ids"]):
        errors.append("bmsc.ua_ids: an id is listed twice")
    for i, s in enumerate(section["service"]):
        where = "bmsc.service[%d]" % (i,)
        if (s["media_source"] is None) != (s["bearer"] is None):
            errors.append("%s.media_source: a streaming service names both media_source "
                          "and bearer" % (where,))
        if s["bearer"] is not None and s["mtk_repeat"] > s["mtk_rotation"]:
            errors.append("%s.mtk_repeat: must not be longer than mtk_rotation (%g s)"
                          % (where, s["mtk_rotation"]))
        interface = s["bearer_interface"] or section["mikey_interface"]
        if s["bearer"] is not None and ":" in interface:
            errors.append("%s.bearer_interface: must be an IPv4 address (the bearer is "
                          "IPv4)" % (where,))
    if lease_renewal(section) >= section["lease_duration"]:
        errors.append("bmsc.lease_renewal: must be shorter than bmsc.lease_duration (%g s), "
                      "or the lease runs out between renewals" % (section["lease_duration"],))
    return errors
