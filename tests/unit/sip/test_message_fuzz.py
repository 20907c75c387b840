"""
Property and fuzz tests of the SIP parser (mbmsd.sip.message) and of the
transports that feed it untrusted bytes (mbmsd.sip.transport).

Properties:
  - round trip: a message built from generated parts, serialized, parses
    back to the same start line, headers and body, over UDP (one datagram)
    and over a stream cut at random points;
  - parse, serialize, parse is stable for whatever the parser accepts;
  - no exception but SipParseError leaves a parser, on random bytes and on
    valid messages with random damage;
  - the UDP and TCP protocols never let an exception reach the reactor (no
    failure is logged): each datagram or stream either reaches the receiver,
    is answered with the parse error's status, or is dropped.

Budget: the hypothesis profile of tests/conftest.py.
"""


from hypothesis import example, given
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from mbmsd.sip.grammar import (
    NameAddr,
    SipParseError,
    SipUri,
    Via,
    parse_cseq,
    parse_media_type,
    parse_name_addr,
    parse_params,
    parse_uri,
    parse_via,
)
from mbmsd.sip.headers import MULTI_VALUE_HEADERS
from mbmsd.sip.message import (
    Request,
    Response,
    SipStreamParser,
    make_response,
    parse_message,
    serialize,
)
from mbmsd.sip.multipart import parse_multipart
from mbmsd.sip.testing import FakeDatagramTransport, RecordingUser
from mbmsd.sip.transaction import TransactionLayer
from mbmsd.sip.transport import SipDatagramProtocol, SipStreamProtocol
from tests.conftest import budget, edit
from tests.support.helpers import no_failure_logged

UE = ("127.0.0.1", 5061)
ERROR_STATUSES = {400, 413, 416, 505}

# ---------------------------------------------------------------- strategies

TOKEN_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~"
tokens = st.text(TOKEN_CHARS, min_size=1, max_size=10)
methods = st.sampled_from(["INVITE", "REGISTER", "BYE", "OPTIONS", "MESSAGE", "INFO"]) | \
    st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=1, max_size=9)
labels = st.from_regex(r"[A-Za-z0-9]([A-Za-z0-9-]{0,8}[A-Za-z0-9])?", fullmatch=True)
hosts = st.one_of(
    st.ip_addresses(v=4).map(str),
    st.lists(labels, min_size=1, max_size=3).map(".".join),
    st.ip_addresses(v=6).map(lambda a: a.compressed),
)
users = st.lists(
    st.sampled_from("abcXYZ019-_.!~*'()&=+$,;?/") | st.sampled_from(["%3A", "%40", "%2c"]),
    min_size=1, max_size=12).map("".join)
param_values = st.none() | tokens
params = st.dictionaries(tokens.map(str.lower), param_values, max_size=3)


@st.composite
def sip_uris(draw):
    return SipUri(draw(st.sampled_from(["sip", "sips"])), draw(st.none() | users), None,
                  draw(hosts), draw(st.none() | st.integers(1, 65535)),
                  {k: v for k, v in draw(params).items()})


display_names = st.none() | st.text(
    st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=12)


@st.composite
def name_addrs(draw, tag=False):
    p = draw(params)
    p.pop("tag", None)
    if tag:
        p["tag"] = draw(tokens)
    return NameAddr(draw(display_names), draw(sip_uris()), p)


@st.composite
def vias(draw, transport=None):
    p = draw(params)
    p.pop("branch", None)
    p = dict([("branch", "z9hG4bK" + draw(tokens))] + list(p.items()))
    return Via(transport or draw(st.sampled_from(["UDP", "TCP", "TLS"])), draw(hosts),
               draw(st.none() | st.integers(1, 65535)), p)


# Header values: printable text (any script), no line breaks, no edge blanks.
header_text = st.text(st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")),
                      max_size=30).map(lambda s: s.strip(" \t"))
extra_names = tokens.map(lambda t: "X-" + t).filter(
    lambda n: n.lower() not in MULTI_VALUE_HEADERS)


