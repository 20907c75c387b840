"""
Provisioning shared by the node, the admin API and C{mbmsd-admin}: the
config's tables as a seed written to storage, and one reading of a
subscriber's fields (from TOML, JSON or CSV) into a L{Subscriber}.

The config's C{[[subscriber]]}, C{[[scf.service]]}, C{[[bmsc.service]]} and
C{[[scf.subscription]]} tables are written to storage at start (and again
on reload: L{seedFromConfig} is the one function doing it); at run time
every role reads storage, so what the admin API writes is seen by every
node sharing the database at its next request.
"""

import dataclasses
import re

from twisted.internet.defer import inlineCallbacks

from mbmsd.logs import Logger
from mbmsd.protocols.identity import is_impi, is_impu, normalize_impu
from mbmsd.storage.records import MbmsService, Subscriber

log = Logger(namespace="mbmsd.provisioning")

SERVICE_ID = r"[!-~]{1,256}"

_SERVICE_ID = re.compile(SERVICE_ID)


class FieldError(ValueError):
    """
    A provisioned value is wrong: C{field} names it, the message says how.
    """

    def __init__(self, field, problem):
        ValueError.__init__(self, "%s: %s" % (field, problem))
        self.field = field
        self.problem = problem


def _hex(field, value, length, required=True):
    if value is None or value == "":
        if required:
            raise FieldError(field, "missing (required)")
        return None
    if not isinstance(value, str):
        raise FieldError(field, "must be a hex string of %d bytes" % (length,))
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise FieldError(field, "must be a hex string of %d bytes" % (length,)) from None
    if len(raw) != length:
        raise FieldError(field, "must be %d bytes (%d hex digits)" % (length, 2 * length))
    return raw


def check_impi(value, field="impi"):
    if not is_impi(value):
        raise FieldError(field, "must be an NAI such as 'user1@home1.net'")
    return value


def check_impus(value, field="impus"):
    if not isinstance(value, (list, tuple)) or not value:
        raise FieldError(field, "must be a non-empty list of SIP or tel URIs")
    seen = set()
    for i, impu in enumerate(value):
        try:
            seen.add(normalize_impu(impu) if is_impu(impu) else None)
        except ValueError:
            seen.add(None)
        if None in seen:
            raise FieldError(field, "item %d: must be a SIP or tel URI" % (i,))
    if len(seen) != len(value):
        raise FieldError(field, "lists an IMPU twice")
    return tuple(value)


def check_service_id(value, field="id"):
    if not isinstance(value, str) or not _SERVICE_ID.fullmatch(value):
        raise FieldError(field, "must be an MBMS User Service ID such as 'urn:mbmsd:news'")
    return value


def check_key_group(value, field="key_group"):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 0xFFFF:
        raise FieldError(field, "must be an integer 0..65535 (or null: from the ID)")
    return value


def subscriber_from_fields(values, old=None):
    """
    A L{Subscriber} from hex text fields (C{impi}, C{impus}, C{k}, C{op} or
    C{opc}, C{amf}, C{sqn}), as the API's JSON and the import's CSV give
    them. With C{old}, fields left out keep its values (an update); C{k}
    then needs C{op} or C{opc} again, since OPc is derived from K and OP.

    @raise FieldError: naming the first wrong field (never its value).
    """
    from mbmsd.protocols.milenage import compute_opc

    def given(name):
        return values.get(name) not in (None, "")

    impi = check_impi(values.get("impi")) if old is None else old.impi
    impus = (check_impus(values.get("impus")) if old is None or "impus" in values
             else old.impus)
    if given("op") and given("opc"):
        raise FieldError("opc", "give one of op and opc, not both")
    if old is None or given("k"):
        k = _hex("k", values.get("k"), 16)
        if not given("op") and not given("opc"):
            raise FieldError("opc", "give op or opc (with k)")
    else:
        k = old.k
    if given("op"):
        opc = compute_opc(k, _hex("op", values["op"], 16))
    elif given("opc"):
        opc = _hex("opc", values["opc"], 16)
    else:
        opc = old.opc
    amf = _hex("amf", values.get("amf"), 2, required=False)
    if amf is None:
        amf = bytes.fromhex("8000") if old is None else old.amf
    sqn = _hex("sqn", values.get("sqn"), 6, required=False)
    sqn = int.from_bytes(sqn, "big") if sqn is not None else (0 if old is None else old.sqn)
    if old is not None:
        return dataclasses.replace(old, impus=impus, k=k, opc=opc, amf=amf, sqn=sqn)
    return Subscriber(impi=impi, impus=impus, k=k, opc=opc, amf=amf, sqn=sqn)


def subscribersFromConfig(config):
    """The config's [[subscriber]] tables as L{Subscriber}s."""
    from mbmsd.protocols.milenage import compute_opc

    for sub in config.get("subscriber", ()):
        opc = sub["opc"] if sub["opc"] is not None else compute_opc(sub["k"], sub["op"])
        yield Subscriber(
            impi=sub["impi"], impus=tuple(sub["impus"]), k=sub["k"], opc=opc,
            amf=sub["amf"], sqn=int.from_bytes(sub["sqn"], "big"),
        )


def scf_description(table):
    """What storage keeps of an [[scf.service]] table: all but its ID and
    the keys left to their default (None)."""
    return {k: v for k, v in table.items() if k != "id" and v is not None}


@inlineCallbacks
def seedFromConfig(config, storage, running=lambda: True, logged=True):
    """
    Write the config's provisioning tables to storage: subscribers (a stored
    SQN ahead is kept), services (the [[bmsc.service]] Key Group and the
    [[scf.service]] description, each kept from storage when this node's
    config has no such table) and subscriptions (the config's list replaces
    the stored one of each IMPU it names). Rows the config does not name are
    left alone: the API's.

    @param running: checked between writes; False stops the seeding (the
        node was stopped meanwhile).
    @param logged: log what was written (a reload logs its own one line).
    @return: Deferred firing with C{(subscribers, services, subscriptions)}
        written.
    """
    subscribers = 0
    for subscriber in subscribersFromConfig(config):
        if not running():
            return subscribers, 0, 0
        yield storage.subscribers.provision(subscriber)
        subscribers += 1

    keyGroups, descriptions = {}, {}
    if "bmsc" in config:
        keyGroups = {s["id"]: s["key_group"] for s in config["bmsc"].get("service", ())}
    if "scf" in config:
        descriptions = {s["id"]: scf_description(s) for s in config["scf"].get("service", ())}
    services = 0
    for serviceId in sorted(set(keyGroups) | set(descriptions)):
        if not running():
            return subscribers, services, 0
        old = yield storage.provisioning.getService(serviceId)
        keep = old if old is not None else MbmsService(serviceId)
        yield storage.provisioning.putService(MbmsService(
            serviceId,
            keyGroups[serviceId] if serviceId in keyGroups else keep.keyGroup,
            descriptions[serviceId] if serviceId in descriptions else keep.sdp))
        services += 1

    table = {}
    for entry in (config.get("scf") or {}).get("subscription", ()):
        table.setdefault(entry["impu"], set()).update(entry["services"])
    for impu in sorted(table):
        if not running():
            break
        yield storage.provisioning.setSubscriptions(impu, sorted(table[impu]))
    if logged and (subscribers or services or table):
        log.info("provisioned from the config: {n} subscriber(s), {s} service(s), "
                 "{i} IMPU subscription(s)", n=subscribers, s=services, i=len(table))
    return subscribers, services, len(table)
