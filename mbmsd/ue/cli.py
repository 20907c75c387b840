"""
mbms-ue: the UE simulator and conformance client.

With no options it targets the all-in-one demo node (etc/mbmsd.toml) as the
demo subscriber. Every step prints one JSON line; the exit status is 0 only
when the procedure succeeded. Keys are printed only with --show-keys.
"""

import argparse
import base64
import sys

from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import react

from mbmsd import __version__, profile
from mbmsd.protocols import gba
from mbmsd.ue.steps import (
    DEMO_IMPI,
    DEMO_IMPU,
    DEMO_K,
    DEMO_SERVICE,
    _bootstrap_step,
    _bye_step,
    _closing,
    _describe,
    _failed,
    _hold,
    _invite_step,
    _register_step,
    _requester,
    _sip_open,
    _usim,
    emit,
    msk_record,
)


def _hex(length):
    def parse(text):
        try:
            raw = bytes.fromhex(text)
        except ValueError:
            raise argparse.ArgumentTypeError("not hex") from None
        if len(raw) != length:
            raise argparse.ArgumentTypeError(
                "must be %d bytes (%d hex digits)" % (length, 2 * length))
        return raw

    return parse


def build_parser():
    p = argparse.ArgumentParser(prog="mbms-ue", description=__doc__.strip().splitlines()[0])
    p.add_argument("--version", action="version", version="mbms-ue (mbmsd %s)" % (__version__,))
    sub = p.add_subparsers(dest="command", required=True)

    b = sub.add_parser("bootstrap", help="GBA bootstrapping over Ub: print the B-TID")
    _add_ub_options(b)
    b.add_argument("--naf", default="bmsc.home1.net", help="NAF FQDN for Ks_NAF")
    _add_ua_id_option(b)
    b.add_argument("--show-keys", action="store_true", help="also print Ks_NAF (base64)")
    b.add_argument("--timeout", type=float, default=10.0, help="seconds")

    m = sub.add_parser(
        "msk-register",
        help="bootstrap, register to MBMS user services at the BM-SC over Ua and wait "
             "for their MSKs over MIKEY")
    _add_ub_options(m)
    m.add_argument("--bmsc", default="http://127.0.0.1:1234",
                   help="base URL of the BM-SC key management (docs/design.md 7.5)")
    m.add_argument("--naf", default="bmsc.home1.net", help="the BM-SC's NAF FQDN")
    _add_ua_id_option(m)
    m.add_argument("--impu", default=DEMO_IMPU, help="sent as X-3GPP-Intended-Identity")
    m.add_argument("--service", action="append", default=None,
                   help="MBMS User Service ID (repeatable; default %s)" % (DEMO_SERVICE,))
    m.add_argument("--listen", default="127.0.0.1",
                   help="the UE's IP address: the MIKEY UDP port and the source of Ub and Ua")
    m.add_argument("--btid", default=None,
                   help="use this bootstrapping session (with --ks-naf) instead of "
                        "bootstrapping again, as a UE does while its B-TID lives")
    m.add_argument("--ks-naf", default=None, help="base64 Ks_NAF of --btid for this BM-SC")
    m.add_argument("--mikey-port", type=int, default=profile.MSK_UDP_PORT,
                   help="MIKEY UDP port (default %d)" % (profile.MSK_UDP_PORT,))
    m.add_argument("--wait", type=float, default=10.0,
                   help="seconds to wait for the MSKs after registering")
    m.add_argument("--show-keys", action="store_true", help="also print Ks_NAF and the MSKs")
    m.add_argument("--timeout", type=float, default=10.0, help="seconds per HTTP procedure")

    r = sub.add_parser("register", help="IMS registration at the P-CSCF (REGISTER with "
                                        "Digest AKAv1-MD5): print the registered IMPUs")
    _add_usim_options(r)
    _add_sip_options(r)
    _add_tls_options(r, http=False)
    r.add_argument("--timeout", type=float, default=10.0, help="seconds per SIP transaction")

    i = sub.add_parser("invite", help="register, then INVITE the MBMS user service through "
                                      "the P-CSCF; BYE after --hold seconds")
    _add_usim_options(i)
    _add_sip_options(i)
    _add_tls_options(i, http=False)
    _add_invite_options(i)
    i.add_argument("--hold", type=float, default=0.0,
                   help="seconds to keep the session before the BYE (default 0)")
    i.add_argument("--timeout", type=float, default=10.0, help="seconds per SIP transaction")

    w = sub.add_parser("run", help="the whole procedure: REGISTER, bootstrap, INVITE, MSK "
                                   "registration and MIKEY, BYE")
    _add_ub_options(w)
    _add_sip_options(w)
    _add_invite_options(w)
    w.add_argument("--bmsc", default="http://127.0.0.1:1234",
                   help="base URL of the BM-SC key management (docs/design.md 7.5)")
    w.add_argument("--naf", default="bmsc.home1.net", help="the BM-SC's NAF FQDN")
    _add_ua_id_option(w)
    w.add_argument("--listen", default=None,
                   help="address for the MIKEY UDP port (default: --local-ip)")
    w.add_argument("--mikey-port", type=int, default=profile.MSK_UDP_PORT,
                   help="MIKEY UDP port (default %d)" % (profile.MSK_UDP_PORT,))
    w.add_argument("--wait", type=float, default=10.0,
                   help="seconds to wait for the MSKs after registering")
    w.add_argument("--show-keys", action="store_true", help="also print Ks_NAF and the MSKs")
    w.add_argument("--hold", type=float, default=0.0,
                   help="seconds to keep the sessions after the MSK step, before the BYE "
                        "(default 0)")
    w.add_argument("--timeout", type=float, default=10.0,
                   help="seconds per HTTP procedure and per SIP transaction")
    w.add_argument("--sip-security", action="store_true",
                   help="TS 26.237's SIP-based security procedure: REGISTER, bootstrap, "
                        "INVITE naming the B-TID, the MSKs by MIKEY under MUK = Ks_NAF of "
                        "the SCF (Ua id 0100000004), BYE; no Ua step")
    w.add_argument("--scf-naf", default=None,
                   help="the SCF's NAF FQDN of --sip-security (default scf.<home domain>)")
    from mbmsd.ue import watch

    watch.add_parser(sub, w)  # run's options (added above) and its own
    return p


