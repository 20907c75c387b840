"""
`mbms-ue run --sip-security`: TS 26.237's SIP-based security procedure as a
UE runs it, one JSON line per step:

  register   IMS registration at the P-CSCF (TS 26.237 10.1: first);
  bootstrap  GBA over Ub; the MUK = Ks_NAF with NAF_Id = SCF FQDN ||
             01 00 00 00 04 (TS 33.220 H.3);
  invite     the INVITE's multipart/mixed body carries the SDP offer and
             the Annex I.1 B-TID document (profile.CT_BTID);
  msk        the BM-SC pushes each service's MSK by MIKEY under the MUK
             at once (no Ua registration); verified, and answered;
  bye        the session ends, the authorization and the MUK with it.
"""

from types import SimpleNamespace

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.defer import TimeoutError as DeferredTimeout
from twisted.internet.error import CannotListenError

from mbmsd import profile
from mbmsd.protocols import gba, mbms_xml
from mbmsd.ue import steps

__all__ = ["run_sip_security"]


@inlineCallbacks
def run_sip_security(reactor, args, http=None):
    """
    @return: Deferred of the exit status: 0 only when every established
        session's MSK arrived, its MACs verified and its verification went
        back, and every step succeeded.
    """
    from mbmsd.ue.mikey_receiver import MikeyReceiver

    ownHttp = http is None
    if ownHttp:
        http = steps._requester(reactor, args)
    usim = steps._usim(args)  # one USIM: its SQN window spans REGISTER and Ub
    reg = opened = port = None
    sessions = []
    try:
        opened = yield steps._sip_open(reactor, args)
        if opened is None:
            return 1
        reg = yield steps._register_step(reactor, args, opened[0], usim)
        if reg is None:
            return 1
        reg.keepAlive()
        scf = args.scf_naf or "scf." + reg.domain
        # the bootstrap line names the SCF, the NAF of this procedure
        boot = yield steps._bootstrap_step(reactor, SimpleNamespace(
            **dict(vars(args), naf=scf, show_keys=False)), http, usim)
        if boot is None:
            return 1
        muk = boot[0].ksNaf(gba.naf_id(scf, gba.UA_PROTOCOL_26237_SIP))

        arrived = {}  # (Key Domain ID, MSK ID) -> MskDelivery
        state = {"need": None, "done": Deferred(), "early": []}

        def show(delivery):
            record = steps.msk_record(delivery, args.show_keys)
            record["idi"] = delivery.idi.decode("ascii", "replace")
            steps.emit(record)

        def check():
            if (state["need"] is not None and len(arrived) >= state["need"]
                    and not state["done"].called):
                state["done"].callback(None)

        def onDelivery(delivery):
            if (delivery.key_domain_id, delivery.msk_id) not in arrived:
                arrived[(delivery.key_domain_id, delivery.msk_id)] = delivery
                if state["need"] is None:
                    state["early"].append(delivery)  # before the INVITE's line
                else:
                    show(delivery)
            check()

        # bound before the INVITE: the BM-SC pushes as soon as it acknowledged
        receiver = MikeyReceiver(muk, onDelivery)
        try:
            port = reactor.listenUDP(args.mikey_port, receiver, interface=args.listen)
        except CannotListenError as e:
            return steps._failed("listen", "cannot bind UDP %s:%d: %s"
                               % (args.listen, args.mikey_port, e.socketError))
        document = mbms_xml.build_btid_document([boot[0].btid])
        sessions, ok = yield steps._invite_step(reactor, args, opened[0], reg,
                                              parts=[(profile.CT_BTID, document)])
        if not ok:
            return 1
        state["need"] = len(sessions)
        for delivery in state["early"]:
            show(delivery)
        check()
        code = 0
        try:
            yield state["done"].addTimeout(args.wait, reactor)
        except DeferredTimeout:
            rejected = {k: v for k, v in receiver.rejected.items() if v}
            code = steps._failed("msk", "timed out after %gs: %d of %d MSKs arrived"
                               % (args.wait, len(arrived), len(sessions)), rejected=rejected)
        if not code and not all(d.v for d in arrived.values()):
            code = steps._failed("msk", "an MSK message asked no verification")
        yield steps._hold(reactor, args.hold, sessions)
        byes = yield steps._bye_step(reactor, args, sessions)
        sessions = []
        return code if code else (0 if byes else 1)
    finally:
        if sessions:  # a failure after some INVITE succeeded: end them anyway
            try:
                yield steps._bye_step(reactor, args, sessions)
            except Exception:
                pass
        if port is not None:
            yield port.stopListening()
        yield steps._closing(reg, opened)
        if ownHttp:
            yield http.close()
