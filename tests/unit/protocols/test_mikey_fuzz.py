"""
Property and fuzz tests of MIKEY (mbmsd.protocols.mikey) and of the two
UDP endpoints that take MIKEY from the network: the BM-SC's delivery socket
(verification messages from UEs) and the UE's MSK receiver.

Properties: encode -> parse gives the same message (every payload kind of
the strict parser); the profile's MSK message opens with its MUK to what was
put in; no exception but MikeyError (and its subclasses) leaves a parser, on
random bytes and on valid messages with random damage; no damaged message
verifies; the UDP endpoints log no failure and verify only the real answer.
"""


from hypothesis import example, given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from twisted.internet.task import Clock

from mbmsd import profile
from mbmsd.metrics import Metrics
from mbmsd.protocols import mikey
from mbmsd.roles.bmsc.delivery import MikeyDelivery
from mbmsd.sip.testing import FakeDatagramTransport
from mbmsd.storage.memory import MemoryStorage
from mbmsd.storage.records import Msk
from mbmsd.ue.mikey_receiver import MikeyReceiver
from tests.conftest import budget
from tests.support.helpers import no_failure_logged

u8 = st.integers(0, 255)
MUK = bytes(range(32))
KEY_DOMAIN = profile.key_domain_id("001", "01")

# ---------------------------------------------------------------- strategies


@st.composite
def headers(draw):
    map_type = draw(st.sampled_from([mikey.CS_MAP_SRTP_ID, mikey.CS_MAP_EMPTY]))
    cs_count = draw(st.integers(0, 3))
    info = draw(st.binary(min_size=9 * cs_count, max_size=9 * cs_count)) \
        if map_type == mikey.CS_MAP_SRTP_ID else b""
    return mikey.Header(mikey.VERSION, draw(st.integers(0, 10)), draw(st.booleans()),
                        draw(st.integers(0, 127)), draw(st.integers(0, 2 ** 32 - 1)), cs_count,
                        map_type, info)


payloads = st.one_of(
    st.builds(mikey.Ext, u8, st.binary(max_size=40)),
    st.sampled_from(sorted(mikey._TS_LEN)).flatmap(
        lambda t: st.integers(0, 2 ** (8 * mikey._TS_LEN[t]) - 1).map(
            lambda v: mikey.Timestamp(t, v))),
    st.builds(mikey.Rand, st.binary(min_size=1, max_size=40)),
    st.builds(mikey.Id, st.sampled_from([mikey.ID_NAI, mikey.ID_URI, mikey.ID_BYTES]),
              st.binary(max_size=40)),
    st.builds(mikey.SecurityPolicy, u8, u8,
              st.lists(st.tuples(u8, st.binary(max_size=8)), max_size=3).map(
                  lambda ps: b"".join(bytes([t, len(v)]) + v for t, v in ps))),
    st.builds(mikey.Error, u8, st.binary(min_size=2, max_size=2)),
    st.sampled_from(sorted(mikey._MAC_LEN)).flatmap(
        lambda m: st.binary(min_size=mikey._MAC_LEN[m], max_size=mikey._MAC_LEN[m]).map(
            lambda mac: mikey.Verification(m, mac))),
    st.tuples(st.sampled_from([mikey.ENCR_NULL, mikey.ENCR_AES_CM_128, mikey.ENCR_AES_KW_128]),
              st.binary(max_size=60), st.sampled_from(sorted(mikey._MAC_LEN))).flatmap(
        lambda t: st.binary(min_size=mikey._MAC_LEN[t[2]], max_size=mikey._MAC_LEN[t[2]]).map(
            lambda mac: mikey.Kemac(t[0], t[1], t[2], mac))),
)
messages = st.builds(mikey.Message, headers(), st.lists(payloads, max_size=6))


@st.composite
def key_data(draw):
    key_type = draw(st.sampled_from([mikey.KEY_TGK, mikey.KEY_TGK_SALT, mikey.KEY_TEK,
                                     mikey.KEY_TEK_SALT]))
    kv_type = draw(st.sampled_from([mikey.KV_NULL, mikey.KV_SPI, mikey.KV_INTERVAL]))
    salt = draw(st.binary(max_size=14)) if key_type in mikey._SALTED else None
    if kv_type == mikey.KV_NULL:
        kv = b""
    elif kv_type == mikey.KV_SPI:
        kv = draw(st.binary(max_size=8))
    else:
        vf, vt = draw(st.binary(max_size=8)), draw(st.binary(max_size=8))
        kv = bytes([len(vf)]) + vf + bytes([len(vt)]) + vt
    return mikey.KeyData(key_type, kv_type, draw(st.binary(max_size=32)), salt, kv)


def damage(data, draw):
    data = bytearray(data)
    for _ in range(draw(st.integers(1, 3))):
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        op = draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        if op == "flip" and data:
            data[pos] ^= draw(st.integers(1, 255))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=4))
        elif op == "delete":
            del data[pos:pos + draw(st.integers(1, 4))]
        else:
            del data[pos:]
    return bytes(data)


@st.composite
def msk_messages(draw):
    msk_id = draw(st.binary(min_size=4, max_size=4))
    msk = draw(st.binary(min_size=16, max_size=16))
    counter = draw(st.integers(0, 2 ** 32 - 1))
    rand = draw(st.binary(min_size=16, max_size=16))
    idi, idr = draw(st.binary(min_size=1, max_size=20)), draw(st.binary(min_size=1, max_size=40))
    data = mikey.build_msk_message(MUK, KEY_DOMAIN, msk_id, msk, counter, rand, idi, idr)
    return data, (msk_id, msk, counter, rand, idi, idr)


@st.composite
def damaged(draw, wire):
    return damage(draw(wire), draw)


