"""
A streaming service end to end, against twistd as operators run it
(etc/mbmsd.toml with its demo streaming service moved to free ports and a
multicast bearer on loopback, so that the test can listen on the bearer
beside the UE):

  - the test feeds its own RTP packets into media_source; `mbms-ue watch`
    runs the whole procedure, opens the MTK messages with its MSK and
    writes the decrypted packets to an rtpdump file: byte for byte the fed
    packets. The bearer's packets, captured by the test, are not the plain
    ones, and the test's own RFC 3711 receiver (tests/support/srtp_reference.py,
    not libsrtp) opens them with the MTKs `--show-keys` printed;
  - ffmpeg sends an H.264 test pattern as RTP; `mbms-ue watch --play`
    re-emits it and ffmpeg decodes the frames through an SDP file;
  - ffmpeg's own SRTP input, given the MTK `--show-keys` printed, joins the
    bearer and decodes the frames;
  - a UE without an authorization watches nothing.
"""

import json
import select
import socket
import struct
import subprocess
import threading
import time

import pytest

from tests.support import srtp_reference as ref
from tests.support.daemon import Daemon, metric, tool, wait_for
from tests.support.helpers import require_tool
from tests.support.ports import free_port

pytestmark = pytest.mark.external

SERVICE = "urn:mbmsd:news"
GROUP = "239.255.77.%d"


class Streaming:
    """The demo node with its streaming service on free ports and a multicast bearer."""

    def __init__(self, tmp_path, rotation=2, repeat=0.5):
        self.source = free_port()
        self.port = free_port()
        self.keyPort = free_port()
        self.group = GROUP % (self.port % 250 + 1,)
        overlay = ('[[bmsc.service]]\nid = "%s"\nmedia_source = "127.0.0.1:%d"\n'
                   'bearer = "%s:%d"\nbearer_key_port = %d\nmtk_rotation = %g\n'
                   'mtk_repeat = %g\n' % (SERVICE, self.source, self.group, self.port,
                                          self.keyPort, rotation, repeat))
        self.daemon = Daemon(tmp_path, overlay=overlay)

    def watch(self, *extra, seconds=6, impu=None):
        d = self.daemon
        args = [tool("mbms-ue"), "watch", "--bsf", d.ub,
                "--pcscf", "sip:127.0.0.1:%d" % d.ports["pcscf"], "--bmsc", d.url("bmsc", ""),
                "--mikey-port", str(d.ports["mikey"]), "--bearer", "%s:%d" % (self.group, self.port),
                "--key-port", str(self.keyPort), "--seconds", str(seconds), *extra]
        if impu:
            args += ["--impu", impu]
        return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def packet(seq):
    """The test's own RTP packets (RFC 3550 5.1 by hand), each payload different."""
    payload = struct.pack("!I", seq) * 50 + bytes([seq & 0xFF]) * (seq % 17)
    return struct.pack("!BBHII", 0x80, 96, seq, seq * 3000, 0x5EED5EED) + payload


class Feeder(threading.Thread):
    """Sends packet(1), packet(2), ... at 50 a second into media_source."""

    def __init__(self, port):
        threading.Thread.__init__(self, daemon=True)
        self.port = port
        self.stopping = threading.Event()
        self.sent = {}

    def run(self):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        seq = 0
        while not self.stopping.is_set():
            seq += 1
            self.sent[seq] = packet(seq)
            s.sendto(self.sent[seq], ("127.0.0.1", self.port))
            self.stopping.wait(0.02)
        s.close()

    def stop(self):
        self.stopping.set()
        self.join()


class Capture(threading.Thread):
    """Listens on the bearer's group (media and key ports) beside the UE."""

    def __init__(self, group, ports):
        threading.Thread.__init__(self, daemon=True)
        self.socks = {}
        for port in ports:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((group, port))
            s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                         socket.inet_aton(group) + socket.inet_aton("127.0.0.1"))
            self.socks[s] = port
        self.got = {port: [] for port in ports}
        self.stopping = threading.Event()

    def run(self):
        while not self.stopping.is_set():
            ready, _, _ = select.select(list(self.socks), [], [], 0.1)
            for s in ready:
                self.got[self.socks[s]].append(s.recv(65536))

    def stop(self):
        self.stopping.set()
        self.join()
        for s in self.socks:
            s.close()


def read_rtpdump(path):
    """The packets of an rtpdump file (rtptools' format, read here by hand)."""
    data = open(path, "rb").read()
    pos = data.index(b"\n") + 1 + 16  # the text line, RD_hdr_t
    out = []
    while pos < len(data):
        length, plen, _ = struct.unpack_from("!HHI", data, pos)
        out.append(data[pos + 8:pos + 8 + plen])
        pos += length
    return out


