"""
The steps of mbms-ue's commands, each printing its JSON line: the HTTP
requester, the USIM, bootstrap (Ub), the SIP steps (open, REGISTER, INVITE,
BYE, close) and the MSK record. L{mbmsd.ue.cli} and
L{mbmsd.ue.sipsecurity} both compose them.
"""

import base64
import json
import sys

from twisted.internet.defer import inlineCallbacks

from mbmsd.protocols import gba, milenage

# docs/design.md 4.2: the demo subscriber holds the public TS 35.208 test set 1 keys.
DEMO_IMPI = "user1@home1.net"
DEMO_K = "465b5ce8b199b49faa5f0a2ee238a6bc"
DEMO_OP = "cdc202d5123e20f62b6d676ac72cb318"
DEMO_IMPU = "sip:user1@home1.net"
DEMO_SERVICE = "urn:mbmsd:news"


def _requester(reactor, args):
    """The UE's HTTP requester; with --tls the Ub and Ua URLs use https."""
    from mbmsd.tls import clientPolicy
    from mbmsd.ue.http import AgentRequester

    if getattr(args, "tls", False):
        for name in ("bsf", "bmsc"):
            url = getattr(args, name, None)
            if url and url.lower().startswith("http://"):
                setattr(args, name, "https://" + url[len("http://"):])
    policy = clientPolicy(ca=args.ca) if getattr(args, "ca", None) else None
    # the UE's one IP (--listen, --local-ip for run): the BM-SC checks Ua
    # requests against the IP the SCF authorized
    source = getattr(args, "listen", None)
    return AgentRequester(reactor, timeout=args.timeout, tlsPolicy=policy,
                          bindAddress=source if source not in ("0.0.0.0", "::") else None)


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
def _bootstrap_step(reactor, args, http, usim):
    """
    Ub, and its JSON line. @return: Deferred of C{(Bootstrapped, Ks_NAF)},
    or None after printing the failure.
    """
    from mbmsd.ue.ub import UbClient

    try:
        d = UbClient(http, args.bsf, args.impi, usim).bootstrap()
        d.addTimeout(args.timeout, reactor)
        boot = yield d
    except Exception as e:
        _failed("bootstrap", _describe(e))
        return None
    nafId = gba.naf_id(args.naf, args.ua_id)
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
    return boot, ksNaf


def msk_record(delivery, showKeys):
    """The JSON line of an MSK that arrived (the MSK itself only when asked)."""
    out = {"step": "msk", "result": "ok",
           "keyDomainId": delivery.key_domain_id.hex(),
           "mskId": delivery.msk_id.hex(), "counter": delivery.counter,
           "verification": "sent" if delivery.v else "not requested"}
    if showKeys:
        out["msk"] = delivery.msk.hex()
    return out


def _sip_describe(e):
    from twisted.internet.defer import TimeoutError as DeferredTimeout

    from mbmsd.ue.sip import InviteFailed, RegistrationFailed

    if isinstance(e, (RegistrationFailed, InviteFailed)):
        return str(e)
    if isinstance(e, DeferredTimeout):
        return "no final answer in time"
    return "%s: %s" % (e.__class__.__name__, e)


@inlineCallbacks
def _sip_open(reactor, args):
    """The UE's SIP socket to the P-CSCF: C{(ua, close)}, or None after a failed line."""
    from mbmsd.ue.sip import connect_tcp, open_udp

    _, host, port, transport = args.pcscf
    try:
        if transport == "UDP":
            ua, close = open_udp(reactor, (host, port), args.local_ip, args.local_port)
        else:
            creator = None
            if transport == "TLS":
                from mbmsd.tls import clientPolicy

                # the P-CSCF's certificate must name its address (RFC 3261 26.3.1)
                creator = clientPolicy(ca=args.ca).creatorForNetloc(host.encode("ascii"), port)
            ua, close = yield connect_tcp(reactor, (host, port), args.local_ip,
                                          args.local_port, timeout=args.timeout, tls=creator)
    except Exception as e:
        _failed("register", "cannot open the SIP %s socket to %s:%d: %s"
                % (transport, host, port, e))
        return None
    return ua, close


