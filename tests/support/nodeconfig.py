"""
The overlay that puts a node of etc/mbmsd.toml on free loopback ports, with
its SQLite file in a work folder: one for the daemons the tests start
(tests/support/daemon.py) and those the benchmarks start (bench/common.py).
"""

from pathlib import Path

from tests.support.ports import free_port

ROLE_PORTS = ("ub", "zn", "metrics", "bmsc", "mikey", "pcscf", "scf", "media", "bearer",
              "bearer_key")


def node_ports():
    """{name: port} for every listener; each free for TCP and UDP (SIP uses both)."""
    return {name: free_port() for name in ROLE_PORTS}


def node_tables(workdir, ports):
    """{table: {key: value}} moving every listener to C{ports} and storage into C{workdir}."""
    local = "%s:%d:interface=127.0.0.1"
    return {
        "storage": {"path": str(workdir / "mbmsd.sqlite3")},
        "metrics.prometheus": {"listen": local % ("tcp", ports["metrics"])},
        "bsf": {"ub_listen": local % ("tcp", ports["ub"]),
                "zn_listen": local % ("tcp", ports["zn"])},
        "pcscf": {"udp_listen": local % ("udp", ports["pcscf"]),
                  "tcp_listen": local % ("tcp", ports["pcscf"]),
                  "scf": "sip:127.0.0.1:%d" % (ports["scf"],)},
        "scf": {"udp_listen": local % ("udp", ports["scf"]),
                "tcp_listen": local % ("tcp", ports["scf"]),
                "bmsc_url": "http://127.0.0.1:%d" % (ports["bmsc"],)},
        "bmsc": {"listen": local % ("tcp", ports["bmsc"]),
                 "ue_mikey_port": ports["mikey"]},
    }


def overlay_text(tables, raw=""):
    """
    TOML of C{tables} (a value None drops its key), then C{raw}. [bmsc] comes
    last, so that bare keys at the start of C{raw} land in it.
    """
    order = sorted(tables, key=lambda t: t == "bmsc")
    return "".join(
        "[%s]\n%s\n" % (t, "".join("%s = %s\n" % (k, toml_value(v))
                                   for k, v in tables[t].items() if v is not None))
        for t in order) + raw


def toml_value(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[%s]" % ", ".join(toml_value(v) for v in value)
    return '"%s"' % str(value).replace("\\", "\\\\").replace('"', '\\"')


def demo_services(ports):
    """
    The [[bmsc.service]] of etc/mbmsd.toml, its streaming ports (content,
    bearer, MTK messages) moved to C{ports}: raw TOML for the end of an
    overlay that names no service of its own.
    """
    return ('\n[[bmsc.service]]\nid = "urn:mbmsd:news"\nmedia_source = "127.0.0.1:%d"\n'
            'bearer = "127.0.0.1:%d"\nbearer_key_port = %d\nmtk_rotation = 10\nmtk_repeat = 1\n'
            % (ports["media"], ports["bearer"], ports["bearer_key"]))


def with_demo_services(base, overlay, ports):
    """
    C{overlay}, and the demo services on free ports when it runs over
    etc/mbmsd.toml or a copy of it (its fixed streaming ports, 127.0.0.1:5004
    and 5000, would clash between tests run side by side).
    """
    if "[[bmsc.service]]" not in overlay and \
            'media_source = "127.0.0.1:5004"' in Path(base).read_text():
        return overlay + demo_services(ports)
    return overlay