@st.composite
def messages(draw):
    """A valid Request or Response built from parts, and its headers."""
    is_request = draw(st.booleans())
    method = draw(methods)
    h = []
    for _ in range(draw(st.integers(1, 3))):
        h.append(("Via", str(draw(vias()))))
    if is_request:
        h.append(("Max-Forwards", str(draw(st.integers(0, 255)))))
    h.append(("From", str(draw(name_addrs(tag=True)))))
    h.append(("To", str(draw(name_addrs(tag=draw(st.booleans()))))))
    h.append(("Call-ID", draw(tokens) + draw(st.sampled_from(["", "@"])) + draw(tokens)))
    h.append(("CSeq", "%d %s" % (draw(st.integers(0, 2 ** 31 - 1)), method)))
    for _ in range(draw(st.integers(0, 3))):
        h.append((draw(st.sampled_from(["Contact", "Route", "Record-Route"])),
                  str(draw(name_addrs()))))
    for _ in range(draw(st.integers(0, 3))):
        h.append((draw(extra_names), draw(header_text)))
    h = draw(st.permutations(h))
    body = draw(st.binary(max_size=200))
    if is_request:
        msg = Request(method, str(draw(sip_uris())), h, body)
    else:
        msg = Response(draw(st.integers(100, 699)), draw(header_text), h, body)
    return msg


def same(a, b):
    """
    Start line, headers (names case-insensitive, in order) and body; the
    Content-Length that serialize writes aside.
    """
    def headers(m):
        return [(n.lower(), v) for n, v in m.headers if n != "Content-Length"]

    assert type(a) is type(b)
    assert a.startLine() == b.startLine()
    assert headers(a) == headers(b)
    assert a.body == b.body


DAMAGE = st.sampled_from([b"\r", b"\n", b"\r\n", b" ", b"\t", b":", b";", b",", b"<", b">",
                          b'"', b"\\", b"@", b"%", b"\x00", b"\xff", b"\xc3", b"SIP/2.0",
                          b"Content-Length: 99999", b"l: 5", b"\r\n\r\n", b"=", b"["])


@st.composite
def damaged(draw):
    """The bytes of a valid message with a few random edits."""
    return edit(draw, serialize(draw(messages())), DAMAGE | st.binary(min_size=1, max_size=3), 8,
                replace=DAMAGE)


untrusted = st.one_of(damaged(), st.binary(max_size=300),
                      st.text(max_size=200).map(lambda s: s.encode("utf-8")))


# ---------------------------------------------------------------- the parser


@budget(0.4)
@given(messages())
def test_round_trip_datagram(msg):
    same(parse_message(serialize(msg)), msg)


@budget(0.4)
@given(st.lists(messages(), min_size=1, max_size=3), st.data())
def test_round_trip_stream_in_random_chunks(msgs, data):
    got, errors = [], []
    parser = SipStreamParser(got.append, errors.append)
    wire = b"".join(serialize(m) for m in msgs)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=6)))
    for a, b in zip([0] + cuts, cuts + [len(wire)]):
        parser.feed(wire[a:b])
    assert errors == []
    assert len(got) == len(msgs)
    for a, b in zip(got, msgs):
        same(a, b)


@budget(0.4)
@given(untrusted)
@example(b"INVITE sip:a@b SIP/2.0\r\nContent-Length: 1\r\nl: 2\r\n\r\nxy")
@example(b"SIP/2.0 200 OK\r\n\r\n")
@example(b"INVITE sip:a@[::1 SIP/2.0\r\n\r\n")
def test_parse_message_raises_only_its_error(data):
    try:
        msg = parse_message(data)
    except SipParseError as e:
        assert e.status in ERROR_STATUSES
        assert e.partial is None or isinstance(e.partial, (Request, Response))
        return
    # what is accepted survives serialize + parse unchanged
    same(parse_message(serialize(msg)), msg)


@budget(0.4)
@given(untrusted, st.data())
def test_stream_parser_raises_nothing(data, draw):
    got, errors = [], []
    parser = SipStreamParser(got.append, errors.append, max_size=1024)
    cuts = sorted(draw.draw(st.lists(st.integers(0, len(data)), max_size=4)))
    for a, b in zip([0] + cuts, cuts + [len(data)]):
        parser.feed(data[a:b])
    for e in errors:
        assert isinstance(e, SipParseError) and e.status in ERROR_STATUSES
    for m in got:
        same(parse_message(serialize(m)), m)


