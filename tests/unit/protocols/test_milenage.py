"""
Milenage against the TS 35.208 clause 4.3 conformance test sets 1-4
(values copied from the published test data).
"""

import pytest

from mbmsd.protocols.milenage import (
    AuthVector,
    AutsMacFailure,
    MacFailure,
    Milenage,
    MilenageError,
    UeAuthResult,
    build_auts,
    compute_opc,
    generate_vector,
    int_to_sqn,
    sqn_to_int,
    ue_authenticate,
    verify_auts,
)

h = bytes.fromhex

# TS 35.208 4.3 test sets 1-4; AUTN computed outside mbmsd by TS 33.102 6.3.2.
TEST_SETS = [
    dict(
        name="35.208 set 1",
        k="465b5ce8b199b49faa5f0a2ee238a6bc",
        rand="23553cbe9637a89d218ae64dae47bf35",
        sqn="ff9bb4d0b607", amf="b9b9",
        op="cdc202d5123e20f62b6d676ac72cb318",
        opc="cd63cb71954a9f4e48a5994e37a02baf",
        f1="4a9ffac354dfafb3", f1star="01cfaf9ec4e871e9",
        f2="a54211d5e3ba50bf",
        f3="b40ba9a3c58b2a05bbf0d987b21bf8cb",
        f4="f769bcd751044604127672711c6d3441",
        f5="aa689c648370", f5star="451e8beca43b",
        autn="55f328b43577b9b94a9ffac354dfafb3",
    ),
    dict(
        name="35.208 set 2",
        k="fec86ba6eb707ed08905757b1bb44b8f",
        rand="9f7c8d021accf4db213ccff0c7f71a6a",
        sqn="9d0277595ffc", amf="725c",
        op="dbc59adcb6f9a0ef735477b7fadf8374",
        opc="1006020f0a478bf6b699f15c062e42b3",
        f1="9cabc3e99baf7281", f1star="95814ba2b3044324",
        f2="8011c48c0c214ed2",
        f3="5dbdbb2954e8f3cde665b046179a5098",
        f4="59a92d3b476a0443487055cf88b2307b",
        f5="33484dc2136b", f5star="deacdd848cc6",
        autn="ae4a3a9b4c97725c9cabc3e99baf7281",
    ),
    dict(
        name="35.208 set 3",
        k="9e5944aea94b81165c82fbf9f32db751",
        rand="ce83dbc54ac0274a157c17f80d017bd6",
        sqn="0b604a81eca8", amf="9e09",
        op="223014c5806694c007ca1eeef57f004f",
        opc="a64a507ae1a2a98bb88eb4210135dc87",
        f1="74a58220cba84c49", f1star="ac2cc74a96871837",
        f2="f365cd683cd92e96",
        f3="e203edb3971574f5a94b0d61b816345d",
        f4="0c4524adeac041c4dd830d20854fc46b",
        f5="f0b9c08ad02e", f5star="6085a86c6f63",
        autn="fbd98a0b3c869e0974a58220cba84c49",
    ),
    dict(
        name="35.208 set 4",
        k="4ab1deb05ca6ceb051fc98e77d026a84",
        rand="74b0cd6031a1c8339b2b6ce2b8c4a186",
        sqn="e880a1b580b6", amf="9f07",
        op="2d16c5cd1fdf6b22383584e3bef2a8d8",
        opc="dcf07cbd51855290b92a07a9891e523e",
        f1="49e785dd12626ef2", f1star="9e85790336bb3fa2",
        f2="5860fc1bce351e7e",
        f3="7657766b373d1c2138f307e3de9242f9",
        f4="1c42e960d89b8fa99f2744e0708ccb53",
        f5="31e11a609118", f5star="fe2555e54aa9",
        autn="d961bbd511ae9f0749e785dd12626ef2",
    ),
]

ids = [t["name"] for t in TEST_SETS]


@pytest.mark.parametrize("t", TEST_SETS, ids=ids)
def test_opc(t):
    assert compute_opc(h(t["k"]), h(t["op"])) == h(t["opc"])


