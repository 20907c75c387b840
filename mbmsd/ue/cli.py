"""
mbms-ue: the UE simulator and conformance client.

With no options it targets the all-in-one demo node (etc/mbmsd.toml) as the
demo subscriber. Every step prints one JSON line; the exit status is 0 only
when the procedure succeeded. Keys are printed only with --show-keys.
"""

import argparse
import base64
import json
import sys

from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import react

from mbmsd import profile
from mbmsd.protocols import gba, milenage

# DESIGN 3: the demo subscriber holds the public TS 35.208 test set 1 keys.
DEMO_IMPI = "user1@home1.net"
DEMO_K = "465b5ce8b199b49faa5f0a2ee238a6bc"
DEMO_OP = "cdc202d5123e20f62b6d676ac72cb318"
DEMO_IMPU = "sip:user1@home1.net"
DEMO_SERVICE = "urn:mbmsd:news"


def _hex(length):
    def parse(text):
        try:
            raw = bytes.fromhex(text)
        except ValueError:
            raise argparse.ArgumentTypeError("not hex") from None
        if len(raw) != length:
            raise argparse.ArgumentTypeError("must be %d bytes (%d hex digits)" % (length, 2 * length))
        return raw

    return parse


def build_parser():
    p = argparse.ArgumentParser(prog="mbms-ue", description=__doc__.strip().splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    b = sub.add_parser("bootstrap", help="GBA bootstrapping over Ub: print the B-TID")
    _add_ub_options(b)
    b.add_argument("--naf", default="bmsc.home1.net", help="NAF FQDN for Ks_NAF")
    b.add_argument("--ua-id", type=_hex(5), default=gba.UA_PROTOCOL_MBMS,
                   help="Ua security protocol id (hex, TS 33.220 H.3); default 0100000001 (MBMS)")
    b.add_argument("--show-keys", action="store_true", help="also print Ks_NAF (base64)")
    b.add_argument("--timeout", type=float, default=10.0, help="seconds")

    m = sub.add_parser(
        "msk-register",
        help="bootstrap, register to MBMS user services at the BM-SC over Ua and wait "
             "for their MSKs over MIKEY")
    _add_ub_options(m)
    m.add_argument("--bmsc", default="http://127.0.0.1:1234",
                   help="base URL of the BM-SC key management (DESIGN 8.4)")
    m.add_argument("--naf", default="bmsc.home1.net", help="the BM-SC's NAF FQDN")
    m.add_argument("--impu", default=DEMO_IMPU, help="sent as X-3GPP-Intended-Identity")
    m.add_argument("--service", action="append", default=None,
                   help="MBMS User Service ID (repeatable; default %s)" % (DEMO_SERVICE,))
    m.add_argument("--listen", default="127.0.0.1", help="address for the MIKEY UDP port")
    m.add_argument("--mikey-port", type=int, default=profile.MSK_UDP_PORT,
                   help="MIKEY UDP port (default %d)" % (profile.MSK_UDP_PORT,))
    m.add_argument("--wait", type=float, default=10.0,
                   help="seconds to wait for the MSKs after registering")
    m.add_argument("--show-keys", action="store_true", help="also print Ks_NAF and the MSKs")
    m.add_argument("--timeout", type=float, default=10.0, help="seconds per HTTP procedure")
    return p


def _add_ub_options(parser):
    parser.add_argument("--bsf", default="http://127.0.0.1:8080/", help="Ub URL of the BSF")
    parser.add_argument("--impi", default=DEMO_IMPI)
    parser.add_argument("--k", type=_hex(16), default=bytes.fromhex(DEMO_K), help="K (hex)")
    g = parser.add_mutually_exclusive_group()
    g.add_argument("--op", type=_hex(16), default=None, help="OP (hex)")
    g.add_argument("--opc", type=_hex(16), default=None, help="OPc (hex)")
    parser.add_argument("--sqn-ms", type=_hex(6), default=None,
                        help="the USIM's highest accepted SQN (hex): forces a resync when ahead")


def _usim(args):
    from mbmsd.ue.ub import Usim

    op = args.op if args.op is not None else (None if args.opc else bytes.fromhex(DEMO_OP))
    opc = args.opc if args.opc is not None else milenage.compute_opc(args.k, op)
    sqnMs = milenage.sqn_to_int(args.sqn_ms) if args.sqn_ms is not None else None
    return Usim(args.k, opc, sqnMs)


def emit(record, out=None):
    out = out or sys.stdout
    out.write(json.dumps(record, sort_keys=True) + "\n")
    out.flush()


@inlineCallbacks
def bootstrap(reactor, args):
    from mbmsd.ue.http import AgentRequester
    from mbmsd.ue.ub import BootstrapFailed, UbClient

    http = AgentRequester(reactor, timeout=args.timeout)
    client = UbClient(http, args.bsf, args.impi, _usim(args))
    try:
        d = client.bootstrap()
        d.addTimeout(args.timeout, reactor)
        result = yield d
    except BootstrapFailed as e:
        emit({"step": "bootstrap", "result": "failed", "error": str(e)})
        return 1
    except Exception as e:
        emit({"step": "bootstrap", "result": "failed",
              "error": "%s: %s" % (e.__class__.__name__, e)})
        return 1
    finally:
        yield http.close()
    record = {
        "step": "bootstrap", "result": "ok", "impi": args.impi, "btid": result.btid,
        "lifetime": gba.format_utc(result.lifetime), "resynchronised": result.resynchronised,
        "naf": args.naf,
    }
    if args.show_keys:
        nafId = gba.naf_id(args.naf, args.ua_id)
        record["ksNaf"] = base64.b64encode(result.ksNaf(nafId)).decode("ascii")
        record["nafId"] = nafId.hex()
    emit(record)
    return 0


def _failed(step, error, **extra):
    record = {"step": step, "result": "failed", "error": error}
    record.update(extra)
    emit(record)
    return 1


def _describe(e):
    from mbmsd.ue.ua import UaFailed
    from mbmsd.ue.ub import BootstrapFailed

    if isinstance(e, (BootstrapFailed, UaFailed)):
        return str(e)
    return "%s: %s" % (e.__class__.__name__, e)


@inlineCallbacks
def msk_register(reactor, args, http=None):
    """
    Bootstrap (Ub) -> bind the MIKEY port -> register (Ua) -> wait until an
    MSK arrived (and, when asked, its verification went back) for every
    service the BM-SC registered with status 200. One JSON line per step.

    @param reactor: provides IReactorTime and IReactorUDP.
    @param http: the HTTP requester (default: an AgentRequester, closed at the end).
    @return: Deferred firing with the exit status, 0 only when every MSK arrived.
    """
    from twisted.internet.defer import Deferred, TimeoutError as DeferredTimeout
    from twisted.internet.error import CannotListenError

    from mbmsd.ue.http import AgentRequester
    from mbmsd.ue.mikey_receiver import MikeyReceiver
    from mbmsd.ue.ua import UaClient
    from mbmsd.ue.ub import UbClient

    services = args.service or [DEMO_SERVICE]
    ownHttp = http is None
    if ownHttp:
        http = AgentRequester(reactor, timeout=args.timeout)
    port = None
    try:
        # 1. Ub
        try:
            d = UbClient(http, args.bsf, args.impi, _usim(args)).bootstrap()
            d.addTimeout(args.timeout, reactor)
            boot = yield d
        except Exception as e:
            return _failed("bootstrap", _describe(e))
        nafId = gba.naf_id(args.naf, gba.UA_PROTOCOL_MBMS)
        ksNaf = boot.ksNaf(nafId)
        record = {
            "step": "bootstrap", "result": "ok", "impi": args.impi, "btid": boot.btid,
            "lifetime": gba.format_utc(boot.lifetime), "resynchronised": boot.resynchronised,
            "naf": args.naf,
        }
        if args.show_keys:
            record["ksNaf"] = base64.b64encode(ksNaf).decode("ascii")
            record["nafId"] = nafId.hex()
        emit(record)

        # 2. the MIKEY port, bound before registering (DESIGN 8.6: MUK = Ks_NAF, GBA_ME)
        arrived = {}  # (key domain id, MSK id) -> MskDelivery
        early = []  # deliveries before the register answer was printed
        state = {"registered": False, "need": None, "done": Deferred()}

        def show(delivery):
            out = {"step": "msk", "result": "ok",
                   "keyDomainId": delivery.key_domain_id.hex(),
                   "mskId": delivery.msk_id.hex(), "counter": delivery.counter,
                   "verification": "sent" if delivery.v else "not requested"}
            if args.show_keys:
                out["msk"] = delivery.msk.hex()
            emit(out)

        def check():
            need = state["need"]
            if need is not None and len(arrived) >= need and not state["done"].called:
                state["done"].callback(None)

        def onDelivery(delivery):
            arrived[(delivery.key_domain_id, delivery.msk_id)] = delivery
            if state["registered"]:
                show(delivery)
                check()
            else:
                early.append(delivery)

        receiver = MikeyReceiver(ksNaf, onDelivery)
        try:
            port = reactor.listenUDP(args.mikey_port, receiver, interface=args.listen)
        except CannotListenError as e:
            return _failed("listen", "cannot bind UDP %s:%d: %s"
                           % (args.listen, args.mikey_port, e.socketError))

        # 3. Ua registration
        ua = UaClient(http, args.bmsc, args.naf, boot.btid, ksNaf, args.impu)
        try:
            d = ua.register(services)
            d.addTimeout(args.timeout, reactor)
            statuses = yield d
        except Exception as e:
            return _failed("register", _describe(e),
                           status=getattr(e, "status", None))
        emit({"step": "register", "result": "ok", "services": dict(statuses)})
        state["registered"] = True
        for delivery in early:
            show(delivery)
        registered = [s for s, status in statuses if status == 200]
        if not registered:
            return _failed("register", "the BM-SC registered none of the services")

        # 4. the MSKs over MIKEY: one per registered service (the MSK message
        # names no service, so we count distinct (Key Domain ID, MSK ID))
        state["need"] = len(registered)
        check()
        try:
            yield state["done"].addTimeout(args.wait, reactor)
        except DeferredTimeout:
            rejected = {k: v for k, v in receiver.rejected.items() if v}
            return _failed("msk", "timed out after %gs: %d of %d MSKs arrived"
                           % (args.wait, len(arrived), len(registered)), rejected=rejected)
        return 0
    finally:
        if port is not None:
            yield port.stopListening()
        if ownHttp:
            yield http.close()


COMMANDS = {"bootstrap": bootstrap, "msk-register": msk_register}


def main(argv=None):
    args = build_parser().parse_args(argv)

    def run(reactor):
        d = COMMANDS[args.command](reactor, args)
        d.addCallback(lambda code: sys.exit(code) if code else None)
        return d

    react(run)
