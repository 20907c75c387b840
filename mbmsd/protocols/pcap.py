"""
A tiny libpcap writer for tests: UDP datagrams wrapped in Ethernet + IPv4 or
IPv6 headers, so that tshark can decode what we send without a live capture
(libpcap's file format, pcap-savefile(5)).
"""

import ipaddress
import struct
from collections.abc import Iterable

__all__ = ["write_pcap", "udp_frame"]

_PCAP_MAGIC = 0xA1B2C3D4
_LINKTYPE_ETHERNET = 1
_SNAPLEN = 65535
_ETH_SRC = b"\x02\x00\x00\x00\x00\x01"  # locally administered
_ETH_DST = b"\x02\x00\x00\x00\x00\x02"


def _checksum(data: bytes) -> int:
    # RFC 1071 ones' complement sum.
    if len(data) % 2:
        data += b"\x00"
    s: int = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF


def _port(value: object) -> int:
    if not isinstance(value, int) or not 0 <= value <= 0xFFFF:
        raise ValueError("UDP port must be 0..65535")
    return value


def udp_frame(src_ip: str, src_port: int, dst_ip: str, dst_port: int, payload: bytes) -> bytes:
    """One Ethernet frame carrying C{payload} in UDP over IPv4 or IPv6."""
    src = ipaddress.ip_address(src_ip)
    dst = ipaddress.ip_address(dst_ip)
    if src.version != dst.version:
        raise ValueError("source and destination must be the same IP version")
    payload = bytes(payload)
    udp_len = 8 + len(payload)
    if udp_len > 0xFFFF:
        raise ValueError("UDP payload too large")
    sport, dport = _port(src_port), _port(dst_port)
    if src.version == 4:
        pseudo = src.packed + dst.packed + struct.pack("!BBH", 0, 17, udp_len)
    else:
        pseudo = src.packed + dst.packed + struct.pack("!IxxxB", udp_len, 17)
    udp = struct.pack("!HHHH", sport, dport, udp_len, 0) + payload
    csum = _checksum(pseudo + udp) or 0xFFFF
    udp = udp[:6] + struct.pack("!H", csum) + udp[8:]
    if src.version == 4:
        ip = struct.pack(
            "!BBHHHBBH4s4s", 0x45, 0, 20 + udp_len, 0, 0x4000, 64, 17, 0, src.packed, dst.packed
        )
        ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
        ethertype = 0x0800
    else:
        ip = struct.pack("!IHBB16s16s", 6 << 28, udp_len, 17, 64, src.packed, dst.packed)
        ethertype = 0x86DD
    return _ETH_DST + _ETH_SRC + struct.pack("!H", ethertype) + ip + udp


def write_pcap(
    path: str,
    datagrams: Iterable[tuple[str, int, str, int, bytes]],
    start_time: int = 1_700_000_000,
) -> None:
    """
    Write C{datagrams}, a list of (src_ip, src_port, dst_ip, dst_port,
    payload) tuples, to a libpcap file at C{path} (Ethernet link type), one
    packet per second from C{start_time} (so the file is deterministic).
    """
    frames = [udp_frame(*d) for d in datagrams]
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", _PCAP_MAGIC, 2, 4, 0, 0, _SNAPLEN, _LINKTYPE_ETHERNET))
        for i, frame in enumerate(frames):
            f.write(struct.pack("<IIII", start_time + i, 0, len(frame), len(frame)) + frame)
