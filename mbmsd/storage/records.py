"""
The records that stores keep and return: immutable, with every key hidden from
repr so that a record can never leak into a log line by accident.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mbmsd.storage.sipreg import SipBinding


@dataclass(frozen=True)
class Subscriber:
    """
    USIM subscription data (TS 33.102 6.3; Zh stands in-process).

    @ivar sqn: the network's SQN (48 bits) of the last vector issued.
    """

    impi: str
    impus: tuple[str, ...]
    k: bytes = field(repr=False)
    opc: bytes = field(repr=False)
    amf: bytes
    sqn: int
    gbaType: str = "GBA_ME"


@dataclass(frozen=True)
class Challenge:
    """
    An outstanding Ub challenge (TS 33.220 4.5.2 step 2), keyed by its nonce.
    """

    nonce: str
    impi: str
    rand: bytes
    xres: bytes = field(repr=False)
    ck: bytes = field(repr=False)
    ik: bytes = field(repr=False)
    expires: float


@dataclass(frozen=True)
class BootstrapSession:
    """
    A bootstrapping session (TS 33.220 4.5.2 step 6): Ks = CK || IK under B-TID.
    """

    btid: str
    impi: str
    rand: bytes
    ks: bytes = field(repr=False)
    created: float
    expires: float
    gbaType: str = "GBA_ME"


@dataclass(frozen=True)
class NafKey:
    """
    What Zn answers a NAF (TS 33.220 4.5.3, docs/design.md 7.6).
    """

    btid: str
    impi: str
    ksNaf: bytes = field(repr=False)
    expires: float
    gbaType: str = "GBA_ME"


@dataclass(frozen=True)
class Authorization:
    """
    What the SCF authorized (TS 26.237 10.2.3/10.2.4): this IMPU may receive
    the MSKs of this MBMS User Service at this UE IP address until C{expires}.
    """

    impu: str
    serviceId: str
    ueAddress: str
    expires: float


@dataclass(frozen=True)
class MskRegistration:
    """
    A UE's MBMS User Service registration (TS 33.246 6.3.2.1A): where to push
    the service's MSKs and under which B-TID and Ua security protocol id
    (TS 33.220 H.3, the one whose Ks_NAF verified the UE's Digest): that
    Ks_NAF is the MUK.

    In the SIP-based procedure (TS 26.237 Annex I.2) the SCF registers the
    UE with its authorization and hands over the MUK itself: C{muk} (the
    SCF's Ks_NAF, Ua id 01 00 00 00 04), valid until C{mukExpires}, of the
    NAF C{nafFqdn} (IDi). None of the three in the HTTP-based procedure (the
    MUK comes from Zn).
    """

    impu: str
    serviceId: str
    btid: str
    ueAddress: str
    expires: float
    uaId: bytes = bytes.fromhex("0100000003")  # TS 26.237 HTTP-based
    muk: bytes | None = field(default=None, repr=False)
    mukExpires: float | None = None
    nafFqdn: str | None = None


def rotation_shard(impu: str, shards: int) -> int:
    """The MSK rotation shard (0 .. shards - 1) of a UE's registration, by its IMPU."""
    return zlib.crc32(impu.encode("utf-8")) % shards


@dataclass(frozen=True)
class Msk:
    """
    An MBMS Service Key, named by (Key Domain ID, MSK ID) (TS 33.246 6.3.2.1).
    """

    serviceId: str
    keyDomainId: bytes
    mskId: bytes
    key: bytes = field(repr=False)
    created: float
    expires: float


@dataclass(frozen=True)
class SubscriberSummary:
    """
    A subscriber as an operator lists it: everything but K and OPc.
    """

    impi: str
    impus: tuple[str, ...]
    amf: bytes
    sqn: int
    gbaType: str = "GBA_ME"


@dataclass(frozen=True)
class MbmsService:
    """
    An MBMS User Service as provisioned (TS 26.346 5.2): its ID, the Key
    Group of its MSK IDs (None: derived from the ID) and the SCF's
    description of its stream (the [[scf.service]] table; None: defaults).
    """

    serviceId: str
    keyGroup: object = None
    sdp: object = None


@dataclass(frozen=True)
class SessionSummary:
    """
    A bootstrapping session as an operator sees it: never Ks.
    """

    btid: str
    created: float
    expires: float
    gbaType: str = "GBA_ME"


@dataclass(frozen=True)
class SubscriberState:
    """
    What the network holds for one subscriber right now: live bootstrapping
    sessions (BSF), registrations (P-CSCF), authorizations and MSK
    registrations (BM-SC), each a list.
    """

    sessions: list[SessionSummary]
    bindings: list[SipBinding]
    authorizations: list[Authorization]
    registrations: list[MskRegistration]