def _add_ua_id_option(parser):
    parser.add_argument(
        "--ua-id", type=_hex(5), default=gba.UA_PROTOCOL_26237_HTTP,
        help="Ua security protocol id of NAF_Id (hex, TS 33.220 H.3): default 0100000003 "
             "(TS 26.237 HTTP-based); 0100000001 for a UE following TS 33.246 alone")


def _add_ub_options(parser):
    parser.add_argument("--bsf", default="http://127.0.0.1:8080/", help="Ub URL of the BSF")
    _add_usim_options(parser)
    _add_tls_options(parser)


def _ca(path):
    from mbmsd.tls import TlsConfigError, _certificates

    try:
        _certificates(path)
    except TlsConfigError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return path


def _add_tls_options(parser, http=True):
    if http:
        parser.add_argument("--tls", action="store_true",
                            help="Ub and Ua over HTTPS (TS 33.222): http:// URLs, the "
                                 "defaults too, become https://")
    parser.add_argument("--ca", type=_ca, default=None,
                        help="PEM file of the CA certificates that sign the servers (HTTPS, "
                             "SIP over TLS); default: the system's trust roots")


def _add_usim_options(parser):
    parser.add_argument("--impi", default=DEMO_IMPI)
    parser.add_argument("--k", type=_hex(16), default=bytes.fromhex(DEMO_K), help="K (hex)")
    g = parser.add_mutually_exclusive_group()
    g.add_argument("--op", type=_hex(16), default=None, help="OP (hex)")
    g.add_argument("--opc", type=_hex(16), default=None, help="OPc (hex)")
    parser.add_argument("--sqn-ms", type=_hex(6), default=None,
                        help="the USIM's highest accepted SQN (hex): forces a resync when ahead")


