"""
"mbmsd profile 1": every value of the MBMS procedures that the standards we
could read did not confirm (docs/design.md 7).

One module, so that a correction is a one-line change. Each value says
VERIFIED (with its source), CORROBORATED (independent code agrees, the
normative text itself was not read) or UNVERIFIED (ours, or our recollection
of TS 33.246 clause 6.4, which could not be retrieved). Each value
cites the clause or registry it was read in.

Plain integers only: this module imports nothing from mbmsd, so every layer
(protocol libraries, roles, the UE) may import it.
"""

# ===========================================================================
# MIKEY (RFC 3830 framing, TS 33.246 clause 6.4 MBMS profile; docs/design.md 7.7)
# ===========================================================================

# --- transport -------------------------------------------------------------

# UDP port the BM-SC pushes MSK messages to on the UE. UNVERIFIED as the
# TS 33.246 MSK port (the clause was not read); IANA names UDP 4359
# "omabcastltkm" (OMA BCAST long-term key messages). The value is ours
# (docs/design.md 7.7).
MSK_UDP_PORT = 4359

# BM-SC retransmission of an unanswered MSK message (V=1): first retry after
# RETRANSMIT_INITIAL seconds, each later delay multiplied by RETRANSMIT_FACTOR,
# at most RETRANSMIT_MAX_TRIES transmissions in all (the first send included).
# UNVERIFIED: ours (docs/design.md 7.7); TS 33.246
# sets no schedule that we could read.
RETRANSMIT_INITIAL = 1.0
RETRANSMIT_FACTOR = 2
RETRANSMIT_MAX_TRIES = 5


def verification_waits():
    """
    How long each send of an MSK message waits for its verification before
    the next send, or, after the last, before the message is given up:
    (1.0, 2.0, 4.0, 8.0, 16.0) by default, RETRANSMIT_MAX_TRIES entries.
    """
    return tuple(RETRANSMIT_INITIAL * RETRANSMIT_FACTOR**i for i in range(RETRANSMIT_MAX_TRIES))


# --- identifiers -----------------------------------------------------------

# Key Domain ID = MCC || MNC, 3 bytes. VERIFIED (TS 31.102 4.2.80).
KEY_DOMAIN_ID_LEN = 3
# MSK ID, 4 bytes (bytes 0-1 = Key Group). VERIFIED (TS 31.102 4.2.80).
MSK_ID_LEN = 4
# MTK ID, 2 bytes. UNVERIFIED (our recollection of TS 33.246 6.4, not read):
# RFC 4563 Table 2 names the type but gives no length.
MTK_ID_LEN = 2

# CSB ID of MSK and MTK messages = the MSK ID read as a big-endian 32-bit
# integer. UNVERIFIED: construction NOT FOUND (TS 33.246 6.4 not read); docs/design.md 7.7.
CSB_ID_IS_MSK_ID = True

# --- common header (RFC 3830 6.1) ------------------------------------------

# MSK and MTK messages are PSK I_MESSAGEs (data type 0), the UE's answer a
# PSK verification message (data type 1). The numbers are VERIFIED
# (RFC 3830 6.1); their use for MBMS is UNVERIFIED (TS 33.246 6.4 not read).
MSK_DATA_TYPE = 0
MTK_DATA_TYPE = 0
VERIFICATION_DATA_TYPE = 1

# PRF func 0 = MIKEY-1. RFC default; MBMS use UNVERIFIED.
PRF_FUNC = 0

# V flag: MSK messages ask for a verification message (set by the BM-SC,
# VERIFIED behaviour: TS 31.102, as the Symbian SDK's RMobilePhone MBMS
# classes restate it); MTK messages never (broadcast; inferred).
MSK_V_DEFAULT = True
MTK_V = False

# #CS = 0 with CS ID map type 1 "Empty map": the value is VERIFIED (RFC 4563
# 5 Table 3 and 8, "Used when the map/policy information is conveyed outside
# of MIKEY"; then no SP payload may be present). RFC 4563 2 ties it to the
# download case; a streaming (SRTP) service's MSK carries its policy
# (RFC 4563 7), so an empty map for every MSK is UNVERIFIED for streaming.
CS_ID_MAP_TYPE = 1
CS_COUNT = 0