untrusted = st.one_of(
    st.binary(max_size=120),
    damaged(messages.map(mikey.encode)),
    damaged(msk_messages().map(lambda m: m[0])),
    st.binary(min_size=1, max_size=64).map(lambda b: b"\x01" + b),
)


# ---------------------------------------------------------------- the codec


@given(messages)
def test_round_trip(message):
    assert mikey.parse_message(mikey.encode(message)) == message


@given(st.lists(key_data(), min_size=1, max_size=3))
def test_key_data_round_trip(items):
    assert mikey.parse_key_data(mikey.encode_key_data(items)) == items


@given(st.binary(min_size=3, max_size=3), st.binary(min_size=4, max_size=4),
       st.one_of(st.none(), st.binary(min_size=2, max_size=2)), st.randoms(use_true_random=False))
def test_key_id_round_trip_in_any_order(domain, msk_id, mtk_id, rng):
    data = mikey.encode_key_id(domain, msk_id, mtk_id)
    want = mikey.KeyId(domain, msk_id, mtk_id)
    assert mikey.parse_key_id(data) == want
    assert mikey.parse_key_id(data, need_mtk_id=mtk_id is not None) == want
    # RFC 4563 4: Key ID Type sub-payloads, each type || length || ID, in any order
    subs = [bytes([0, 3]) + domain, bytes([1, 4]) + msk_id] + \
        ([] if mtk_id is None else [bytes([2, 2]) + mtk_id])
    rng.shuffle(subs)
    assert mikey.parse_key_id(b"".join(subs)) == want


@budget(0.5)
@given(msk_messages())
def test_msk_message_opens_to_what_was_put_in(m):
    data, (msk_id, msk, counter, rand, idi, idr) = m
    got = mikey.parse_msk_message(MUK, data)
    assert (got.msk_id, got.msk, got.counter, got.rand, got.idi, got.idr) == \
        (msk_id, msk, counter, rand, idi, idr)
    assert got.key_domain_id == KEY_DOMAIN
    mikey.check_verification(MUK, data, mikey.build_verification(MUK, data))


@given(untrusted)
@example(b"\x01\x00\x0b\x00\x00\x00\x00\x00\x00\x01\x00\x00")  # RAND of length 0
@example(b"\x01\x00\x00\x00\x00\x00\x00\x00\xff\x00")  # 255 SRTP CSs, no map info
def test_parsers_raise_only_mikey_error(data):
    for parse in (mikey.parse_message, mikey.parse_key_data, mikey.parse_key_id,
                  mikey.peek_key_id):
        try:
            parse(data)
        except mikey.MikeyError:
            pass
    try:
        message = mikey.parse_message(data)
    except mikey.MikeyError:
        return
    assert mikey.encode(message) == data  # strict: one wire form per message


@budget(0.5)
@given(msk_messages(), st.data())
def test_damaged_msk_message_never_opens(m, data):
    original = m[0]
    damaged = damage(original, data.draw)
    if damaged == original:
        return
    for parse in (lambda d: mikey.parse_msk_message(MUK, d), lambda d: mikey.parse_mtk_message(MUK[:16], d),
                  lambda d: mikey.build_verification(MUK, d)):
        try:
            parse(damaged)
        except mikey.MikeyError:
            continue
        raise AssertionError("a damaged message was accepted")


@budget(0.5)
@given(msk_messages(), st.data())
def test_damaged_verification_never_checks(m, data):
    original = m[0]
    answer = mikey.build_verification(MUK, original)
    damaged = damage(answer, data.draw)
    if damaged == answer:
        return
    try:
        mikey.check_verification(MUK, original, damaged)
    except mikey.MikeyError:
        return
    raise AssertionError("a damaged verification was accepted")


# ---------------------------------------------------------------- the UDP endpoints


UE = "127.0.0.5"
BTID = "I1U8vpY3qJ0hiuZNrke/NQ==@bsf.home1.net"


@budget(0.5)
@given(st.lists(untrusted, min_size=1, max_size=4))
def test_bmsc_verification_socket(datagrams):
    clock = Clock()
    registry = CollectorRegistry()
    metrics = Metrics("n", registry).forRole("bmsc")
    delivery = MikeyDelivery(clock, MemoryStorage().bmsc, b"bmsc.home1.net", 4359, metrics,
                             random=lambda n: b"\x5a" * n)
    udp = FakeDatagramTransport(port=5000)
    delivery.makeConnection(udp)
    msk = Msk("urn:mbmsd:news", KEY_DOMAIN, b"\x00\x07\x00\x01", bytes(16), 0, 3600)
    results = []
    delivery.deliver(UE, BTID, MUK, msk).addBoth(results.append)
    [(sent, _)] = udp.written
    answer = mikey.build_verification(MUK, sent)

    def count(result):
        return registry.get_sample_value("mbmsd_bmsc_mikey_messages_total",
                                         {"node": "n", "role": "bmsc", "result": result})

    with no_failure_logged():
        for data in datagrams:
            delivery.datagramReceived(data, (UE, 4359))
        assert results == [] and count("verified") == 0
        assert count("bad_verification") == len(datagrams)
        delivery.datagramReceived(answer, (UE, 4359))
    assert results == [True] and count("verified") == 1


@budget(0.5)
@given(st.lists(untrusted, min_size=1, max_size=4))
def test_ue_msk_receiver(datagrams):
    got = []
    receiver = MikeyReceiver(MUK, got.append)
    udp = FakeDatagramTransport(port=4359)
    receiver.makeConnection(udp)
    with no_failure_logged():
        for data in datagrams:
            receiver.datagramReceived(data, ("127.0.0.1", 5000))
    assert got == []