@pytest.mark.parametrize("t", TEST_SETS, ids=ids)
def test_f_functions(t):
    m = Milenage(h(t["k"]), h(t["opc"]))
    rand, sqn, amf = h(t["rand"]), h(t["sqn"]), h(t["amf"])
    assert m.f1(rand, sqn, amf) == h(t["f1"])
    assert m.f1star(rand, sqn, amf) == h(t["f1star"])
    res, ck, ik, ak = m.f2345(rand)
    assert res == h(t["f2"])
    assert ck == h(t["f3"])
    assert ik == h(t["f4"])
    assert ak == h(t["f5"])
    assert m.f5star(rand) == h(t["f5star"])


@pytest.mark.parametrize("t", TEST_SETS, ids=ids)
def test_from_op(t):
    m = Milenage.fromOp(h(t["k"]), h(t["op"]))
    assert m.f1(h(t["rand"]), h(t["sqn"]), h(t["amf"])) == h(t["f1"])


@pytest.mark.parametrize("t", TEST_SETS, ids=ids)
def test_encryptor_reuse_is_stateless(t):
    # The cached ECB context must give the same answers on repeated calls.
    m = Milenage(h(t["k"]), h(t["opc"]))
    for _ in range(3):
        assert m.f2345(h(t["rand"]))[1] == h(t["f3"])
        assert m.f5star(h(t["rand"])) == h(t["f5star"])


@pytest.mark.parametrize("t", TEST_SETS, ids=ids)
def test_generate_vector(t):
    av = generate_vector(h(t["k"]), h(t["opc"]), h(t["rand"]), h(t["sqn"]), h(t["amf"]))
    assert isinstance(av, AuthVector)
    assert av.rand == h(t["rand"])
    assert av.xres == h(t["f2"])
    assert av.ck == h(t["f3"])
    assert av.ik == h(t["f4"])
    assert av.autn == h(t["autn"])
    # AUTN layout: SQN xor AK || AMF || MAC-A (TS 33.102 6.3.2)
    sqn_xor_ak = bytes(a ^ b for a, b in zip(h(t["sqn"]), h(t["f5"])))
    assert av.autn == sqn_xor_ak + h(t["amf"]) + h(t["f1"])


@pytest.mark.parametrize("t", TEST_SETS, ids=ids)
def test_ue_authenticate(t):
    r = ue_authenticate(h(t["k"]), h(t["opc"]), h(t["rand"]), h(t["autn"]))
    assert isinstance(r, UeAuthResult)
    assert r.sqn == h(t["sqn"])
    assert r.res == h(t["f2"])
    assert r.ck == h(t["f3"])
    assert r.ik == h(t["f4"])


@pytest.mark.parametrize("t", TEST_SETS, ids=ids)
def test_auts_layout_and_round_trip(t):
    k, opc, rand = h(t["k"]), h(t["opc"]), h(t["rand"])
    sqn_ms = h(t["sqn"])
    auts = build_auts(k, opc, rand, sqn_ms)
    assert len(auts) == 14
    # AUTS = SQN_MS xor AK* || MAC-S with AMF* = 0000 (TS 33.102 6.3.3).
    # f5* does not depend on SQN/AMF, so the vector's AK* applies.
    assert auts[:6] == bytes(a ^ b for a, b in zip(sqn_ms, h(t["f5star"])))
    assert verify_auts(k, opc, rand, auts) == sqn_ms


def test_auts_mac_s_uses_amf_star_zero():
    # With the test-set AMF the MAC-S would be the vector's f1*; with AMF* = 0000
    # it must differ (test set 1 AMF is b9b9).
    t = TEST_SETS[0]
    auts = build_auts(h(t["k"]), h(t["opc"]), h(t["rand"]), h(t["sqn"]))
    assert auts[6:] != h(t["f1star"])
    m = Milenage(h(t["k"]), h(t["opc"]))
    assert auts[6:] == m.f1star(h(t["rand"]), h(t["sqn"]), b"\x00\x00")