# --- payload chains (next-payload numbers, RFC 3830 6.1 table) --------------
# 21 EXT, 5 T, 11 RAND, 6 ID, 1 KEMAC, 9 V. The numbers are VERIFIED; the
# orders are UNVERIFIED (TS 33.246 6.4 not read).

# MSK message: HDR, EXT(Key ID), T, RAND, IDi, IDr, KEMAC.
MSK_MESSAGE_PAYLOADS = (21, 5, 11, 6, 6, 1)
# MTK message: HDR, EXT(Key ID), T, RAND, KEMAC (no IDs, V=0).
MTK_MESSAGE_PAYLOADS = (21, 5, 11, 1)
# Verification message: HDR, T (echo of the MSK message's), V.
VERIFICATION_MESSAGE_PAYLOADS = (5, 9)

# --- EXT: Key ID information (RFC 4563 section 4) ---------------------------

# General Extension (RFC 3830 6.15) type "Key ID". VERIFIED: RFC 4563 4
# Table 1 ("This memo adds Type 3") and 8 ("The registered value for Key ID
# is 3"). tshark 4.0 shows it as "Unknown (3)".
EXT_TYPE_KEY_ID = 3

# EXT data = a sequence of Key ID Type sub-payloads, each Key ID Type
# (8 bits) || Key ID Length (8 bits) || Key ID: VERIFIED (RFC 4563 4,
# Figure 2). Key ID Types VERIFIED (RFC 4563 4 Table 2): 0 MBMS Key Domain
# ID, 1 MBMS Service Key ID (MSK ID), 2 MBMS Traffic Key ID (MTK ID).
KEY_ID_TYPE_KEY_DOMAIN_ID = 0
KEY_ID_TYPE_MSK_ID = 1
KEY_ID_TYPE_MTK_ID = 2
# The sub-payloads we send, in this order: Key Domain ID, MSK ID, and in an
# MTK message the MTK ID. UNVERIFIED: the combination and order TS 33.246
# mandates were not read; a receiver takes them in any order.
KEY_ID_ORDER = (KEY_ID_TYPE_KEY_DOMAIN_ID, KEY_ID_TYPE_MSK_ID, KEY_ID_TYPE_MTK_ID)

# --- T (RFC 3830 6.6) --------------------------------------------------------

# TS type 2 = COUNTER (32 bits), one counter per MUK (MSK messages) and one
# per MSK (MTK messages); a receiver accepts only a strictly larger counter.
# Inferred from the 4-byte TS counters in EF_MUK / EF_MSK (TS 31.102 4.2.80, 4.2.81); "strictly
# larger" UNVERIFIED.
TS_TYPE = 2

# --- RAND (RFC 3830 6.11) ----------------------------------------------------

# RAND length in MSK and MTK messages. RFC 3830 asks for at least 128 bits;
# exactly 16 is ours. UNVERIFIED for MTK messages (which RAND feeds the PRF
# there is NOT FOUND, TS 33.246 6.4 not read: we carry one in every MTK message).
RAND_LEN = 16

# --- ID payloads (RFC 3830 6.7) ----------------------------------------------

# IDi = the BM-SC's NAF FQDN as ID type 1 (URI); IDr = the UE's B-TID as ID
# type 0 (NAI). Type numbers VERIFIED (RFC 3830 6.7); the mapping and the
# chosen types UNVERIFIED (TS 33.246 6.4 not read).
IDI_TYPE = 1
IDR_TYPE = 0

# --- KEMAC and Key data (RFC 3830 6.2, 6.13) -------------------------------

# Encryption AES-CM-128 (1), MAC HMAC-SHA-1-160 (1). Numbers VERIFIED
# (RFC 3830 6.2); the MBMS choice UNVERIFIED.
ENCR_ALG = 1
MAC_ALG = 1

