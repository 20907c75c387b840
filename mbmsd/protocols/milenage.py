"""
Milenage: the 3GPP authentication and key generation functions f1, f1*, f2,
f3, f4, f5 and f5* (TS 35.206 clause 4), with AES-128 as the kernel E_K.

Also the two AKA message layouts built from them (TS 33.102 clause 6.3):

 - AUTN = (SQN xor AK) || AMF || MAC-A                       (16 octets)
 - AUTS = (SQN_MS xor AK*) || MAC-S, MAC-S over AMF* = 0000   (14 octets)

Conformance vectors: TS 35.208 clause 4.3 (see tests/test_milenage.py).

Keys (K, OPc, CK, IK, RES) never appear in exception messages or reprs.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, algorithms, modes

__all__ = [
    "MilenageError",
    "MacFailure",
    "AutsMacFailure",
    "compute_opc",
    "Milenage",
    "AuthVector",
    "UeAuthResult",
    "generate_vector",
    "ue_authenticate",
    "build_auts",
    "verify_auts",
    "sqn_to_int",
    "int_to_sqn",
    "AMF_RESYNC",
]


class MilenageError(ValueError):
    """Bad input to, or failed check in, a Milenage/AKA operation."""


class MacFailure(MilenageError):
    """MAC-A in AUTN does not match XMAC-A (TS 33.102 6.3.3): network auth failed."""


class AutsMacFailure(MilenageError):
    """MAC-S in AUTS does not match (TS 33.102 6.3.5): resync request rejected."""


# TS 35.206 clause 4.1: constants c1..c5 and rotations r1..r5 (in bytes here;
# the spec's r values are bits, all multiples of 8).
_C1 = bytes(16)
_C2 = bytes(15) + b"\x01"
_C3 = bytes(15) + b"\x02"
_C4 = bytes(15) + b"\x04"
_C5 = bytes(15) + b"\x08"
_R1, _R2, _R3, _R4, _R5 = 8, 0, 4, 8, 12  # 64, 0, 32, 64, 96 bits

# TS 33.102 6.3.3: the dummy AMF* used for MAC-S in re-synchronisation.
AMF_RESYNC = b"\x00\x00"


def _check(name: str, value: object, length: int) -> bytes:
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise MilenageError("%s must be bytes" % (name,))
    value = bytes(value)
    if len(value) != length:
        # Length only: never the value (it may be a key).
        raise MilenageError("%s must be %d octets, got %d" % (name, length, len(value)))
    return value


def _xor(a: bytes, b: bytes) -> bytes:
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(len(a), "big")


def _rot(x: bytes, r: int) -> bytes:
    # TS 35.206 4.1: cyclic left rotation by r bytes (r*8 bits).
    return x[r:] + x[:r]


def _aes_ecb_encryptor(k: bytes) -> CipherContext:
    return Cipher(algorithms.AES(k), modes.ECB()).encryptor()


def compute_opc(k: bytes, op: bytes) -> bytes:
    """OPc = OP xor E_K(OP) (TS 35.206 4.1). Returns 16 octets."""
    k = _check("K", k, 16)
    op = _check("OP", op, 16)
    return _xor(op, _aes_ecb_encryptor(k).update(op))


class Milenage:
    """
    Milenage for one subscriber key K and operator variant OPc.

    The AES-ECB encryptor is created once per instance: ECB holds no state
    between whole blocks, so one context serves every E_K call. An instance
    is not meant to be shared between threads.
    """

    __slots__ = ("_opc", "_enc")

    def __init__(self, k: bytes, opc: bytes) -> None:
        k = _check("K", k, 16)
        self._opc = _check("OPc", opc, 16)
        self._enc = _aes_ecb_encryptor(k)

    def __repr__(self) -> str:
        return "<Milenage>"

    @classmethod
    def fromOp(cls, k: bytes, op: bytes) -> "Milenage":
        """Build from OP rather than OPc (OPc computed per TS 35.206 4.1)."""
        return cls(k, compute_opc(k, op))

    def _e(self, block: bytes) -> bytes:
        return self._enc.update(block)

    def _temp(self, rand: bytes) -> bytes:
        # TEMP = E_K(RAND xor OPc)
        return self._e(_xor(_check("RAND", rand, 16), self._opc))

    def _out1(self, temp: bytes, sqn: bytes, amf: bytes) -> bytes:
        # TS 35.206 4.1: IN1 = SQN || AMF || SQN || AMF;
        # OUT1 = E_K(TEMP xor rot(IN1 xor OPc, r1) xor c1) xor OPc
        sqn = _check("SQN", sqn, 6)
        amf = _check("AMF", amf, 2)
        in1 = sqn + amf + sqn + amf
        x = _xor(_xor(temp, _rot(_xor(in1, self._opc), _R1)), _C1)
        return _xor(self._e(x), self._opc)

    def _outk(self, temp: bytes, c: bytes, r: int) -> bytes:
        # TS 35.206 4.1: OUTk = E_K(rot(TEMP xor OPc, rk) xor ck) xor OPc
        return _xor(self._e(_xor(_rot(_xor(temp, self._opc), r), c)), self._opc)

    def f1(self, rand: bytes, sqn: bytes, amf: bytes) -> bytes:
        """MAC-A = OUT1[0..63] (TS 35.206 4.1). 8 octets."""
        return self._out1(self._temp(rand), sqn, amf)[:8]

    def f1star(self, rand: bytes, sqn: bytes, amf: bytes) -> bytes:
        """MAC-S = OUT1[64..127] (TS 35.206 4.1). 8 octets."""
        return self._out1(self._temp(rand), sqn, amf)[8:]

    def f2345(self, rand: bytes) -> tuple[bytes, bytes, bytes, bytes]:
        """
        Return (RES, CK, IK, AK): f2 = OUT2[64..127] (8 octets),
        f3 = OUT3 (16), f4 = OUT4 (16), f5 = OUT2[0..47] (6) (TS 35.206 4.1).
        """
        return self._f2345(self._temp(rand))

    def _f2345(self, temp: bytes) -> tuple[bytes, bytes, bytes, bytes]:
        out2 = self._outk(temp, _C2, _R2)
        ck = self._outk(temp, _C3, _R3)
        ik = self._outk(temp, _C4, _R4)
        return out2[8:], ck, ik, out2[:6]

    def f5star(self, rand: bytes) -> bytes:
        """AK* = OUT5[0..47] (TS 35.206 4.1). 6 octets."""
        return self._outk(self._temp(rand), _C5, _R5)[:6]

    def generateVector(self, rand: bytes, sqn: bytes, amf: bytes) -> "AuthVector":
        """
        Network side (TS 33.102 6.3.2): AUTN = SQN xor AK || AMF || MAC-A.
        Five AES calls in all (TEMP once).
        """
        temp = self._temp(rand)
        sqn = _check("SQN", sqn, 6)
        amf = _check("AMF", amf, 2)
        mac_a = self._out1(temp, sqn, amf)[:8]
        res, ck, ik, ak = self._f2345(temp)
        return AuthVector(rand=bytes(rand), xres=res, ck=ck, ik=ik,
                          autn=_xor(sqn, ak) + amf + mac_a)

    def ueAuthenticate(self, rand: bytes, autn: bytes) -> "UeAuthResult":
        """See the module-level ue_authenticate()."""
        autn = _check("AUTN", autn, 16)
        temp = self._temp(rand)
        res, ck, ik, ak = self._f2345(temp)
        sqn = _xor(autn[:6], ak)
        xmac_a = self._out1(temp, sqn, autn[6:8])[:8]
        if not hmac.compare_digest(xmac_a, autn[8:]):
            raise MacFailure("AUTN MAC-A check failed")
        return UeAuthResult(sqn=sqn, res=res, ck=ck, ik=ik)

    def buildAuts(self, rand: bytes, sqn_ms: bytes) -> bytes:
        """See the module-level build_auts()."""
        sqn_ms = _check("SQN_MS", sqn_ms, 6)
        temp = self._temp(rand)
        ak_star = self._outk(temp, _C5, _R5)[:6]
        mac_s = self._out1(temp, sqn_ms, AMF_RESYNC)[8:]
        return _xor(sqn_ms, ak_star) + mac_s

    def verifyAuts(self, rand: bytes, auts: bytes) -> bytes:
        """See the module-level verify_auts()."""
        auts = _check("AUTS", auts, 14)
        temp = self._temp(rand)
        sqn_ms = _xor(auts[:6], self._outk(temp, _C5, _R5)[:6])
        xmac_s = self._out1(temp, sqn_ms, AMF_RESYNC)[8:]
        if not hmac.compare_digest(xmac_s, auts[6:]):
            raise AutsMacFailure("AUTS MAC-S check failed")
        return sqn_ms


@dataclass(frozen=True)
class AuthVector:
    """An AKA authentication vector (TS 33.102 6.3.2): RAND, XRES, CK, IK, AUTN."""

    rand: bytes
    xres: bytes = field(repr=False)
    ck: bytes = field(repr=False)
    ik: bytes = field(repr=False)
    autn: bytes


@dataclass(frozen=True)
class UeAuthResult:
    """What the USIM side yields after a good AUTN (TS 33.102 6.3.3)."""

    sqn: bytes
    res: bytes = field(repr=False)
    ck: bytes = field(repr=False)
    ik: bytes = field(repr=False)


def generate_vector(k: bytes, opc: bytes, rand: bytes, sqn: bytes, amf: bytes) -> AuthVector:
    """
    Network side (TS 33.102 6.3.2): AUTN = SQN xor AK || AMF || MAC-A.

    For many vectors of one subscriber, keep a Milenage instance and call its
    generateVector() to reuse the AES context.

    @raise MilenageError: (a ValueError) on any wrong-length input.
    """
    return Milenage(k, opc).generateVector(rand, sqn, amf)


def ue_authenticate(k: bytes, opc: bytes, rand: bytes, autn: bytes) -> UeAuthResult:
    """
    USIM side (TS 33.102 6.3.3): recover SQN = AUTN[0:6] xor AK, check MAC-A
    (XMAC-A = f1(SQN, RAND, AMF = AUTN[6:8])) in constant time, then return
    SQN, RES, CK, IK.

    SQN freshness (TS 33.102 Annex C) is the caller's job: on a stale SQN it
    should answer with build_auts().

    @raise MacFailure: MAC-A does not verify.
    @raise MilenageError: wrong-length input.
    """
    return Milenage(k, opc).ueAuthenticate(rand, autn)


def build_auts(k: bytes, opc: bytes, rand: bytes, sqn_ms: bytes) -> bytes:
    """
    AUTS = (SQN_MS xor AK*) || MAC-S, AK* = f5*(RAND),
    MAC-S = f1*(SQN_MS, RAND, AMF* = 0000) (TS 33.102 6.3.3). 14 octets.
    """
    return Milenage(k, opc).buildAuts(rand, sqn_ms)


def verify_auts(k: bytes, opc: bytes, rand: bytes, auts: bytes) -> bytes:
    """
    Network side of re-synchronisation (TS 33.102 6.3.5): recover SQN_MS
    from AUTS and check MAC-S in constant time. Returns SQN_MS (6 octets).

    @raise AutsMacFailure: MAC-S does not verify.
    @raise MilenageError: AUTS (or another input) has the wrong length.
    """
    return Milenage(k, opc).verifyAuts(rand, auts)


def sqn_to_int(b: bytes) -> int:
    """48-bit SQN (6 octets, big-endian) to int."""
    return int.from_bytes(_check("SQN", b, 6), "big")


def int_to_sqn(i: int) -> bytes:
    """int in [0, 2**48) to a 6-octet big-endian SQN."""
    if not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < 1 << 48:
        raise MilenageError("SQN must be an integer in [0, 2**48)")
    return i.to_bytes(6, "big")