@inlineCallbacks
def _register_step(reactor, args, ua, usim):
    """REGISTER and its line. @return: the L{ImsRegistration}, or None."""
    from mbmsd.ue.sip import ImsRegistration

    reg = ImsRegistration(ua, args.impi, args.impu, usim, domain=args.domain,
                          expires=args.expires)
    try:
        d = reg.register()
        d.addTimeout(3 * args.timeout, reactor)  # up to three rounds (AUTS resync)
        result = yield d
    except Exception as e:
        _failed("register", _sip_describe(e), status=getattr(e, "status", None),
                pcscf=args.pcscf[0])
        return None
    emit({"step": "register", "result": "ok", "impi": result.impi, "impu": result.impu,
          "pcscf": args.pcscf[0], "contact": result.contact, "expires": result.expires,
          "associated": result.associated, "resynchronised": result.resynchronised})
    return reg


@inlineCallbacks
def _invite_step(reactor, args, ua, reg, parts=()):
    """
    INVITE each service, a line each (C{parts}: further body parts beside
    the offer). @return: C{(sessions, ok)}: the established sessions and
    whether all were.
    """
    from mbmsd.ue.sip import MbmsSession, sdp_offer, sdp_summary

    domain = args.service_domain or "mbms." + reg.domain
    media = args.media or ["video 5000 RTP/AVP 96"]
    sessions = []
    ok = True
    for service in args.service or [DEMO_SERVICE]:
        session = MbmsSession(ua, args.impu, service, domain,
                              offer=sdp_offer(args.local_ip, media), parts=parts)
        try:
            d = session.invite()
            d.addTimeout(args.timeout, reactor)
            answer = yield d
        except Exception as e:
            ok = False
            _failed("invite", _sip_describe(e), service=service, uri=session.uri,
                    status=getattr(e, "status", None))
            continue
        sessions.append(session)
        emit({"step": "invite", "result": "ok", "service": service, "uri": session.uri,
              "status": answer.status, "provisional": answer.provisional,
              "callId": session.callId, "contentType": answer.contentType,
              # the dialog's remote target (the SCF's Contact) and route set
              "target": answer.remoteTarget, "routeSet": answer.routeSet,
              "sdp": sdp_summary(answer.sdp)})
    return sessions, ok


@inlineCallbacks
def _bye_step(reactor, args, sessions):
    """BYE each session still up, a line each. @return: True when all ended well."""
    ok = True
    for session in sessions:
        if session.state != "confirmed":
            reason = session.ended.result if session.ended.called else session.state
            emit({"step": "bye", "result": "ok", "service": session.serviceId,
                  "status": None, "endedBy": "network", "reason": reason})
            continue
        try:
            d = session.bye()
            d.addTimeout(args.timeout, reactor)
            status = yield d
        except Exception as e:
            ok = False
            _failed("bye", _sip_describe(e), service=session.serviceId)
            continue
        if status == 200:
            emit({"step": "bye", "result": "ok", "service": session.serviceId, "status": 200})
        else:
            ok = False
            _failed("bye", "BYE answered %s" % (status,), service=session.serviceId,
                    status=status)
    return ok


@inlineCallbacks
def _closing(reg, opened):
    if reg is not None:
        reg.stop()
    if opened is not None:
        from twisted.internet.defer import maybeDeferred

        try:
            yield maybeDeferred(opened[1])
        except Exception:
            pass


@inlineCallbacks
def _hold(reactor, seconds, sessions):
    """Keep the sessions C{seconds}, or until the network ends one."""
    from twisted.internet.defer import DeferredList
    from twisted.internet.task import deferLater

    if not sessions or seconds <= 0:
        return
    waits = [deferLater(reactor, seconds, lambda: None)] + [s.ended for s in sessions]
    yield DeferredList(waits, fireOnOneCallback=True, consumeErrors=True)
    waits[0].cancel()