# Key data type of the MSK: 0 TGK. Of the MTK: 2 TEK, or 3 TEK+SALT when a
# salt is sent. KV (key validity) type 1 = SPI/MKI, whose SPI carries the
# MSK ID (MSK messages) or the MTK ID (MTK messages). All UNVERIFIED
# (NOT FOUND: TS 33.246 6.3.3 and 6.4 not read); docs/design.md 7.7.
MSK_KEY_TYPE = 0
MTK_KEY_TYPE = 2
MTK_KEY_TYPE_SALT = 3
KEY_VALIDITY_TYPE = 1

# --- verification MAC input (RFC 3830 5.2) ----------------------------------

# MAC = HMAC-SHA-1(auth_key, verification message up to its MAC || IDi data
# || IDr data || TS value field of the MSK message's T payload). VERIFIED
# (RFC 3830 5.2: "the Identity_i || Identity_r || Timestamp MUST directly
# follow the MIKEY message in the Verification MAC calculation", identical to
# those of the ID and T payloads; the Responder reuses the Initiator's
# timestamp).
VERIFICATION_MAC_INCLUDES_IDS = True

# --- AES-CM IV (RFC 3830 4.2.3) ---------------------------------------------

# IV = (salt XOR (0x0000 || CSB ID || T)) || 0x0000 with T the 64-bit
# timestamp (RFC 3830 4.2.3, VERIFIED). How the 32-bit COUNTER fills the
# 64-bit T is not said there: mbmsd.protocols.mikey.aes_cm_iv right-aligns it
# (high 32 bits zero). UNVERIFIED.


# ===========================================================================
# === BM-SC HTTP bodies ===
# SCF -> BM-SC authorize (TS 26.237 10.2.3; docs/design.md 7.4) and UE -> BM-SC Ua
# (TS 33.246 6.3.2.1A/1B/2 over HTTP; docs/design.md 7.5). The XML itself lives in
# mbmsd/protocols/mbms_xml.py; every name it writes is here.
# ===========================================================================

# --- request line and headers ----------------------------------------------

# Request-URI path and its "requesttype" values. "authorize" is TS 26.237
# 10.2.3's; "register", "deregister", "msk-request" UNVERIFIED (TS 33.246
# 6.3.2 not read); "deauthorize" is ours (docs/design.md 7.4).
KEYMANAGEMENT_PATH = "/keymanagement"
REQUESTTYPE_AUTHORIZE = "authorize"
REQUESTTYPE_DEAUTHORIZE = "deauthorize"
REQUESTTYPE_REGISTER = "register"
REQUESTTYPE_DEREGISTER = "deregister"
REQUESTTYPE_MSK_REQUEST = "msk-request"

# The UE's identity header (value: the IMPU in double quotes). VERIFIED
# (TS 24.109 7); its use on Ua to the BM-SC.UPF is TS 26.237 10.2.1's.
INTENDED_IDENTITY_HEADER = "X-3GPP-Intended-Identity"
# The SCF's assertion of the IMPU on authorize: TS 26.237 10.2.3's.
ASSERTED_IDENTITY_HEADER = "X-3GPP-Asserted-Identity"
# Ua Digest realm = prefix || NAF FQDN. VERIFIED (TS 24.109 7).
UA_REALM_PREFIX = "3GPP-bootstrapping@"
# User-Agent product token of a GBA-aware UE. VERIFIED (TS 24.109 7).
UA_PRODUCT_TOKEN = "3gpp-gba"

# --- content types -----------------------------------------------------------

# IANA-registered, "published specification TS 26.346". VERIFIED (the IANA
# media types registry).
CT_REGISTER = "application/mbms-register+xml"
CT_REGISTER_RESPONSE = "application/mbms-register-response+xml"
CT_DEREGISTER = "application/mbms-deregister+xml"
CT_MSK_REQUEST = "application/mbms-msk+xml"
CT_MSK_RESPONSE = "application/mbms-msk-response+xml"
# Deregistration answer: no deregister-response type exists at IANA;
# reusing register-response is UNVERIFIED (TS 33.246 6.3.2.1B not read).
CT_DEREGISTER_RESPONSE = CT_REGISTER_RESPONSE
# Authorize request: named by TS 26.237 10.2.3, NOT IANA-registered;
# ours/UNVERIFIED. Its response type is ours (docs/design.md 7.4), UNVERIFIED.
CT_AUTHORIZE = "application/mbms-authorize+xml"
CT_AUTHORIZE_RESPONSE = "application/mbms-authorize-response+xml"

