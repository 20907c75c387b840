"""
The listen settings of a SIP role in a worker (node.workers > 1): the port
put in Via, Record-Route and Contact is the worker's own (worker_ports + k),
the shared ports stay ours, and the range's checks name the key.
"""

from mbmsd.sip.listeners import SipListenSettings, check_worker_ports


def section(**kw):
    values = {"udp_listen": "udp:5060:interface=10.0.0.1",
              "tcp_listen": "tcp:5060:interface=10.0.0.1", "tls_listen": "",
              "advertised_host": None, "worker_ports": 5100}
    values.update(kw)
    return values


def test_without_workers_the_listen_ports_are_advertised():
    s = SipListenSettings(section(), 5060)
    assert s.ports == {"UDP": 5060, "TCP": 5060}
    assert s.workerPort is None and s.workerTcp is None
    assert s.sharedPorts == {"UDP": 5060, "TCP": 5060}


def test_a_worker_advertises_its_own_port_on_udp_and_tcp():
    s = SipListenSettings(section(), 5060, worker=1)
    assert s.workerPort == 5101
    assert s.ports == {"UDP": 5101, "TCP": 5101}
    assert s.sharedPorts == {"UDP": 5060, "TCP": 5060}
    assert s.workerTcp == "tcp:5101:interface=10.0.0.1"
    assert s.advertised == "10.0.0.1"


def test_worker_zero_takes_the_base_and_tls_stays_shared():
    s = SipListenSettings(section(tls_listen="tcp:5061:interface=10.0.0.1"), 5060, worker=0)
    assert s.ports == {"UDP": 5100, "TCP": 5100, "TLS": 5061}


def test_a_systemd_tcp_listener_has_no_own_tcp_port():
    s = SipListenSettings(section(tcp_listen="systemd:domain=INET:index=0"), 5060, worker=0)
    assert s.workerTcp is None
    assert s.ports == {"UDP": 5100, "TCP": 5060}


def test_udp_off_gives_no_own_udp_port():
    s = SipListenSettings(section(udp_listen=""), 5060, worker=2)
    assert s.ports == {"TCP": 5102}


def node(workers, pcscf=None, scf=None):
    config = {"node": {"workers": workers, "roles": ["pcscf", "scf"]},
              "pcscf": section(**(pcscf or {})),
              "scf": section(**dict({"udp_listen": "udp:5070:interface=10.0.0.1",
                                     "tcp_listen": "tcp:5070:interface=10.0.0.1",
                                     "worker_ports": 5200}, **(scf or {})))}
    return config


def test_the_defaults_pass():
    assert check_worker_ports(node(4), "pcscf") == []
    assert check_worker_ports(node(4), "scf") == []


def test_one_worker_checks_nothing():
    assert check_worker_ports(node(1, pcscf={"worker_ports": 5060}), "pcscf") == []


def test_a_range_past_65535_is_refused_naming_the_key():
    [error] = check_worker_ports(node(4, pcscf={"worker_ports": 65534}), "pcscf")
    assert error.startswith("pcscf.worker_ports: 65534 + 4 workers runs past port 65535")


def test_a_range_over_a_listen_port_is_refused():
    errors = check_worker_ports(node(2, pcscf={"worker_ports": 5069}), "pcscf")
    assert errors == [
        "pcscf.worker_ports: ports 5069-5070 (one per worker) clash with scf.udp_listen "
        "(port 5070)",
        "pcscf.worker_ports: ports 5069-5070 (one per worker) clash with scf.tcp_listen "
        "(port 5070)"]
    [own] = check_worker_ports(node(2, pcscf={"worker_ports": 5059,
                                              "tcp_listen": ""}), "pcscf")
    assert "pcscf.udp_listen (port 5060)" in own


def test_overlapping_ranges_are_refused_once():
    config = node(8, scf={"worker_ports": 5105})
    assert check_worker_ports(config, "pcscf") == []
    assert check_worker_ports(config, "scf") == [
        "scf.worker_ports: ports 5105-5112 (one per worker) clash with pcscf.worker_ports "
        "(5100-5107)"]
