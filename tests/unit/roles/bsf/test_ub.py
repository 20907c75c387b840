"""mbmsd.roles.bsf.ub: the peer named in the Ub log line."""

from twisted.internet.address import IPv4Address, UNIXAddress
from twisted.web.test.requesthelper import DummyRequest

from mbmsd.roles.bsf.ub import _peer


def _request(address):
    request = DummyRequest([b""])
    request.client = address
    return request


def test_peer_is_the_host_of_an_ip_address():
    assert _peer(_request(IPv4Address("TCP", "192.0.2.7", 40000))) == "192.0.2.7"


def test_peer_without_a_host_is_the_address_text():
    address = UNIXAddress(b"/run/mbmsd.sock")
    assert _peer(_request(address)) == str(address)