def test_watch_decrypts_what_was_fed(tmp_path):
    s = Streaming(tmp_path)
    d = s.daemon.start()
    feeder = Feeder(s.source)
    capture = Capture(s.group, [s.port, s.keyPort])
    out = tmp_path / "plain.rtpdump"
    feeder.start()
    capture.start()
    try:
        p = s.watch("--out", str(out), "--show-keys", seconds=6)
        early = []
        for line in p.stdout:  # the UE holds an MTK: its key port is open
            early.append(line)
            if json.loads(line)["step"] in ("mtk", "bye"):
                break
        # on the key port: an old MTK message again (its counter is not fresh), and the
        # newest with its MAC broken
        inject = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        inject.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("127.0.0.1"))
        old, newest = capture.got[s.keyPort][0], capture.got[s.keyPort][-1]
        inject.sendto(old, (s.group, s.keyPort))
        inject.sendto(newest[:-1] + bytes([newest[-1] ^ 1]), (s.group, s.keyPort))
        inject.close()
        stdout, stderr = p.communicate(timeout=90)
        stdout = "".join(early) + stdout
        report = stdout + stderr + d.log()[-5000:]
        feeder.stop()
        # every packet the BM-SC counted as forwarded reached the bearer
        assert wait_for(lambda: metric(d, "mbmsd_bmsc_srtp_packets_total", service=SERVICE)
                        == len(capture.got[s.port])), report
        rotations = metric(d, "mbmsd_bmsc_mtk_rotations_total", service=SERVICE)
        keys = metric(d, "mbmsd_bmsc_mtk_messages_total", service=SERVICE)
    finally:
        feeder.stop()
        capture.stop()
        d.stop()
    assert p.returncode == 0, report
    lines = [json.loads(x) for x in stdout.splitlines() if x.strip()]
    steps = [x["step"] for x in lines]
    assert steps[:5] == ["register", "bootstrap", "invite", "msk-register", "msk"], report
    assert steps[-1] == "bye" and lines[-1]["status"] == 200
    stats = [x for x in lines if x["step"] == "watch"]
    assert len(stats) >= 5 and stats[-1]["result"] == "ok"  # one a second, then the last
    assert stats[-1]["decrypted"] >= 150
    assert stats[-1]["mtkRejected"] == {"replay": 1, "mac": 1}  # ignored and counted
    mtks = [x for x in lines if x["step"] == "mtk"]
    assert len(mtks) >= 3  # MTK rotations every 2 s during the watch
    assert len({m["mtkId"] for m in mtks}) == len(mtks)
    assert stats[-1]["mtkId"] == mtks[-1]["mtkId"] and stats[-1]["mskId"] == lines[4]["mskId"]

    # what the UE decrypted is, byte for byte, what the test fed in
    plain = read_rtpdump(str(out))
    assert len(plain) == stats[-1]["decrypted"]
    for x in plain:
        seq = struct.unpack_from("!H", x, 2)[0]
        assert x == feeder.sent[seq]
    # the bearer carried none of them in the clear
    captured = capture.got[s.port]
    assert len(captured) >= len(plain)
    fed = set(feeder.sent.values())
    assert not fed & set(captured)
    payloads = {x[12:] for x in fed}
    assert not any(c[12:-10] in payloads for c in captured)
    # an independent RFC 3711 receiver opens them with the MTKs --show-keys printed
    opened = {}
    for c in captured:
        for m in mtks:
            rtp = ref.unprotect(bytes.fromhex(m["mtk"]), bytes.fromhex(m["salt"]), c)
            if rtp is not None:
                opened[struct.unpack_from("!H", rtp, 2)[0]] = rtp
                break
    assert len(opened) >= len(plain)
    assert all(feeder.sent[seq] == rtp for seq, rtp in opened.items())
    assert set(x for x in plain) <= set(opened.values())
    # metrics: protected, MTK messages, rotations; no key in them
    assert keys > 0 and capture.got[s.keyPort]  # (repeats go on: counted before the last)
    assert rotations >= len(mtks)
    assert all(m["mtk"] not in d.log() for m in mtks)


def test_watch_without_authorization_decrypts_nothing(tmp_path):
    s = Streaming(tmp_path)
    d = s.daemon.start()
    try:
        # an IMPU the SCF has no subscription for: the INVITE is refused, nothing is watched
        p = s.watch(seconds=2, impu="sip:stranger@home1.net")
        stdout, stderr = p.communicate(timeout=60)
    finally:
        d.stop()
    assert p.returncode == 1
    steps = [json.loads(x)["step"] for x in stdout.splitlines() if x.strip()]
    assert "watch" not in steps and "mtk" not in steps