def _pcscf(text):
    from mbmsd.ue.sip import parse_pcscf

    try:
        host, port, transport = parse_pcscf(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text, host, port, transport


def _add_sip_options(parser):
    parser.add_argument("--pcscf", type=_pcscf, default=_pcscf("sip:127.0.0.1:5060"),
                        help="the P-CSCF: sip:IP[:PORT][;transport=udp|tcp|tls] "
                             "(default sip:127.0.0.1:5060; tls: verified with --ca)")
    parser.add_argument("--impu", default=DEMO_IMPU, help="the public user identity")
    parser.add_argument("--domain", default=None,
                        help="home network domain, the REGISTER Request-URI "
                             "(default: the IMPI's realm)")
    parser.add_argument("--local-ip", default="127.0.0.1",
                        help="the UE's IP address: SIP socket, Via and Contact (the BM-SC "
                             "pushes MIKEY to it)")
    parser.add_argument("--local-port", type=int, default=0,
                        help="the UE's SIP port (default: any free one)")
    parser.add_argument("--expires", type=int, default=600, help="registration time, seconds")


def _add_invite_options(parser):
    parser.add_argument("--service", action="append", default=None,
                        help="MBMS User Service ID (repeatable; default %s)" % (DEMO_SERVICE,))
    parser.add_argument("--service-domain", default=None,
                        help="the services' Request-URI host (default mbms.<home domain>)")
    parser.add_argument("--media", action="append", default=None,
                        help="an SDP offer m= line without 'm=' (repeatable; default "
                             "'video 5000 RTP/AVP 96')")


@inlineCallbacks
def bootstrap(reactor, args):
    from mbmsd.ue.ub import BootstrapFailed, UbClient

    http = _requester(reactor, args)
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
    ownHttp = http is None
    if ownHttp:
        http = _requester(reactor, args)
    try:
        if args.btid is not None or args.ks_naf is not None:
            boot = _given_session(args)
        else:
            boot = yield _bootstrap_step(reactor, args, http, _usim(args))
        if boot is None:
            return 1
        code = yield _msk_step(reactor, args, http, *boot)
        return code
    finally:
        if ownHttp:
            yield http.close()


def _given_session(args):
    """--btid and --ks-naf: C{(session, Ks_NAF)}, or None after a failed line."""
    from types import SimpleNamespace

    try:
        if args.btid is None or args.ks_naf is None:
            raise ValueError("--btid and --ks-naf go together")
        ksNaf = base64.b64decode(args.ks_naf, validate=True)
        if len(ksNaf) != 32:
            raise ValueError("--ks-naf must be 32 bytes in base64")
    except ValueError as e:
        _failed("bootstrap", str(e))
        return None
    return SimpleNamespace(btid=args.btid), ksNaf


@inlineCallbacks
def _msk_step(reactor, args, http, boot, ksNaf, registerStep="register", during=None):
    """
    Bind the MIKEY port, register over Ua (its line is C{registerStep}) and
    wait for the MSKs; then, with C{during}, keep the port open (later MSKs
    arrive) for C{during(msks)}, whose Deferred exit status is the answer;
    C{msks} is {(Key Domain ID, MSK ID): MskDelivery}, kept up to date.
    @return: Deferred of the exit status.
    """
    from twisted.internet.defer import Deferred
    from twisted.internet.defer import TimeoutError as DeferredTimeout
    from twisted.internet.error import CannotListenError

    from mbmsd.ue.mikey_receiver import MikeyReceiver
    from mbmsd.ue.ua import UaClient

    services = args.service or [DEMO_SERVICE]
    port = None
    try:
        # the MIKEY port, bound before registering (docs/design.md 7.7: MUK = Ks_NAF, GBA_ME)
        arrived = {}  # (key domain id, MSK id) -> MskDelivery
        early = []  # deliveries before the register answer was printed
        state = {"registered": False, "need": None, "done": Deferred()}

        def show(delivery):
            emit(msk_record(delivery, args.show_keys))

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

        # Ua registration
        ua = UaClient(http, args.bmsc, args.naf, boot.btid, ksNaf, args.impu)
        try:
            d = ua.register(services)
            d.addTimeout(args.timeout, reactor)
            statuses = yield d
        except Exception as e:
            return _failed(registerStep, _describe(e),
                           status=getattr(e, "status", None))
        emit({"step": registerStep, "result": "ok", "services": dict(statuses)})
        state["registered"] = True
        for delivery in early:
            show(delivery)
        registered = [s for s, status in statuses if status == 200]
        if not registered:
            return _failed(registerStep, "the BM-SC registered none of the services")

        # the MSKs over MIKEY: one per registered service (the MSK message
        # names no service, so we count distinct (Key Domain ID, MSK ID))
        state["need"] = len(registered)
        check()
        try:
            yield state["done"].addTimeout(args.wait, reactor)
        except DeferredTimeout:
            rejected = {k: v for k, v in receiver.rejected.items() if v}
            return _failed("msk", "timed out after %gs: %d of %d MSKs arrived"
                           % (args.wait, len(arrived), len(registered)), rejected=rejected)
        if during is not None:
            code = yield during(arrived)
            return code
        return 0
    finally:
        if port is not None:
            yield port.stopListening()


# ---------------------------------------------------------------- SIP


@inlineCallbacks
def register(reactor, args):
    """IMS registration at the P-CSCF. @return: Deferred of the exit status."""
    opened = yield _sip_open(reactor, args)
    if opened is None:
        return 1
    reg = None
    try:
        reg = yield _register_step(reactor, args, opened[0], _usim(args))
        return 0 if reg is not None else 1
    finally:
        yield _closing(reg, opened)


@inlineCallbacks
def invite(reactor, args):
    """
    REGISTER, INVITE, keep the session for --hold seconds (re-registering
    as needed; a BYE from the network ends it early), BYE.
    """
    from twisted.internet.defer import DeferredList
    from twisted.internet.task import deferLater

    opened = yield _sip_open(reactor, args)
    if opened is None:
        return 1
    ua = opened[0]
    reg = None
    try:
        reg = yield _register_step(reactor, args, ua, _usim(args))
        if reg is None:
            return 1
        reg.keepAlive()
        sessions, ok = yield _invite_step(reactor, args, ua, reg)
        if sessions and args.hold > 0:
            waits = [deferLater(reactor, args.hold, lambda: None)]
            waits += [s.ended for s in sessions]
            yield DeferredList(waits, fireOnOneCallback=True, consumeErrors=True)
            for w in waits[:1]:
                w.cancel()
        byes = yield _bye_step(reactor, args, sessions)
        return 0 if ok and byes else 1
    finally:
        yield _closing(reg, opened)


@inlineCallbacks
def run(reactor, args, http=None, watch=None):
    """
    The whole procedure as a UE does it: REGISTER -> bootstrap (Ub), after
    a successful IMS registration (TS 26.237 10.1) -> INVITE (the SCF
    authorizes the UE at the BM-SC) -> MSK registration (Ua) and the MSKs
    over MIKEY -> BYE. One JSON line per step.

    With C{watch} (the C{watch} command), C{watch(sessions, msks)} runs
    with the MIKEY port still open, in place of the --hold.

    @return: Deferred of the exit status: 0 only when every MSK arrived and
        verified (and every other step succeeded).
    """
    if args.listen is None:
        args.listen = args.local_ip
    if args.sip_security:
        from mbmsd.ue.sipsecurity import run_sip_security

        code = yield run_sip_security(reactor, args, http)
        return code
    ownHttp = http is None
    if ownHttp:
        http = _requester(reactor, args)
    usim = _usim(args)  # one USIM: its SQN window spans Ub and REGISTER
    reg = opened = None
    sessions = []
    try:
        opened = yield _sip_open(reactor, args)
        if opened is None:
            return 1
        reg = yield _register_step(reactor, args, opened[0], usim)
        if reg is None:
            return 1
        reg.keepAlive()
        boot = yield _bootstrap_step(reactor, args, http, usim)
        if boot is None:
            return 1
        sessions, ok = yield _invite_step(reactor, args, opened[0], reg)
        if not ok:
            return 1
        during = None if watch is None else (lambda msks: watch(sessions, msks))
        code = yield _msk_step(reactor, args, http, *boot, registerStep="msk-register",
                               during=during)
        yield _hold(reactor, args.hold, sessions)  # with the MSKs or without
        byes = yield _bye_step(reactor, args, sessions)
        sessions = []
        return code if code else (0 if byes else 1)
    finally:
        if sessions:  # a failure after some INVITE succeeded: end them anyway
            try:
                yield _bye_step(reactor, args, sessions)
            except Exception:
                pass
        yield _closing(reg, opened)
        if ownHttp:
            yield http.close()


def watch(reactor, args):
    """The whole procedure (L{run}), then view the service (L{mbmsd.ue.watch})."""
    from mbmsd.ue import watch as viewing

    return run(reactor, args,
               watch=lambda sessions, msks: viewing.watch(reactor, args, sessions, msks, emit))


COMMANDS = {"bootstrap": bootstrap, "msk-register": msk_register, "register": register,
            "invite": invite, "run": run, "watch": watch}


def main(argv=None):
    args = build_parser().parse_args(argv)

    def run(reactor):
        d = COMMANDS[args.command](reactor, args)
        d.addCallback(lambda code: sys.exit(code) if code else None)
        return d

    react(run)