# --- namespaces ----------------------------------------------------------------

# Authorize and its response: ours (TS 26.237 10.2.3: "XML schema FFS"), UNVERIFIED.
NS_AUTHORIZE = "urn:mbmsd:xml:ns:mbms-authorize:1"
# Register, deregister, MSK request and the register response: ours per
# docs/design.md 7.5, UNVERIFIED; TS 26.346's namespaces for these were NOT FOUND
# (TS 26.346 11 not read).
NS_REGISTER = "urn:mbmsd:xml:ns:mbms-register:1"
# The answer to msk-request: VERIFIED (TS 26.346 Annex C.12, pointing to 11.8
# and TS 33.246). Its element names below are still ours (UNVERIFIED).
NS_MSK_RESPONSE = "urn:3GPP:metadata:2005:MBMS:mskResponse"

# --- element and attribute names (all ours, docs/design.md 7.4/7.5; UNVERIFIED) --

EL_AUTHORIZE = "mbmsAuthorize"
EL_AUTHORIZE_RESPONSE = "mbmsAuthorizeResponse"
EL_REGISTER = "mbmsRegister"
EL_DEREGISTER = "mbmsDeregister"
EL_REGISTER_RESPONSE = "mbmsRegisterResponse"
EL_MSK_REQUEST = "mbmsMskRequest"
EL_MSK_RESPONSE = "mbmsMskResponse"
EL_SERVICE_ID = "serviceId"
EL_UE_ADDRESS = "ueIPaddress"
EL_LIFETIME = "lifetime"
EL_KEY_DOMAIN_ID = "keyDomainId"
EL_MSK_ID = "mskId"
ATTR_STATUS = "status"

# Per-item status codes (HTTP-like). The TS 26.346 numeric codes were NOT
# FOUND (TS 33.246 6.3.2.4 not read); these are ours (docs/design.md 7.4/7.5), UNVERIFIED.
STATUS_OK = 200
STATUS_NOT_AUTHORIZED = 403
STATUS_UNKNOWN = 404


# ===========================================================================
# === SIP-based security procedure (TS 26.237 10.2, Annex I) ===
# The UE names its B-TID in the INVITE; the SCF, acting as a NAF, gets its
# own Ks_NAF (Ua id 01 00 00 00 04, TS 33.220 H.3) and hands it to the
# BM-SC as the MUK (Annex I.2), which pushes the MSK without a Ua step.
# ===========================================================================

# Annex I.1, carried in the INVITE's multipart/mixed body beside the SDP
# offer: namespace, root and child element. VERIFIED (TS 26.237 Annex I.1).
NS_BTID = "urn:3GPP:metadata:2005:MBMS:bootstrappingTransactionIdentifier"
EL_SECURITY_REGISTER = "mbmsAuthorizedSecurityRegister"
EL_BTID = "btid"
# The media type of that body part was not read. The SCF takes the part by
# its XML namespace under application/xml or any +xml type; what mbms-ue
# sends is this one (RFC 7303's generic type): UNVERIFIED.
CT_BTID = "application/xml"

# Annex I.2, SCF -> BM-SC: namespace, root (the same name as I.1) and the
# children in schema order. VERIFIED (TS 26.237 Annex I.2); the published
# schema writes "mukLifeTime " with a stray trailing space, which no
# well-formed document can carry: we use the name without it.
NS_NAF_KEY_INFO = "urn:3GPP:metadata:2005:MBMS:nafKeyInfo"
EL_MUK = "muk"
EL_MUK_LIFETIME = "mukLifeTime"
EL_NAF_FQDN = "nafFqdn"
# (ueIPaddress is EL_UE_ADDRESS, the same name.) Content of the elements
# whose type was not read: muk = base64 of Ks_NAF (32 octets), mukLifeTime
# = the key's expiry as xs:dateTime in UTC (the BSF's key lifetime), both
# UNVERIFIED; nafFqdn is xs:base64Binary (VERIFIED) of the SCF's NAF FQDN
# in ASCII (the content UNVERIFIED).
#
# The request that carries it: not read. Ours: the authorize POST itself
# (KEYMANAGEMENT_PATH?requesttype=authorize, X-3GPP-Asserted-Identity as
# for the HTTP-based procedure) with a multipart/mixed body (RFC 2046) of
# the CT_AUTHORIZE part and the Annex I.2 part as CT_NAF_KEY_INFO, so that
# one acknowledgement covers both. UNVERIFIED.
CT_SIP_SECURITY = "multipart/mixed"
CT_NAF_KEY_INFO = "application/xml"
REQUESTTYPE_SIP_SECURITY = REQUESTTYPE_AUTHORIZE