def test_ffmpeg_stream_is_decoded_after_watch(tmp_path):
    ffmpeg = require_tool("ffmpeg")
    s = Streaming(tmp_path, rotation=3, repeat=0.5)
    d = s.daemon.start()
    play = free_port()
    sdp = tmp_path / "play.sdp"
    sdp.write_text("v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=watch\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
                   "m=video %d RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n"
                   "a=fmtp:96 packetization-mode=1\r\n" % (play,))
    frames = tmp_path / "frames.txt"
    # the decoder of the re-emitted plain RTP, listening before anything is sent
    decoder = subprocess.Popen(
        [ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error", "-protocol_whitelist",
         "file,udp,rtp", "-i", str(sdp), "-t", "5", "-f", "framemd5", str(frames)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(0.5)  # ffmpeg binds its port after reading the SDP
    source = None
    try:
        watch = s.watch("--play", "udp:127.0.0.1:%d" % (play,), seconds=9)
        early = []
        for line in watch.stdout:  # the UE holds an MTK: the stream may start
            early.append(line)
            if json.loads(line)["step"] in ("mtk", "bye"):
                break
        # an H.264 test pattern with periodic key frames and SPS/PPS in band
        source = subprocess.Popen(
            [ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error", "-re", "-f", "lavfi",
             "-i", "testsrc=size=320x240:rate=25", "-t", "12", "-c:v", "libx264", "-g", "25",
             "-bsf:v", "dump_extra", "-pix_fmt", "yuv420p", "-tune", "zerolatency", "-f", "rtp",
             "-payload_type", "96", # its RTCP to a port of its own (by default the source's + 1, which may be the bearer's)
             "rtp://127.0.0.1:%d?pkt_size=1200&rtcpport=%d" % (s.source, free_port())],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        stdout, stderr = watch.communicate(timeout=90)
        stdout = "".join(early) + stdout
        _, decodeErrors = decoder.communicate(timeout=60)
    finally:
        if source is not None:
            source.kill()
            source.wait()
        if decoder.poll() is None:
            decoder.kill()
        d.stop()
    assert watch.returncode == 0, stdout + stderr + d.log()[-3000:]
    lines = [json.loads(x) for x in stdout.splitlines() if x.strip()]
    assert not any({"mtk", "salt", "srtpParams", "msk"} & set(x) for x in lines)  # no --show-keys
    last = lines[-2]
    assert last["step"] == "watch" and last["decrypted"] > 100 and last["authFailed"] == 0, stdout
    digests = [x for x in frames.read_text().splitlines() if x and not x.startswith("#")]
    assert len(digests) >= 50, decodeErrors  # 2 s of 25 frames a second at least
    assert decoder.returncode == 0 and decodeErrors.strip() == "", decodeErrors


def test_ffmpeg_decrypts_the_bearer_with_the_printed_mtk(tmp_path):
    """
    ffmpeg's own SRTP (the SDP's a=crypto, RFC 4568 inline key = the MTK and
    its salt that `--show-keys` prints) decodes the bearer's packets, joined
    beside the UE: libsrtp is not in that path.
    """
    ffmpeg = require_tool("ffmpeg")
    s = Streaming(tmp_path, rotation=60, repeat=0.5)
    d = s.daemon.start()
    decoder = source = None
    frames = tmp_path / "bearer-frames.txt"
    try:
        watch = s.watch("--show-keys", seconds=8)
        early = []
        for line in watch.stdout:
            early.append(line)
            if json.loads(line)["step"] in ("mtk", "bye"):
                break
        mtk = json.loads(early[-1])
        assert mtk["step"] == "mtk", "".join(early)
        sdp = tmp_path / "bearer.sdp"
        sdp.write_text(
            "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=bearer\r\nc=IN IP4 %s/1\r\nt=0 0\r\n"
            "m=video %d RTP/SAVP 96\r\na=rtpmap:96 H264/90000\r\n"
            "a=fmtp:96 packetization-mode=1\r\n"
            "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:%s\r\n"
            % (s.group, s.port, mtk["srtpParams"]))
        decoder = subprocess.Popen(
            [ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error", "-protocol_whitelist",
             "file,udp,rtp,srtp", "-i", str(sdp), "-t", "3", "-f", "framemd5", str(frames)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(0.5)  # ffmpeg joins the group after reading the SDP
        source = subprocess.Popen(
            [ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error", "-re", "-f", "lavfi",
             "-i", "testsrc=size=320x240:rate=25", "-t", "10", "-c:v", "libx264", "-g", "25",
             "-bsf:v", "dump_extra", "-pix_fmt", "yuv420p", "-tune", "zerolatency", "-f", "rtp",
             "-payload_type", "96",
             "rtp://127.0.0.1:%d?pkt_size=1200&rtcpport=%d" % (s.source, free_port())],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        stdout, stderr = watch.communicate(timeout=90)
        _, decodeErrors = decoder.communicate(timeout=60)
    finally:
        for p in (source, decoder):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
        d.stop()
    assert watch.returncode == 0, "".join(early) + stdout + stderr
    digests = [x for x in frames.read_text().splitlines() if x and not x.startswith("#")]
    assert len(digests) >= 50, decodeErrors
    assert decoder.returncode == 0 and decodeErrors.strip() == "", decodeErrors