texts = st.text(max_size=80) | st.sampled_from(
    ["sip:", "sip:@", "sip:[", "sip:a@[::1", "sip:a:99999", "tel:", '"', '"a" <', "<sip:x",
     "SIP/2.0/UDP", "SIP/2.0/UDP [::1]:", "1 ", "a=;b", '"unterminated'])


@given(texts)
@example("sip:a@b;x=\"")
def test_header_parsers_raise_only_their_error(text):
    for parse in (parse_uri, parse_name_addr, parse_via, parse_cseq, parse_params,
                  parse_media_type):
        try:
            parse(text)
        except SipParseError:
            pass


@given(sip_uris())
def test_uri_round_trip(uri):
    assert str(parse_uri(str(uri))) == str(uri)


@given(name_addrs(tag=True))
def test_name_addr_round_trip(na):
    got = parse_name_addr(str(na))
    assert (got.display_name or None, str(got.uri), got.params) == \
        (na.display_name or None, str(na.uri), na.params)


@given(vias())
def test_via_round_trip(via):
    assert str(parse_via(str(via))) == str(via)


@given(st.text(TOKEN_CHARS, min_size=1, max_size=20), st.binary(max_size=300))
@example("b", b"--b\r\n\r\nx\r\n--b--")
@example("b", b"--b")
@example("b", b"\n--b\n")
def test_multipart_raises_only_its_error(boundary, body):
    try:
        parse_multipart("multipart/mixed;boundary=" + boundary, body)
    except SipParseError:
        pass


# ---------------------------------------------------------------- the transports


def answered(data):
    """
    The response in C{data}. An error answer copies the request's Via, From
    and To (RFC 3261 8.2.6), malformed ones included: read it as far as it goes.
    """
    try:
        return parse_message(data)
    except SipParseError as e:
        return e.partial


def transaction_layer():
    clock = Clock()
    user = RecordingUser()
    user.on_request = lambda req, txn: txn.respond(make_response(req, 200, to_tag=True))
    return TransactionLayer(clock, user), user


@budget(0.4)
@given(st.lists(untrusted | messages().map(serialize), min_size=1, max_size=4))
@example([b"INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\r\n"])
def test_udp_answers_or_drops(datagrams):
    layer, user = transaction_layer()
    proto = SipDatagramProtocol(layer, max_size=1024)
    udp = FakeDatagramTransport()
    proto.makeConnection(udp)
    with no_failure_logged():
        for data in datagrams:
            before = (len(udp.written), proto.dropped, len(user.events))
            try:
                parse_message(data, 1024)
                accepted = True
            except SipParseError:
                accepted = False
            proto.datagramReceived(data, UE)
            after = (len(udp.written), proto.dropped, len(user.events))
            if accepted or not data.strip(b" \t\r\n"):
                assert after[1] == before[1]
                continue
            # refused: answered with its error, or dropped (and counted)
            answers = [answered(d) for d, _ in udp.written[before[0]:]]
            assert answers or after[1] == before[1] + 1
            for a in answers:
                assert isinstance(a, Response) and a.status in ERROR_STATUSES


@budget(0.4)
@given(st.lists(untrusted | messages().map(serialize), min_size=1, max_size=4), st.data())
def test_tcp_answers_or_closes(chunks, draw):
    layer, user = transaction_layer()
    proto = SipStreamProtocol(layer, max_size=1024)
    addr = IPv4Address("TCP", "127.0.0.1", 5061)
    transport = StringTransport(peerAddress=addr)
    proto.makeConnection(transport)
    wire = b"".join(chunks)
    cuts = sorted(draw.draw(st.lists(st.integers(0, len(wire)), max_size=4)))
    with no_failure_logged():
        for a, b in zip([0] + cuts, cuts + [len(wire)]):
            proto.dataReceived(wire[a:b])
    # what went back: keep-alive CRLFs, answers to parsed requests, error answers
    out = SipStreamParser(lambda m: replies.append(m), lambda e: bad.append(e))
    replies, bad = [], []
    out.feed(transport.value())
    # an error answer copies the request's Vias, malformed ones included (RFC 3261 8.2.6)
    replies += [e.partial for e in bad]
    for r in replies:
        assert isinstance(r, Response)
        # our 200, 100 Trying, CANCEL's 481/487 from the layer, or a parse error's answer
        assert r.status in {100, 200, 481, 487} | ERROR_STATUSES, r.status
    if proto.parser.broken:
        assert transport.disconnecting
