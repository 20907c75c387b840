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

from mbmsd.protocols import gba, milenage

# DESIGN 3: the demo subscriber holds the public TS 35.208 test set 1 keys.
DEMO_IMPI = "user1@home1.net"
DEMO_K = "465b5ce8b199b49faa5f0a2ee238a6bc"
DEMO_OP = "cdc202d5123e20f62b6d676ac72cb318"


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
    b.add_argument("--bsf", default="http://127.0.0.1:8080/", help="Ub URL of the BSF")
    b.add_argument("--impi", default=DEMO_IMPI)
    b.add_argument("--k", type=_hex(16), default=bytes.fromhex(DEMO_K), help="K (hex)")
    g = b.add_mutually_exclusive_group()
    g.add_argument("--op", type=_hex(16), default=None, help="OP (hex)")
    g.add_argument("--opc", type=_hex(16), default=None, help="OPc (hex)")
    b.add_argument("--sqn-ms", type=_hex(6), default=None,
                   help="the USIM's highest accepted SQN (hex): forces a resync when ahead")
    b.add_argument("--naf", default="bmsc.home1.net", help="NAF FQDN for Ks_NAF")
    b.add_argument("--ua-id", type=_hex(5), default=gba.UA_PROTOCOL_MBMS,
                   help="Ua security protocol id (hex, TS 33.220 H.3); default 0100000001 (MBMS)")
    b.add_argument("--show-keys", action="store_true", help="also print Ks_NAF (base64)")
    b.add_argument("--timeout", type=float, default=10.0, help="seconds")
    return p


def emit(record, out=None):
    out = out or sys.stdout
    out.write(json.dumps(record, sort_keys=True) + "\n")
    out.flush()


@inlineCallbacks
def bootstrap(reactor, args):
    from mbmsd.ue.http import AgentRequester
    from mbmsd.ue.ub import BootstrapFailed, UbClient, Usim

    op = args.op if args.op is not None else (None if args.opc else bytes.fromhex(DEMO_OP))
    opc = args.opc if args.opc is not None else milenage.compute_opc(args.k, op)
    sqnMs = milenage.sqn_to_int(args.sqn_ms) if args.sqn_ms is not None else None
    http = AgentRequester(reactor, timeout=args.timeout)
    client = UbClient(http, args.bsf, args.impi, Usim(args.k, opc, sqnMs))
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


COMMANDS = {"bootstrap": bootstrap}


def main(argv=None):
    args = build_parser().parse_args(argv)

    def run(reactor):
        d = COMMANDS[args.command](reactor, args)
        d.addCallback(lambda code: sys.exit(code) if code else None)
        return d

    react(run)
