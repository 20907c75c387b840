"""
Digest AKA (RFC 3310) on the network side, as the BSF (Ub, TS 33.220 4.5.2,
TS 24.109 4.4) and the P-CSCF (REGISTER, TS 33.203 6.1, TS 24.229 5.4.1)
both use it: the challenge made from an authentication vector, the answer's
verification with XRES as the password, and the resynchronisation from AUTS.

Pure functions, no I/O; they know no role, storage or node. Storing the
challenge and the SQN is the caller's (mbmsd/roles/aka.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from mbmsd.protocols import digest, gba, milenage

__all__ = ["ALGORITHM", "AkaVector", "make_vector", "algorithm_ok", "challenge_header",
           "verify_response", "verify_resync_response", "sqn_ms_from_auts"]

ALGORITHM = "AKAv1-MD5"


@dataclass(frozen=True)
class AkaVector:
    """
    What a challenge keeps of an authentication vector: the nonce sent
    (base64(RAND || AUTN)), RAND, XRES (the Digest password) and CK, IK.
    """

    nonce: str
    rand: bytes
    xres: bytes
    ck: bytes
    ik: bytes


def make_vector(k: bytes, opc: bytes, amf: bytes, sqn: int, rand: bytes) -> AkaVector:
    """
    The vector of SQN C{sqn} and C{rand} (TS 33.102 6.3.2) and its nonce,
    base64(RAND || AUTN) (RFC 3310 3.2, TS 24.109 4.4.3).
    """
    av = milenage.generate_vector(k, opc, rand, milenage.int_to_sqn(sqn), amf)
    return AkaVector(gba.encode_nonce(av.rand, av.autn), av.rand, av.xres, av.ck, av.ik)


def algorithm_ok(creds: digest.DigestCredentials) -> bool:
    """The answer names AKAv1-MD5, or no algorithm (RFC 3310 3.3)."""
    return creds.algorithm is None or creds.algorithm.upper() == ALGORITHM.upper()


def challenge_header(realm: str, nonce: str, qop: str, stale: bool = False) -> str:
    """The WWW-Authenticate value of an AKAv1-MD5 challenge (RFC 3310 3.1)."""
    return digest.format_challenge(realm, nonce, ALGORITHM, (qop,), stale=stale)


def verify_response(creds: digest.DigestCredentials, xres: bytes, method: str,
                    body: bytes) -> bool:
    """
    The answer computed with XRES as the password (RFC 3310 3.3).

    @raise digest.DigestError: the credentials cannot be checked.
    """
    return digest.check_response(creds, xres, method, body)


def verify_resync_response(creds: digest.DigestCredentials, method: str, body: bytes) -> bool:
    """The answer carrying AUTS, computed with an empty password (RFC 3310 3.4)."""
    return digest.check_response(creds, b"", method, body)


def sqn_ms_from_auts(k: bytes, opc: bytes, rand: bytes, auts: bytes) -> int:
    """
    SQN_MS recovered from a decoded AUTS (TS 33.102 6.3.5), MAC-S checked.

    @raise milenage.MilenageError: AUTS does not verify.
    """
    return milenage.sqn_to_int(milenage.verify_auts(k, opc, rand, auts))
