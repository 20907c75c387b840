"""
Every MIKEY message kind we send, decoded by an independent dissector:
tshark's MIKEY dissector (Wireshark's packet-mikey.c). The messages
are written into a pcap by the test itself (UDP to and from the MSK port), so
no capture privileges are needed. tshark cannot check MACs or decrypt; it
checks the RFC 3830 framing and shows each field, which must equal what we
put in.
"""

import subprocess

import pytest

from mbmsd import profile
from mbmsd.protocols import mikey
from mbmsd.protocols.pcap import write_pcap
from tests.support.helpers import require_tool

pytestmark = pytest.mark.external

MUK = bytes(range(32))
KDID = bytes.fromhex("02f810")
MSK_ID = bytes.fromhex("00010002")
MSK = bytes.fromhex("a1a2a3a4a5a6a7a8a9aaabacadaeafb0")
RAND = bytes(range(0x50, 0x60))
RAND2 = bytes(range(0x70, 0x80))
IDI = b"bmsc.home1.net"
IDR = b"YWJjZA==@bsf.home1.net"
MTK_ID = bytes.fromhex("0007")
MTK = bytes.fromhex("c1c2c3c4c5c6c7c8c9cacbcccdcecfd0")
SALT = bytes.fromhex("e1e2e3e4e5e6e7e8e9eaebecedee")

BMSC = ("127.0.0.1", 40000)
UE = ("127.0.0.2", profile.MSK_UDP_PORT)

FIELDS = [
    "mikey.version",
    "mikey.type",
    "mikey.v.set",
    "mikey.prf_func",
    "mikey.csb_id",
    "mikey.cs_count",
    "mikey.cs_id_map_type",
    "mikey.next_payload",
    "mikey.ext.type",
    "mikey.ext.data",
    "mikey.t.ts_type",
    "mikey.rand.data",
    "mikey.id.type",
    "mikey.id.data",
    "mikey.kemac.encr_alg",
    "mikey.kemac.key_data_len",
    "mikey.kemac.key_data",
    "mikey.kemac.mac_alg",
    "mikey.kemac.mac",
    "mikey.v.auth_alg",
    "mikey.v.ver_data",
]


@pytest.fixture(scope="module")
def messages():
    msk_msg = mikey.build_msk_message(MUK, KDID, MSK_ID, MSK, 42, RAND, IDI, IDR)
    return {
        "msk": msk_msg,
        "verification": mikey.build_verification(MUK, msk_msg),
        "mtk": mikey.build_mtk_message(MSK, KDID, MSK_ID, MTK_ID, MTK, SALT, 7, RAND2),
        "mtk-nosalt": mikey.build_mtk_message(MSK, KDID, MSK_ID, MTK_ID, MTK, None, 8, RAND2),
    }


@pytest.fixture(scope="module")
def pcap(tmp_path_factory, messages):
    path = tmp_path_factory.mktemp("mikey") / "mikey.pcap"
    write_pcap(
        str(path),
        [
            BMSC + UE + (messages["msk"],),
            UE + BMSC + (messages["verification"],),
            BMSC + UE + (messages["mtk"],),
            BMSC + UE + (messages["mtk-nosalt"],),
        ],
    )
    return str(path)


