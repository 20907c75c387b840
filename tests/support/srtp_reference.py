"""
An SRTP receiver written in the test from RFC 3711 itself (key derivation
4.3.1, AES-CM 4.1.1, HMAC-SHA1 4.2.1, the authenticated portion 3.1), with
the `cryptography` library's AES and Python's hmac: independent of libsrtp,
which mbmsd uses. tests/unit/protocols/test_srtp.py checks it against RFC 3711 B.3.
Only ROC 0 and a key derivation rate of 0, which is what the tests capture.
"""

import hashlib
import hmac
import struct

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

LABEL_ENCRYPTION, LABEL_AUTH, LABEL_SALT = 0, 1, 2
TAG_LEN = 10


def _keystream(key, iv, n):
    enc = Cipher(algorithms.AES(key), modes.CTR(iv)).encryptor()
    return enc.update(bytes(n))


def derive(master_key, master_salt, label, n):
    """RFC 3711 4.3.1 with kdr 0: x = key_id XOR master salt, AES-CM of x * 2^16."""
    key_id = label << 48  # label || r, r = 0
    x = int.from_bytes(master_salt, "big") ^ key_id
    return _keystream(master_key, (x << 16).to_bytes(16, "big"), n)


def session_keys(master_key, master_salt):
    return (derive(master_key, master_salt, LABEL_ENCRYPTION, 16),
            derive(master_key, master_salt, LABEL_AUTH, 20),
            derive(master_key, master_salt, LABEL_SALT, 14))


def header_length(packet):
    cc = packet[0] & 0x0F
    n = 12 + 4 * cc
    if packet[0] & 0x10:
        n += 4 + 4 * struct.unpack_from("!H", packet, n + 2)[0]
    return n


def unprotect(master_key, master_salt, packet, roc=0):
    """The RTP packet of an SRTP packet (AES_CM_128_HMAC_SHA1_80), or None when the tag fails."""
    k_e, k_a, k_s = session_keys(master_key, master_salt)
    body, tag = packet[:-TAG_LEN], packet[-TAG_LEN:]
    mac = hmac.new(k_a, body + struct.pack("!I", roc), hashlib.sha1).digest()[:TAG_LEN]
    if not hmac.compare_digest(mac, tag):
        return None
    seq, ssrc = struct.unpack_from("!H", body, 2)[0], struct.unpack_from("!I", body, 8)[0]
    index = (roc << 16) | seq
    iv = (int.from_bytes(k_s, "big") << 16) ^ (ssrc << 64) ^ (index << 16)
    n = header_length(body)
    payload = body[n:]
    plain = bytes(a ^ b for a, b in zip(payload, _keystream(k_e, iv.to_bytes(16, "big"), len(payload))))
    return body[:n] + plain