def test_auts_flipped_bits_rejected():
    t = TEST_SETS[0]
    k, opc, rand = h(t["k"]), h(t["opc"]), h(t["rand"])
    auts = build_auts(k, opc, rand, int_to_sqn(0x20))
    for i in range(len(auts) * 8):
        bad = bytearray(auts)
        bad[i // 8] ^= 1 << (i % 8)
        with pytest.raises(AutsMacFailure):
            verify_auts(k, opc, rand, bytes(bad))
    # Wrong RAND is also a MAC-S failure.
    with pytest.raises(AutsMacFailure):
        verify_auts(k, opc, h(TEST_SETS[1]["rand"]), auts)


@pytest.mark.parametrize("n", [0, 13, 15, 30])
def test_auts_wrong_length(n):
    t = TEST_SETS[0]
    with pytest.raises(MilenageError) as e:
        verify_auts(h(t["k"]), h(t["opc"]), h(t["rand"]), bytes(n))
    assert not isinstance(e.value, AutsMacFailure)


@pytest.mark.parametrize("byte", [0, 5, 6, 7, 8, 15])
def test_tampered_autn_mac_failure(byte):
    t = TEST_SETS[0]
    bad = bytearray(h(t["autn"]))
    bad[byte] ^= 0x01
    with pytest.raises(MacFailure):
        ue_authenticate(h(t["k"]), h(t["opc"]), h(t["rand"]), bytes(bad))


def test_autn_from_other_subscriber_fails():
    t1, t2 = TEST_SETS[0], TEST_SETS[1]
    with pytest.raises(MacFailure):
        ue_authenticate(h(t2["k"]), h(t2["opc"]), h(t1["rand"]), h(t1["autn"]))


def test_exception_hierarchy():
    assert issubclass(MilenageError, ValueError)
    assert issubclass(MacFailure, MilenageError)
    assert issubclass(AutsMacFailure, MilenageError)


K16 = bytes(16)


@pytest.mark.parametrize(
    "call",
    [
        lambda: Milenage(bytes(15), K16),
        lambda: Milenage(K16, bytes(17)),
        lambda: Milenage(b"", K16),
        lambda: compute_opc(K16, bytes(8)),
        lambda: Milenage(K16, K16).f1(bytes(15), bytes(6), bytes(2)),
        lambda: Milenage(K16, K16).f1(K16, bytes(5), bytes(2)),
        lambda: Milenage(K16, K16).f1star(K16, bytes(6), bytes(3)),
        lambda: Milenage(K16, K16).f2345(bytes(17)),
        lambda: Milenage(K16, K16).f5star(b""),
        lambda: generate_vector(K16, K16, K16, bytes(7), bytes(2)),
        lambda: generate_vector(K16, K16, K16, bytes(6), bytes(1)),
        lambda: ue_authenticate(K16, K16, K16, bytes(15)),
        lambda: build_auts(K16, K16, K16, bytes(5)),
        lambda: sqn_to_int(bytes(7)),
        lambda: int_to_sqn(-1),
        lambda: int_to_sqn(1 << 48),
        lambda: Milenage("0" * 16, K16),
    ],
)
def test_wrong_length_inputs(call):
    with pytest.raises(ValueError):
        call()


def test_error_does_not_echo_key():
    key = h("465b5ce8b199b49faa5f0a2ee238a6bc00")
    with pytest.raises(ValueError) as e:
        Milenage(key, K16)
    assert "465b5ce8" not in str(e.value)


def test_reprs_hide_keys():
    t = TEST_SETS[0]
    av = generate_vector(h(t["k"]), h(t["opc"]), h(t["rand"]), h(t["sqn"]), h(t["amf"]))
    r = repr(av)
    for secret in ("f3", "f4", "f2"):
        assert t[secret] not in r
        assert repr(h(t[secret])) not in r
    assert "rand" in r
    ue = ue_authenticate(h(t["k"]), h(t["opc"]), h(t["rand"]), h(t["autn"]))
    r = repr(ue)
    for secret in ("f3", "f4", "f2"):
        assert repr(h(t[secret])) not in r
    m = Milenage(h(t["k"]), h(t["opc"]))
    assert repr(h(t["k"])) not in repr(m) and repr(h(t["opc"])) not in repr(m)


def test_sqn_helpers():
    assert sqn_to_int(h("ff9bb4d0b607")) == 0xFF9BB4D0B607
    assert int_to_sqn(0xFF9BB4D0B607) == h("ff9bb4d0b607")
    assert int_to_sqn(0) == bytes(6)
    assert int_to_sqn((1 << 48) - 1) == b"\xff" * 6