# IDi of the MSK messages of this procedure: not read. Ours: the NAF FQDN
# the MUK belongs to (the SCF's, from nafFqdn), as IDi is the BM-SC's NAF
# FQDN in the HTTP-based procedure; so the MUK ID (IDi || IDr, TS 31.102
# 4.2.81) names this MUK and its counter apart from the HTTP one. UNVERIFIED.
SIP_SECURITY_IDI_IS_NAF_FQDN = True


# ===========================================================================
# === Key Domain ID and MUK ===
# ===========================================================================

# Key Domain ID = MCC || MNC of the BM-SC's network, 3 octets: VERIFIED
# (TS 31.102 4.2.80). The octet coding below is that of a PLMN identity, TS 24.008
# 10.5.1.3 (BCD digits, MCC digit 1 in the low nibble of octet 1, a 2-digit
# MNC padded with F): UNVERIFIED for MBMS (TS 33.246 6.3.2.1 not read).
def key_domain_id(mcc, mnc):
    """
    @param mcc: three decimal digits; @param mnc: two or three.
    @return: the 3-octet Key Domain ID.
    """
    if len(mcc) != 3 or not mcc.isdigit() or len(mnc) not in (2, 3) or not mnc.isdigit():
        raise ValueError("MCC is 3 digits and MNC 2 or 3")
    m = [int(c) for c in mcc]
    n = [int(c) for c in mnc] + ([0xF] if len(mnc) == 2 else [])
    return bytes([(m[1] << 4) | m[0], (n[2] << 4) | m[2], (n[1] << 4) | n[0]])


# MUK = Ks_NAF (GBA_ME) with NAF_Id = BM-SC FQDN || Ua security protocol id.
# VERIFIED: MUK = Ks_NAF in GBA_ME (TS 33.501 W.4.1.3, "the MUK is set to
# KAF" where TS 33.246 takes Ks_NAF); the id is 01 00 00 00 03 for TS 26.237's
# HTTP-based procedure and 01 00 00 00 01 for a UE following TS 33.246 alone
# (TS 33.220 H.3; the values live in mbmsd.protocols.gba).
#
# The Ua Digest password is the MRK, which TS 33.246 Annex F derives from
# Ks_NAF (TS 33.501 W.4.1.3 points there) by a function that was NOT READ.
# Until it is: password = base64(Ks_NAF) as ASCII bytes, UNVERIFIED, here only
# (the BM-SC's Digest check and rspauth, mbmsd/roles/bmsc/ua.py, and the UE,
# mbmsd/ue/ua.py, both call this).
def ua_password(ks_naf):
    """
    @param ks_naf: Ks_NAF (32 octets).
    @return: the Ua HTTP Digest password (the MRK), bytes for HA1.
    """
    import base64

    return base64.b64encode(bytes(ks_naf))


# ===========================================================================
# === Streaming: MTKs and SRTP (RFC 4563 2 and 7, RFC 3711, RFC 3830 6.10) ===
# ===========================================================================

