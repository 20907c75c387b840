"""
The C{bsf} role's config schema: the [bsf] section and its cross-key checks.
"""

from mbmsd import config as c
from mbmsd import overload, tls

NAF_SECTION = c.Section(
    fields={
        "fqdn": c.Field(c.fqdn(), c.REQUIRED, "the NAF's FQDN (the FQDN part of its NAF_Id)"),
        "addresses": c.Field(c.array(c.ip_address()), [],
                             "source addresses the NAF's Zn requests come from; a TLS client "
                             "certificate for the FQDN, verified against bsf.tls.ca, is "
                             "trusted too"),
    }
)

BSF_SECTION = c.Section(
    fields={
        "ub_listen": c.Field(c.endpoint(), "tcp:8080:interface=127.0.0.1", "Ub listener"),
        "zn_listen": c.Field(c.endpoint(), "tcp:8081:interface=127.0.0.1", "Zn listener"),
        "domain": c.Field(c.fqdn(), None,
                          "BSF domain in B-TIDs and the Ub realm (default bsf.<home_domain>)"),
        "key_lifetime": c.Field(c.integer(60, 7 * 86400), 3600, "Ks lifetime, seconds"),
        "challenge_lifetime": c.Field(c.integer(5, 600), 30,
                                      "seconds a Ub nonce may be answered"),
        **overload.auth_fields(perImpi=5, perSource=100, window=300),
        **overload.concurrency_fields(maxConcurrent=1000, perPeer=100),
        "prune_interval": c.Field(c.integer(1, 86400), 60,
                                  "seconds between removals of expired sessions"),
    },
    # [bsf.tls]: Ub and Zn over HTTPS; with ca, NAFs may show a client certificate
    tables={"tls": tls.TLS_SECTION},
    arrays={"naf": NAF_SECTION},
)


def check_node(config):
    section = config["bsf"]
    errors = tls.check(section["tls"], "bsf.tls")
    for i, naf in enumerate(section["naf"]):
        if not naf["addresses"] and section["tls"]["ca"] is None:
            errors.append("bsf.naf[%d].addresses: required unless bsf.tls.ca lets the NAF "
                          "show a client certificate" % (i,))
    return errors