def _tshark(*args):
    tshark = require_tool("tshark")
    decode_as = "udp.port==%d,mikey" % (profile.MSK_UDP_PORT,)
    out = subprocess.run(
        [tshark, "-n", "-r", *args[:1], "-d", decode_as, *args[1:]],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return out.stdout


def _decoded(pcap):
    args = ["-T", "fields", "-E", "separator=|", "-E", "occurrence=a", "-E", "aggregator=,"]
    for f in FIELDS:
        args += ["-e", f]
    rows = []
    for line in _tshark(pcap, *args).splitlines():
        rows.append(dict(zip(FIELDS, line.split("|"))))
    return rows


def test_nothing_malformed(pcap):
    """No malformed packet, no expert entry (checksums checked too)."""
    out = _tshark(
        pcap,
        "-o", "udp.check_checksum:TRUE",
        "-o", "ip.check_checksum:TRUE",
        "-Y", "_ws.malformed || _ws.expert",
    )
    assert out.strip() == ""


def test_tshark_flags_a_truncated_message(tmp_path, messages):
    """The oracle is alive: a cut-off message is reported as malformed."""
    path = str(tmp_path / "bad.pcap")
    write_pcap(path, [BMSC + UE + (messages["msk"][:60],)])
    assert _tshark(path, "-Y", "_ws.malformed").strip() != ""


def _common_header(row, data_type, v):
    assert row["mikey.version"] == "1"
    assert row["mikey.type"] == str(data_type)
    assert row["mikey.v.set"] == ("1" if v else "0")
    assert row["mikey.prf_func"] == str(profile.PRF_FUNC)
    assert int(row["mikey.csb_id"], 16) == int.from_bytes(MSK_ID, "big")
    assert row["mikey.cs_count"] == str(profile.CS_COUNT)
    assert row["mikey.cs_id_map_type"] == str(profile.CS_ID_MAP_TYPE)


def _key_id_information(kdid, msk_id, mtk_id=None):
    """RFC 4563 4 Figure 2 sub-payloads (type, 8-bit length, ID), by hand."""
    subs = b"\x00\x03" + kdid + b"\x01\x04" + msk_id  # Table 2: 0 Key Domain ID, 1 MSK ID
    return subs if mtk_id is None else subs + b"\x02\x02" + mtk_id  # 2 MTK ID


def _chain(payloads):
    return ",".join(str(p) for p in payloads + (0,))


def test_msk_message_fields(pcap, messages):
    row = _decoded(pcap)[0]
    _common_header(row, profile.MSK_DATA_TYPE, True)
    assert row["mikey.next_payload"] == _chain(profile.MSK_MESSAGE_PAYLOADS)
    assert row["mikey.ext.type"] == "3"  # Key ID, RFC 4563 4 Table 1
    assert bytes.fromhex(row["mikey.ext.data"]) == _key_id_information(KDID, MSK_ID)
    assert row["mikey.t.ts_type"] == str(profile.TS_TYPE)
    assert bytes.fromhex(row["mikey.rand.data"]) == RAND
    assert row["mikey.id.type"] == "%d,%d" % (profile.IDI_TYPE, profile.IDR_TYPE)
    assert row["mikey.id.data"] == "%s,%s" % (IDI.decode(), IDR.decode())
    assert row["mikey.kemac.encr_alg"] == str(profile.ENCR_ALG)
    assert row["mikey.kemac.mac_alg"] == str(profile.MAC_ALG)
    kemac = mikey.parse_message(messages["msk"]).payloads[-1]
    assert row["mikey.kemac.key_data_len"] == str(len(kemac.encrypted))
    assert bytes.fromhex(row["mikey.kemac.key_data"]) == kemac.encrypted
    assert bytes.fromhex(row["mikey.kemac.mac"]) == messages["msk"][-20:]
    assert row["mikey.v.ver_data"] == ""


def test_verification_message_fields(pcap, messages):
    row = _decoded(pcap)[1]
    _common_header(row, profile.VERIFICATION_DATA_TYPE, False)
    assert row["mikey.next_payload"] == _chain(profile.VERIFICATION_MESSAGE_PAYLOADS)
    assert row["mikey.t.ts_type"] == str(profile.TS_TYPE)
    assert row["mikey.v.auth_alg"] == str(profile.MAC_ALG)
    assert bytes.fromhex(row["mikey.v.ver_data"]) == messages["verification"][-20:]
    assert row["mikey.kemac.mac"] == "" and row["mikey.id.type"] == "" and row["mikey.ext.type"] == ""


@pytest.mark.parametrize("index,name", [(2, "mtk"), (3, "mtk-nosalt")])
def test_mtk_message_fields(pcap, messages, index, name):
    row = _decoded(pcap)[index]
    _common_header(row, profile.MTK_DATA_TYPE, False)
    assert row["mikey.next_payload"] == _chain(profile.MTK_MESSAGE_PAYLOADS)
    assert row["mikey.ext.type"] == "3"  # Key ID, RFC 4563 4 Table 1
    assert bytes.fromhex(row["mikey.ext.data"]) == _key_id_information(KDID, MSK_ID, MTK_ID)
    assert row["mikey.t.ts_type"] == str(profile.TS_TYPE)
    assert bytes.fromhex(row["mikey.rand.data"]) == RAND2
    assert row["mikey.id.type"] == ""
    assert row["mikey.kemac.encr_alg"] == str(profile.ENCR_ALG)
    assert row["mikey.kemac.mac_alg"] == str(profile.MAC_ALG)
    assert bytes.fromhex(row["mikey.kemac.mac"]) == messages[name][-20:]


def test_pcap_addresses_and_ports(pcap):
    out = _tshark(pcap, "-T", "fields", "-E", "separator=|", "-e", "ip.src", "-e", "udp.srcport",
                  "-e", "ip.dst", "-e", "udp.dstport")
    rows = [line.split("|") for line in out.splitlines()]
    to_ue = ["127.0.0.1", "40000", "127.0.0.2", str(profile.MSK_UDP_PORT)]
    assert rows == [to_ue, to_ue[2:] + to_ue[:2], to_ue, to_ue]


def test_pcap_ipv6(tmp_path, messages):
    path = str(tmp_path / "v6.pcap")
    write_pcap(path, [("2001:db8::1", 40000, "2001:db8::2", profile.MSK_UDP_PORT, messages["msk"])])
    bad = _tshark(path, "-o", "udp.check_checksum:TRUE", "-Y", "_ws.malformed || _ws.expert")
    assert bad.strip() == ""
    out = _tshark(path, "-T", "fields", "-e", "ipv6.dst", "-e", "mikey.rand.data")
    assert out.split() == ["2001:db8::2", RAND.hex()]


def test_every_message_the_bmsc_sends(tmp_path):
    """
    What the BM-SC.UPF role itself puts on the wire (first push, its
    retransmissions, a rotation push) and the UE's verification answers,
    decoded by tshark with the values our own parser reads back.
    """
    from tests.unit.roles.bmsc.test_keymanagement import KS_NAF, UE_IP, Harness

    h = Harness()
    h.authorize()
    h.register()
    h.clock.advance(0)
    h.clock.advance(1)  # one retransmission
    first, _ = h.udp.written[0]
    answers = [mikey.build_verification(KS_NAF, first)]
    h.delivery.datagramReceived(answers[0], (UE_IP, 4359))
    done = []
    h.msks.rotate("urn:mbmsd:news").addCallback(done.append)
    rotated, _ = h.udp.written[-1]
    answers.append(mikey.build_verification(KS_NAF, rotated))
    h.delivery.datagramReceived(answers[1], (UE_IP, 4359))
    assert done == [(1, 1)]  # pushed to one UE, verified
    sent = [data for data, _ in h.udp.written]
    assert len(sent) == 3
    bmsc = ("127.0.0.1", 5000)
    ue = (UE_IP, 4359)
    path = str(tmp_path / "bmsc.pcap")
    write_pcap(path, [bmsc + ue + (m,) for m in sent] + [ue + bmsc + (a,) for a in answers])
    out = _tshark(path, "-o", "udp.check_checksum:TRUE", "-Y", "_ws.malformed || _ws.expert")
    assert out.strip() == ""
    rows = _decoded(path)
    assert len(rows) == 5
    for row, data in zip(rows, sent):
        got = mikey.parse_msk_message(KS_NAF, data)
        assert row["mikey.type"] == str(profile.MSK_DATA_TYPE)
        assert row["mikey.v.set"] == "1"
        assert int(row["mikey.csb_id"], 16) == int.from_bytes(got.msk_id, "big")
        assert bytes.fromhex(row["mikey.rand.data"]) == got.rand
        assert row["mikey.id.data"] == "%s,%s" % (got.idi.decode(), got.idr.decode())
        assert row["mikey.ext.type"] == "3"
        assert bytes.fromhex(row["mikey.ext.data"]) == _key_id_information(got.key_domain_id, got.msk_id)
    for row, answer in zip(rows[3:], answers):
        assert row["mikey.type"] == str(profile.VERIFICATION_DATA_TYPE)
        assert bytes.fromhex(row["mikey.v.ver_data"]) == answer[-20:]


def test_streaming_msk_message_carries_the_srtp_policy(tmp_path):
    """
    The MSK message of a streaming service (RFC 4563 7): tshark reads the
    SRTP-ID map and the SP payload with each SRTP parameter (RFC 3830
    6.1.1, 6.10.1), nothing malformed, no expert entry.
    """
    message = mikey.build_msk_message(MUK, KDID, MSK_ID, MSK, 43, RAND, IDI, IDR, streaming=True)
    path = str(tmp_path / "streaming.pcap")
    write_pcap(path, [BMSC + UE + (message,)])
    assert _tshark(path, "-o", "udp.check_checksum:TRUE", "-Y", "_ws.malformed || _ws.expert"
                   ).strip() == ""
    fields = ["mikey.cs_count", "mikey.cs_id_map_type", "mikey.srtp_id.policy_no",
              "mikey.srtp_id.ssrc", "mikey.srtp_id.roc", "mikey.next_payload", "mikey.sp.no",
              "mikey.sp.proto_type", "mikey.sp.encr_alg", "mikey.sp.encr_len",
              "mikey.sp.auth_alg", "mikey.sp.auth_key_len", "mikey.sp.salt_len", "mikey.sp.prf",
              "mikey.sp.srtp_encr", "mikey.sp.srtcp_encr", "mikey.sp.srtp_auth",
              "mikey.sp.auth_tag_len"]
    args = ["-T", "fields", "-E", "separator=|", "-E", "occurrence=a", "-E", "aggregator=,"]
    for f in fields:
        args += ["-e", f]
    [line] = _tshark(path, *args).splitlines()
    row = dict(zip(fields, line.split("|")))
    # RFC 3830 6.1.1: #CS 1, map type 0 SRTP-ID, Policy_no 0, SSRC 0, ROC 0
    assert (row["mikey.cs_count"], row["mikey.cs_id_map_type"]) == ("1", "0")
    assert row["mikey.srtp_id.policy_no"] == "0"
    assert int(row["mikey.srtp_id.ssrc"], 16) == 0 and int(row["mikey.srtp_id.roc"], 16) == 0
    # HDR, EXT, T, RAND, IDi, IDr, SP (10), KEMAC
    assert row["mikey.next_payload"] == "21,5,11,6,6,10,1,0"
    assert (row["mikey.sp.no"], row["mikey.sp.proto_type"]) == ("0", "0")  # SRTP
    # AES-CM (1) with 16-octet keys, HMAC-SHA-1 (1) with 20-octet keys, 14-octet salt,
    # AES-CM PRF, encryption and authentication on, an 80-bit tag
    assert [row[f] for f in fields[8:]] == ["1", "16", "1", "20", "14", "0", "1", "1", "1", "10"]
    assert mikey.parse_msk_message(MUK, message).policy == mikey.srtp_policy()