# SRTP transform of a streaming service: AES-CM-128 encryption with
# HMAC-SHA1 and an 80-bit tag (RFC 3711 5; libsrtp's
# srtp_profile_aes128_cm_sha1_80). The MTK is the SRTP master key (128 bits)
# and its salt the master salt (112 bits, RFC 3711 8.2), as RFC 4563 2 has
# it ("the MTK could be the master key for ... SRTP"). The choice of this
# transform for MBMS is UNVERIFIED (TS 33.246 6.6 was not read).
SRTP_SUITE = "AES_CM_128_HMAC_SHA1_80"
SRTP_MASTER_KEY_LEN = 16
SRTP_MASTER_SALT_LEN = 14
SRTP_AUTH_TAG_LEN = 10

# SRTP MKI: none (length 0). The UE tells the MTKs apart by trying the
# current one and, during the overlap below, the previous one (the tag
# decides). UNVERIFIED: TS 33.246 may put the MTK ID (and MSK ID) in the MKI;
# not read.
SRTP_MKI_LEN = 0

# The security policy delivered with the MSK of a streaming service
# (RFC 4563 7: "The security policy is delivered with the MSK"): one SP
# payload (RFC 3830 6.10) of protocol type 0 = SRTP, policy number 0, and
# the CS ID map type 0 "SRTP-ID" (RFC 3830 6.1.1) with #CS = 1 naming it
# (Policy_no 0, SSRC 0, ROC 0). SSRC 0 stands for "any SSRC of the bearer":
# the BM-SC forwards the content provider's SSRC unchanged. The map type and
# the SSRC convention are UNVERIFIED (which map type TS 33.246 uses was not
# read). Download services keep the empty map (CS_ID_MAP_TYPE, CS_COUNT).
STREAMING_CS_ID_MAP_TYPE = 0
STREAMING_CS_COUNT = 1
SRTP_POLICY_NO = 0
SRTP_PROT_TYPE = 0  # RFC 3830 6.10: 0 = SRTP, VERIFIED
SRTP_MAP_SSRC = 0
SRTP_MAP_ROC = 0
# The SRTP policy parameters (RFC 3830 6.10.1, type: value), VERIFIED as
# RFC 3830's numbers: 0 encryption algorithm 1 (AES-CM), 1 session
# encryption key length 16, 2 authentication algorithm 1 (HMAC-SHA-1),
# 3 session authentication key length 20, 4 session salt key length 14,
# 5 SRTP PRF 0 (AES-CM), 7 SRTP encryption 1 (on), 8 SRTCP encryption 1
# (on), 10 SRTP authentication 1 (on), 11 authentication tag length 10.
SRTP_POLICY_PARAMS = (
    (0, 1), (1, 16), (2, 1), (3, 20), (4, 14), (5, 0), (7, 1), (8, 1), (10, 1), (11, 10),
)
# MSK message of a streaming service: HDR, EXT(Key ID), T, RAND, IDi, IDr,
# SP, KEMAC. The place of SP in the chain is UNVERIFIED.
STREAMING_MSK_MESSAGE_PAYLOADS = (21, 5, 11, 6, 6, 10, 1)

# UDP port of MTK messages on the bearer (the media arrive on the bearer's
# port). Default 2269, IANA's "mikey" port: UNVERIFIED for MBMS.
MTK_UDP_PORT = 2269

# A UE that received a newer MTK still accepts SRTP packets under the
# previous one for MTK_OVERLAP seconds (packets reordered around the
# switch); the BM-SC protects with the new one from its first message on.
# After an MSK rotation, the BM-SC also sends each MTK message under the
# previous MSK for MSK_OVERLAP seconds, so a UE whose new MSK has not yet
# arrived keeps getting the MTKs. Both bounded, both ours: UNVERIFIED.
MTK_OVERLAP = 2.0
MSK_OVERLAP = 30.0
# A new MTK is announced MTK_SWITCH_DELAY seconds before the BM-SC protects
# with it, so that its MTK message reaches a UE first. Ours: UNVERIFIED.
MTK_SWITCH_DELAY = 0.2

# COUNTER of MTK messages (RFC 3830 6.6, one counter per MSK): never below
# MTK_COUNTER_RATE x the seconds since the MSK was made, so that a BM-SC
# restarted with the same MSK still sends counters larger than before
# (repeats are at most 10 per second, mtk_repeat >= 0.1). Ours: UNVERIFIED.
MTK_COUNTER_RATE = 100
