"""
Tests for mbmsd.sip.message: parsing, validation, framing and building.

The torture cases are written in the spirit of RFC 4475 (not copied from it).
"""

import random

from twisted.trial.unittest import SynchronousTestCase

from mbmsd.sip.grammar import (
    NameAddr,
    SipParseError,
    SipUri,
    Via,
    parse_cseq,
    parse_media_type,
    parse_name_addr,
    parse_uri,
    parse_via,
    split_comma_list,
)
from mbmsd.sip.headers import COMPACT_FORMS, MULTI_VALUE_HEADERS, Headers
from mbmsd.sip.message import (
    MAGIC_COOKIE,
    Request,
    Response,
    SipStreamParser,
    make_ack,
    make_branch,
    make_cancel,
    make_response,
    make_tag,
    parse_message,
    reason_phrase,
    serialize,
)
from mbmsd.sip.multipart import build_multipart, parse_multipart


def msg(start, headers, body=b"", length="auto"):
    """Bytes of a message with the usual mandatory headers unless given."""
    lines = [start] + list(headers)
    if length == "auto":
        lines.append("Content-Length: %d" % (len(body),))
    elif length is not None:
        lines.append("Content-Length: " + length)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + body


BASE = [
    "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKabc1",
    "Max-Forwards: 70",
    'From: "User One" <sip:user1@home1.net>;tag=f1',
    "To: <sip:urn%3Ambmsd%3Anews@mbms.home1.net>",
    "Call-ID: c1@192.0.2.1",
    "CSeq: 1 INVITE",
]
INVITE_LINE = "INVITE sip:urn%3Ambmsd%3Anews@mbms.home1.net SIP/2.0"


def without(name):
    return [h for h in BASE if not h.lower().startswith(name.lower() + ":")]


class ParseTests(SynchronousTestCase):

    def assertParseError(self, data, status, fragment=None, **kw):
        with self.assertRaises(SipParseError) as ctx:
            parse_message(data, **kw)
        err = ctx.exception
        self.assertEqual(err.status, status, err.reason)
        if fragment is not None:
            self.assertIn(fragment, err.reason)
        return err

    def test_mbms_invite(self):
        m = parse_message(msg(INVITE_LINE, BASE + ["Content-Type: application/sdp"],
                              b"v=0\r\n"))
        self.assertIsInstance(m, Request)
        self.assertEqual(m.method, "INVITE")
        self.assertEqual(m.requestUri.userUnquoted, "urn:mbmsd:news")
        self.assertEqual(m.requestUri.host, "mbms.home1.net")
        self.assertEqual(m.callId, "c1@192.0.2.1")
        self.assertEqual(m.cseq, (1, "INVITE"))
        self.assertEqual(m.fromTag, "f1")
        self.assertIsNone(m.toTag)
        self.assertEqual(m.from_.display_name, "User One")
        self.assertEqual(m.topVia.branch, "z9hG4bKabc1")
        self.assertEqual(m.body, b"v=0\r\n")

    def test_response(self):
        m = parse_message(msg("SIP/2.0 180 Ringing", without("Max-Forwards")))
        self.assertIsInstance(m, Response)
        self.assertEqual((m.status, m.reason), (180, "Ringing"))
        m = parse_message(msg("SIP/2.0 200 OK is fine", without("Max-Forwards")))
        self.assertEqual(m.reason, "OK is fine")
        m = parse_message(msg("SIP/2.0 200", without("Max-Forwards")))
        self.assertEqual((m.status, m.reason), (200, ""))

    def test_compact_forms(self):
        data = (b"OPTIONS sip:scf.home1.net SIP/2.0\r\n"
                b"v: SIP/2.0/UDP h;branch=z9hG4bK1\r\n"
                b"f: <sip:a@b>;tag=1\r\nt: <sip:c@d>\r\ni: x\r\n"
                b"CSeq: 2 OPTIONS\r\nMax-Forwards: 1\r\n"
                b"m: <sip:a@1.2.3.4>\r\nk: path, gruu\r\ns: hello\r\n"
                b"o: presence\r\nu: dialog\r\nr: <sip:z@y>\r\nx: 1800\r\n"
                b"e: gzip\r\nc: text/plain\r\nl: 3\r\n\r\nabc")
        m = parse_message(data)
        self.assertEqual(m.headers.get("Supported"), "path")
        self.assertEqual(m.headers.getAll("supported"), ["path", "gruu"])
        self.assertEqual(m.headers.get("Contact"), "<sip:a@1.2.3.4>")
        for name, value in [("Subject", "hello"), ("Event", "presence"),
                            ("Allow-Events", "dialog"), ("Refer-To", "<sip:z@y>"),
                            ("Session-Expires", "1800"),
                            ("Content-Encoding", "gzip"),
                            ("Content-Type", "text/plain"),
                            ("Content-Length", "3"), ("Call-ID", "x")]:
            self.assertEqual(m.headers.get(name), value, name)
        # parsed names are the long forms
        self.assertNotIn("v", [n for n, _ in m.headers])
        self.assertEqual(m.body, b"abc")
        self.assertEqual(COMPACT_FORMS["i"], "Call-ID")

    def test_folding(self):
        data = msg(INVITE_LINE, BASE + [
            "Subject: a long",
            "  subject\t",
            "\tfolded twice",
            "Route: <sip:p1.home1.net;lr>,",
            " <sip:p2.home1.net;lr>",
        ])
        m = parse_message(data)
        self.assertEqual(m.headers.get("Subject"), "a long subject folded twice")
        self.assertEqual(m.headers.getAll("Route"),
                         ["<sip:p1.home1.net;lr>", "<sip:p2.home1.net;lr>"])

    def test_folded_first_line_is_an_error(self):
        data = (INVITE_LINE + "\r\n folded\r\n" + "\r\n".join(BASE)
                + "\r\n\r\n").encode()
        self.assertParseError(data, 400, "continuation")

    def test_comma_lists_respect_quotes_and_angles(self):
        m = parse_message(msg(INVITE_LINE, BASE + [
            'Contact: "Doe, \\"J, r\\"" <sip:j@x;p=a>;q=0.5;+sip.instance="<urn:a,b>", <sip:k@y?h=a,b>',
            "Contact: sip:l@z",
            'P-Asserted-Identity: "A, B" <sip:user1@home1.net>, <tel:+358501234567>',
            "Subject: not, split",
            'WWW-Authenticate: Digest realm="r", nonce="n"',
        ]))
        self.assertEqual(m.headers.getAll("Contact"), [
            '"Doe, \\"J, r\\"" <sip:j@x;p=a>;q=0.5;+sip.instance="<urn:a,b>"',
            "<sip:k@y?h=a,b>",
            "sip:l@z"])
        first = parse_name_addr(m.headers.get("Contact"))
        self.assertEqual(first.display_name, 'Doe, "J, r"')
        self.assertEqual(first.uri.params["p"], "a")
        self.assertEqual(first.params["+sip.instance"], '"<urn:a,b>"')
        self.assertEqual(first.params["q"], "0.5")
        self.assertEqual(len(m.headers.getAll("P-Asserted-Identity")), 2)
        self.assertEqual(m.headers.get("Subject"), "not, split")
        self.assertEqual(m.headers.get("WWW-Authenticate"),
                         'Digest realm="r", nonce="n"')

    def test_contact_star_not_split(self):
        m = parse_message(msg("REGISTER sip:home1.net SIP/2.0",
                              [h.replace("INVITE", "REGISTER") for h in BASE]
                              + ["Contact: *", "Expires: 0"]))
        self.assertEqual(m.headers.getAll("Contact"), ["*"])

    def test_via_comma_and_lws(self):
        m = parse_message(msg(INVITE_LINE, without("Via") + [
            "Via: SIP / 2.0 / UDP 192.0.2.9 ; branch=z9hG4bK9 ; rport,"
            " SIP/2.0/TCP [2001:db8::1]:5070;branch=z9hG4bK8;received=10.0.0.1",
        ]))
        vias = m.vias
        self.assertEqual(len(vias), 2)
        self.assertEqual((vias[0].transport, vias[0].host, vias[0].port),
                         ("UDP", "192.0.2.9", None))
        self.assertEqual(vias[0].branch, "z9hG4bK9")
        self.assertIs(vias[0].rport, True)
        self.assertEqual(vias[1].sentBy, ("2001:db8::1", 5070))
        self.assertEqual(vias[1].received, "10.0.0.1")

    def test_content_length_padded(self):
        # sipp's [len] pads with spaces
        m = parse_message(msg(INVITE_LINE, BASE + ["Content-Type: text/plain"],
                              b"hello", length="    5  "))
        self.assertEqual(m.body, b"hello")

    def test_content_length_absent_udp(self):
        m = parse_message(msg(INVITE_LINE, BASE + ["Content-Type: text/plain"],
                              b"to the end\r\n", length=None))
        self.assertEqual(m.body, b"to the end\r\n")

    def test_content_length_truncates(self):
        m = parse_message(msg(INVITE_LINE, BASE + ["Content-Type: text/plain"],
                              b"abcdef", length="3"))
        self.assertEqual(m.body, b"abc")

    def test_content_length_too_large(self):
        err = self.assertParseError(
            msg(INVITE_LINE, BASE + ["Content-Type: text/plain"], b"abc",
                length="300"), 400, "Content-Length")
        self.assertIsInstance(err.partial, Request)

    def test_content_length_invalid(self):
        for bad in ("abc", "-1", "1 2", "", "0x10", "99999999999"):
            self.assertParseError(msg(INVITE_LINE, BASE, b"", length=bad),
                                  400, "Content-Length")

    def test_content_length_conflict(self):
        self.assertParseError(msg(INVITE_LINE, BASE + ["l: 0", "Content-Length: 3"],
                                  b"abc", length=None), 400, "conflicting")

    def test_binary_body(self):
        body = bytes(range(256)) + b"\r\n\r\nSIP/2.0 200 OK\r\n\xc3\xa9"
        data = msg(INVITE_LINE, BASE + ["Content-Type: application/octet-stream"],
                   body)
        m = parse_message(data)
        self.assertEqual(m.body, body)
        self.assertEqual(serialize(m), data)

    def test_bad_start_lines(self):
        cases = [
            "INVITE sip:a@b SIP/2.0 extra",
            "INVITE  sip:a@b SIP/2.0",
            "INVITE sip:a@b  SIP/2.0",
            "INV(ITE sip:a@b SIP/2.0",
            "INVITE <sip:a@b> SIP/2.0",
            "INVITE sip:a@b SIP/2.0a",
            "INVITE sip:a@b SIP2.0",
            "INVITE sip:a@b",
            "INVITE sip:a@b;x=\"y\" SIP/2.0",
            "INVITE sip: SIP/2.0",
            "INVITE sip:a@b:99999 SIP/2.0",
            "INVITE sip:a@[::1 SIP/2.0",
            "SIP/2.0 2000 OK",
            "SIP/2.0 099 Low",
            "SIP/2.0",
            "HTTP/1.1 200 OK",
        ]
        for line in cases:
            self.assertParseError(msg(line, BASE), 400)

    def test_unsupported_scheme(self):
        err = self.assertParseError(
            msg("INVITE http://example.com/ SIP/2.0", BASE), 416)
        self.assertIsInstance(err.partial, Request)

    def test_tel_request_uri(self):
        m = parse_message(msg("INVITE tel:+358-50-1234567;phone-context=x SIP/2.0",
                              BASE))
        self.assertEqual(m.requestUri.user, "+358-50-1234567")

    def test_wrong_version(self):
        err = self.assertParseError(msg("INVITE sip:a@b SIP/7.0", BASE), 505)
        self.assertEqual(err.reason, "Version Not Supported")
        self.assertIsInstance(err.partial, Request)
        self.assertEqual(err.partial.callId, "c1@192.0.2.1")
        self.assertParseError(msg("SIP/3.0 200 OK", BASE), 505)
        # the version is case-insensitive
        parse_message(msg("INVITE sip:a@b sip/2.0", BASE))

    def test_missing_mandatory_headers(self):
        for name in ("To", "From", "CSeq", "Call-ID", "Max-Forwards", "Via"):
            err = self.assertParseError(msg(INVITE_LINE, without(name)), 400,
                                        "missing " + name)
            self.assertEqual(err.reason, "Bad Request: missing " + name)
            self.assertIsInstance(err.partial, Request)

    def test_response_needs_no_max_forwards(self):
        parse_message(msg("SIP/2.0 200 OK", without("Max-Forwards")))
        self.assertParseError(msg("SIP/2.0 200 OK", without("Via")), 400, "Via")

    def test_cseq_method_mismatch(self):
        self.assertParseError(
            msg("BYE sip:a@b SIP/2.0", BASE), 400, "CSeq method")

    def test_bad_cseq(self):
        for value in ("INVITE", "1", "x INVITE", "1 INVITE x", "4294967296 INVITE",
                      "2147483648 INVITE"):
            self.assertParseError(msg(INVITE_LINE, without("CSeq") + ["CSeq: " + value]),
                                  400, "CSeq")

    def test_bad_max_forwards(self):
        for value in ("x", "256", "-1", ""):
            self.assertParseError(
                msg(INVITE_LINE, without("Max-Forwards") + ["Max-Forwards: " + value]),
                400, "Max-Forwards")

    def test_duplicate_singletons(self):
        self.assertParseError(msg(INVITE_LINE, BASE + ["Call-ID: other"]), 400,
                              "multiple Call-ID")

    def test_malformed_from_to_via(self):
        self.assertParseError(msg(INVITE_LINE, without("From") + ["From: <sip:a@b"]),
                              400, "From")
        self.assertParseError(msg(INVITE_LINE, without("To") + ['To: "x <sip:a@b>']),
                              400)
        self.assertParseError(msg(INVITE_LINE, without("Via") + ["Via: SIP/2.0/UDP"]),
                              400, "Via")
        self.assertParseError(msg(INVITE_LINE, without("Via") + ["Via: SIP/3.0/UDP h"]),
                              400, "Via")

    def test_malformed_header_line(self):
        self.assertParseError(msg(INVITE_LINE, BASE + ["no colon here"]), 400,
                              "header line")
        self.assertParseError(msg(INVITE_LINE, BASE + ["Bad Name: x"]), 400)

    def test_oversized(self):
        big = b"x" * 70000
        err = self.assertParseError(
            msg(INVITE_LINE, BASE + ["Content-Type: text/plain"], big), 413)
        self.assertEqual(err.reason, "Request Entity Too Large")
        self.assertIsInstance(err.partial, Request)
        self.assertParseError(msg(INVITE_LINE, BASE, b""), 413, max_size=100)

    def test_empty_and_headless(self):
        self.assertParseError(b"", 400)
        self.assertParseError(b"\r\n\r\n", 400)
        self.assertParseError(msg(INVITE_LINE, BASE)[:-2], 400, "empty line")

    def test_leading_crlf_ignored(self):
        m = parse_message(b"\r\n\r\n" + msg(INVITE_LINE, BASE))
        self.assertEqual(m.method, "INVITE")

    def test_lf_only_line_ends_tolerated(self):
        data = msg(INVITE_LINE, BASE).replace(b"\r\n", b"\n")
        self.assertEqual(parse_message(data).callId, "c1@192.0.2.1")

    def test_invalid_utf8_header(self):
        data = msg(INVITE_LINE, BASE + ["Subject: x"]).replace(b"Subject: x",
                                                                b"Subject: \xff")
        self.assertParseError(data, 400, "UTF-8")

    def test_utf8_header_value(self):
        m = parse_message(msg(INVITE_LINE, BASE + ["Subject: caf\u00e9"]))
        self.assertEqual(m.headers.get("Subject"), "caf\u00e9")


# The ABNF of every header the parser reads as a comma list, as the RFCs
# print it (RFC 3261 25.1 unless named). Where the list is in [ ], the header
# may be present with nothing in it. RFC 3262 (100rel) and RFC 4028 (timer)
# add option-tags to Supported/Require and only single-valued headers (RSeq,
# RAck, Session-Expires, Min-SE), so they change none of these grammars.
LIST_GRAMMARS = {
    "Accept": 'Accept = "Accept" HCOLON [ accept-range *(COMMA accept-range) ]',
    "Accept-Encoding": 'Accept-Encoding = "Accept-Encoding" HCOLON [ encoding *(COMMA encoding) ]',
    "Accept-Language": 'Accept-Language = "Accept-Language" HCOLON [ language *(COMMA language) ]',
    "Allow": 'Allow = "Allow" HCOLON [Method *(COMMA Method)]',
    "Supported": 'Supported = ( "Supported" / "k" ) HCOLON [option-tag *(COMMA option-tag)]',
    # RFC 7315 4.1 (which obsoletes RFC 3455)
    "P-Associated-URI": 'P-Associated-URI = "P-Associated-URI" HCOLON [p-aso-uri-spec] '
                        '*(COMMA p-aso-uri-spec)',
    "Require": 'Require = "Require" HCOLON option-tag *(COMMA option-tag)',
    "Proxy-Require": 'Proxy-Require = "Proxy-Require" HCOLON option-tag *(COMMA option-tag)',
    "Unsupported": 'Unsupported = "Unsupported" HCOLON option-tag *(COMMA option-tag)',
    "Via": 'Via = ( "Via" / "v" ) HCOLON via-parm *(COMMA via-parm)',
    "Route": 'Route = "Route" HCOLON route-param *(COMMA route-param)',
    "Record-Route": 'Record-Route = "Record-Route" HCOLON rec-route *(COMMA rec-route)',
    "Contact": 'Contact = ("Contact" / "m" ) HCOLON ( STAR / (contact-param '
               '*(COMMA contact-param)))',
    "Content-Encoding": 'Content-Encoding = ( "Content-Encoding" / "e" ) HCOLON '
                        'content-coding *(COMMA content-coding)',
    "Content-Language": 'Content-Language = "Content-Language" HCOLON language-tag '
                        '*(COMMA language-tag)',
    "In-Reply-To": 'In-Reply-To = "In-Reply-To" HCOLON callid *(COMMA callid)',
    "Warning": 'Warning = "Warning" HCOLON warning-value *(COMMA warning-value)',
    "Alert-Info": 'Alert-Info = "Alert-Info" HCOLON alert-param *(COMMA alert-param)',
    "Call-Info": 'Call-Info = "Call-Info" HCOLON info *(COMMA info)',
    "Error-Info": 'Error-Info = "Error-Info" HCOLON error-uri *(COMMA error-uri)',
    # RFC 3325 9.1, 9.2
    "P-Asserted-Identity": 'PAssertedID = "P-Asserted-Identity" HCOLON PAssertedID-value '
                           '*(COMMA PAssertedID-value)',
    "P-Preferred-Identity": 'PPreferredID = "P-Preferred-Identity" HCOLON PPreferredID-value '
                            '*(COMMA PPreferredID-value)',
    # RFC 3327 4, RFC 3608 5
    "Path": 'Path = "Path" HCOLON path-value *( COMMA path-value )',
    "Service-Route": 'Service-Route = "Service-Route" HCOLON sr-value *( COMMA sr-value)',
    # RFC 6665 8.4
    "Allow-Events": 'Allow-Events = ( "Allow-Events" / "u" ) HCOLON event-type '
                    '*(COMMA event-type)',
    # RFC 3841 10
    "Accept-Contact": 'Accept-Contact = ("Accept-Contact" / "a") HCOLON ac-value '
                      '*(COMMA ac-value)',
    "Reject-Contact": 'Reject-Contact = ("Reject-Contact" / "j") HCOLON rc-value '
                      '*(COMMA rc-value)',
    "Request-Disposition": 'Request-Disposition = ( "Request-Disposition" / "d" ) HCOLON '
                           'directive *(COMMA directive)',
    # RFC 3329 2.2
    "Security-Client": 'security-client = "Security-Client" HCOLON sec-mechanism '
                       '*(COMMA sec-mechanism)',
    "Security-Server": 'security-server = "Security-Server" HCOLON sec-mechanism '
                       '*(COMMA sec-mechanism)',
    "Security-Verify": 'security-verify = "Security-Verify" HCOLON sec-mechanism '
                       '*(COMMA sec-mechanism)',
    # RFC 3326 2
    "Reason": 'Reason = "Reason" HCOLON reason-value *(COMMA reason-value)',
}


def _may_be_empty(abnf):
    """Whether the list after HCOLON is optional: it opens with "[" (RFC 5234 3.8)."""
    return abnf.split("HCOLON", 1)[1].lstrip().startswith("[")


class EmptyListHeaderTests(SynchronousTestCase):
    """
    A list header with nothing after the colon: legal where its ABNF puts the
    list in [ ] (a real UA sends "Supported:" so), a 400 otherwise.
    """

    def test_every_list_header_has_its_grammar_here(self):
        self.assertEqual({n.lower() for n in LIST_GRAMMARS}, set(MULTI_VALUE_HEADERS))

    def test_the_optional_lists(self):
        self.assertEqual(sorted(n for n, g in LIST_GRAMMARS.items() if _may_be_empty(g)),
                         ["Accept", "Accept-Encoding", "Accept-Language", "Allow",
                          "P-Associated-URI", "Supported"])

    def test_empty_value_per_grammar(self):
        for name, abnf in sorted(LIST_GRAMMARS.items()):
            for line in ("%s:" % (name,), "%s: " % (name,), "%s:\t " % (name,)):
                data = msg(INVITE_LINE, BASE + [line])
                if _may_be_empty(abnf):
                    m = parse_message(data)
                    # present and empty, which is not the same as absent
                    self.assertIn(name, m.headers, abnf)
                    self.assertEqual(m.headers.getAll(name), [""], abnf)
                    self.assertIn(("\r\n%s: \r\n" % (name,)).encode(), serialize(m), abnf)
                else:
                    with self.assertRaises(SipParseError, msg=abnf) as ctx:
                        parse_message(data)
                    self.assertEqual(ctx.exception.status, 400)
                    self.assertIn("empty " + name, ctx.exception.reason)

    def test_compact_supported_empty(self):
        m = parse_message(msg(INVITE_LINE, BASE + ["k:"]))
        self.assertEqual(m.headers.getAll("Supported"), [""])

    def test_empty_beside_a_full_one(self):
        m = parse_message(msg(INVITE_LINE, BASE + ["Supported:", "Supported: timer, 100rel"]))
        self.assertEqual(m.headers.getAll("Supported"), ["", "timer", "100rel"])

    def test_only_commas_is_no_list(self):
        # "[option-tag *(COMMA option-tag)]": a COMMA needs an option-tag before it
        for name in ("Supported", "Allow", "Require"):
            with self.assertRaises(SipParseError) as ctx:
                parse_message(msg(INVITE_LINE, BASE + ["%s: ," % (name,)]))
            self.assertEqual(ctx.exception.status, 400)


class SerializeTests(SynchronousTestCase):

    def test_correct_content_length(self):
        r = Request("MESSAGE", "sip:a@b", [("Via", "SIP/2.0/UDP h;branch=z9hG4bK1"),
                                           ("Content-Length", "999"),
                                           ("Content-Type", "text/plain")],
                    "h\u00e9")
        data = serialize(r)
        self.assertIn(b"Content-Length: 3\r\n", data)
        self.assertEqual(data.count(b"Content-Length"), 1)
        self.assertTrue(data.endswith(b"\r\n\r\nh\xc3\xa9"))
        self.assertTrue(data.startswith(b"MESSAGE sip:a@b SIP/2.0\r\nVia:"))

    def test_content_length_added(self):
        data = bytes(Response(200))
        self.assertEqual(data, b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n")

    def test_roundtrip(self):
        data = msg(INVITE_LINE, BASE + ["Content-Type: application/sdp"], b"v=0\r\n")
        self.assertEqual(serialize(parse_message(data)), data)


class HeadersTests(SynchronousTestCase):

    def test_case_insensitive_multi(self):
        h = Headers([("via", "a"), ("To", "t"), ("VIA", "b"), ("v", "c")])
        self.assertEqual(h.getAll("Via"), ["a", "b", "c"])
        self.assertEqual(h["TO"], "t")
        self.assertIn("call-id", Headers([("i", "x")]))
        self.assertEqual([n for n, _ in h], ["Via", "To", "Via", "Via"])
        self.assertEqual(len(h), 4)
        self.assertRaises(KeyError, lambda: h["Route"])

    def test_set_remove_prepend(self):
        h = Headers([("Via", "a"), ("To", "t"), ("Via", "b")])
        h.prepend("Via", "z")
        self.assertEqual(h.getAll("Via"), ["z", "a", "b"])
        h.prepend("Record-Route", "<sip:p;lr>")
        self.assertEqual(h.items()[0], ("Record-Route", "<sip:p;lr>"))
        self.assertEqual(h.popFirst("via"), "z")
        h["Via"] = "only"
        self.assertEqual(h.getAll("Via"), ["only"])
        self.assertEqual(h.items()[1], ("Via", "only"))
        self.assertEqual(h.remove("VIA"), 1)
        self.assertNotIn("Via", h)
        del h["to"]
        self.assertRaises(KeyError, h.__delitem__, "to")
        h2 = Headers([("X-Custom", "1")])
        h3 = h2.copy()
        h3.add("X-Custom", "2")
        self.assertEqual(h2.getAll("x-custom"), ["1"])

    def test_split_comma_list(self):
        self.assertEqual(split_comma_list('a, "b,\\" c", <d,e>;x, ,f'),
                         ['a', '"b,\\" c"', '<d,e>;x', 'f'])


class UriTests(SynchronousTestCase):

    def test_full_sip_uri(self):
        u = parse_uri("sips:alice:secret@Example.COM:5061;transport=tcp;lr?subject=x%20y")
        self.assertEqual((u.scheme, u.user, u.password, u.host, u.port),
                         ("sips", "alice", "secret", "Example.COM", 5061))
        self.assertEqual(u.params, {"transport": "tcp", "lr": None})
        self.assertEqual(u.headers, "subject=x%20y")
        self.assertEqual(str(u), "sips:alice:secret@Example.COM:5061;transport=tcp;lr?subject=x%20y")

    def test_service_id_user(self):
        u = parse_uri("sip:urn%3Ambmsd%3Anews@mbms.home1.net")
        self.assertEqual(u.user, "urn%3Ambmsd%3Anews")
        self.assertEqual(u.userUnquoted, "urn:mbmsd:news")
        self.assertEqual(str(u), "sip:urn%3Ambmsd%3Anews@mbms.home1.net")

    def test_user_with_semicolon(self):
        u = parse_uri("sip:user;par=u%40example.net@example.com")
        self.assertEqual(u.user, "user;par=u%40example.net")
        self.assertEqual(u.host, "example.com")

    def test_host_only_ipv6_tel(self):
        u = parse_uri("sip:[2001:db8::10]:5070;maddr=1.2.3.4")
        self.assertEqual((u.user, u.host, u.port), (None, "2001:db8::10", 5070))
        self.assertEqual(str(u), "sip:[2001:db8::10]:5070;maddr=1.2.3.4")
        t = parse_uri("tel:+358501234567;phone-context=home1.net")
        self.assertEqual((t.scheme, t.user), ("tel", "+358501234567"))
        self.assertEqual(str(t), "tel:+358501234567;phone-context=home1.net")
        self.assertEqual(parse_uri("sip:scf.home1.net"), SipUri("sip", host="scf.home1.net"))

    def test_bad_uris(self):
        for text in ("", "sip:", "sip:a@", "sip:a b@c", "sip:@c", "sip:a@b:x",
                     "sip:a@b:70000", "sip:a@[::1", "sip:a@-b", "urn:x", "sip:a@b;=x",
                     "tel:abc@d", "sip:a\"@b"):
            self.assertRaises(SipParseError, parse_uri, text)
        self.assertEqual(self._status("http://x"), 416)

    def _status(self, text):
        try:
            parse_uri(text)
        except SipParseError as e:
            return e.status

    def test_name_addr_forms(self):
        a = parse_name_addr('"Alice \\"A\\"" <sip:alice@home1.net>;tag=1')
        self.assertEqual(a.display_name, 'Alice "A"')
        self.assertEqual(a.uri.user, "alice")
        self.assertEqual(a.tag, "1")
        b = parse_name_addr("Bob  Smith<sip:bob@home1.net;transport=udp>")
        self.assertEqual(b.display_name, "Bob  Smith")
        self.assertEqual(b.uri.params, {"transport": "udp"})
        self.assertEqual(b.params, {})
        c = parse_name_addr("sip:carol@home1.net;tag=9")
        self.assertIsNone(c.display_name)
        self.assertEqual(c.uri.params, {})
        self.assertEqual(c.params, {"tag": "9"})
        self.assertEqual(str(c), "<sip:carol@home1.net>;tag=9")
        self.assertEqual(str(a), '"Alice \\"A\\"" <sip:alice@home1.net>;tag=1')
        self.assertEqual(str(NameAddr(None, parse_uri("sip:x@y"), {"tag": "t"})),
                         "<sip:x@y>;tag=t")
        for bad in ("", '"unterminated <sip:a@b>', "<sip:a@b", "<sip:a@b> junk",
                    '"x" sip:a@b', "Bad,Name <sip:a@b>"):
            self.assertRaises(SipParseError, parse_name_addr, bad)

    def test_via(self):
        v = parse_via("SIP/2.0/udp host.example.com:5066;branch=z9hG4bKx;rport=5067;received=1.2.3.4;ttl=1")
        self.assertEqual(v.transport, "UDP")
        self.assertEqual(v.rport, 5067)
        self.assertEqual(v.received, "1.2.3.4")
        self.assertEqual(v.sentBy, ("host.example.com", 5066))
        self.assertEqual(str(v), "SIP/2.0/UDP host.example.com:5066;branch=z9hG4bKx;"
                                 "rport=5067;received=1.2.3.4;ttl=1")
        self.assertEqual(parse_via("SIP/2.0/TLS h;branch=z9hG4bKy").sentBy, ("h", 5061))
        self.assertIsNone(parse_via("SIP/2.0/UDP h").rport)
        self.assertEqual(str(Via("tcp", "::1", 5060, {"branch": "z9hG4bK1"})),
                         "SIP/2.0/TCP [::1]:5060;branch=z9hG4bK1")
        for bad in ("SIP/2.0/UDP", "SIP/2.0 h", "SIP/2.0/UDP h:x", "SIP/2.0/UDP h;branch=",
                    "SIP/2.0/UDP h;branch=\"x"):
            self.assertRaises(SipParseError, parse_via, bad)

    def test_cseq(self):
        self.assertEqual(parse_cseq(" 42   REGISTER "), (42, "REGISTER"))
        self.assertRaises(SipParseError, parse_cseq, "42")

    def test_media_type(self):
        self.assertEqual(parse_media_type('Multipart/Mixed; boundary="b 1"'),
                         ("multipart/mixed", {"boundary": '"b 1"'}))


class BuildTests(SynchronousTestCase):

    def setUp(self):
        self.invite = parse_message(msg(INVITE_LINE, BASE + [
            "Via: SIP/2.0/UDP 192.0.2.2;branch=z9hG4bKold",
            "Route: <sip:pcscf.home1.net;lr>", "Timestamp: 54"]))

    def test_branch_and_tag(self):
        b = make_branch()
        self.assertTrue(b.startswith(MAGIC_COOKIE))
        self.assertGreaterEqual(len(b), len(MAGIC_COOKIE) + 16)
        self.assertNotEqual(b, make_branch())
        self.assertNotEqual(make_tag(), make_tag())

    def test_make_response(self):
        r = make_response(self.invite, 486)
        self.assertEqual((r.status, r.reason), (486, "Busy Here"))
        self.assertEqual(r.headers.getAll("Via"), self.invite.headers.getAll("Via"))
        for name in ("From", "To", "Call-ID", "CSeq"):
            self.assertEqual(r.headers.get(name), self.invite.headers.get(name))
        self.assertNotIn("Route", r.headers)
        self.assertNotIn("Timestamp", r.headers)
        t = make_response(self.invite, 200, "Fine", to_tag="abc")
        self.assertEqual(t.reason, "Fine")
        self.assertEqual(t.toTag, "abc")
        again = make_response(parse_message(serialize(self._with_to(t))), 200,
                              to_tag=True)
        self.assertEqual(again.toTag, "abc")
        self.assertTrue(make_response(self.invite, 180, to_tag=True).toTag)
        trying = make_response(self.invite, 100, to_tag=True)
        self.assertIsNone(trying.toTag)
        self.assertEqual(trying.headers.get("Timestamp"), "54")

    def _with_to(self, resp):
        req = self.invite.copy()
        req.headers["To"] = resp.headers["To"]
        return req

    def test_make_ack_and_cancel(self):
        resp = make_response(self.invite, 486, to_tag="tt")
        ack = make_ack(self.invite, resp)
        self.assertEqual(ack.method, "ACK")
        self.assertEqual(ack.uri, self.invite.uri)
        self.assertEqual(ack.headers.getAll("Via"), [self.invite.headers.get("Via")])
        self.assertEqual(ack.cseq, (1, "ACK"))
        self.assertEqual(ack.toTag, "tt")
        self.assertEqual(ack.headers.getAll("Route"), ["<sip:pcscf.home1.net;lr>"])
        parse_message(serialize(ack))
        cancel = make_cancel(self.invite)
        self.assertEqual(cancel.cseq, (1, "CANCEL"))
        self.assertEqual(cancel.topVia.branch, "z9hG4bKabc1")
        self.assertIsNone(cancel.toTag)
        parse_message(serialize(cancel))

    def test_reason_phrases(self):
        self.assertEqual(reason_phrase(200), "OK")
        self.assertEqual(reason_phrase(408), "Request Timeout")
        self.assertEqual(reason_phrase(499), "Client Error")
        self.assertEqual(reason_phrase(799), "Unknown")


BTID_XML = (b'<?xml version="1.0" encoding="UTF-8"?>\r\n'
            b'<mbmsAuthorizedSecurityRegister xmlns="urn:3GPP:metadata:2005:MBMS:'
            b'bootstrappingTransactionIdentifier">'
            b"<btid>I1U8vpY3qJ0hiuZNrke/NQ==@bsf.home1.net</btid>"
            b"</mbmsAuthorizedSecurityRegister>")
SDP = b"v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=MBMS\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"


class MultipartTests(SynchronousTestCase):

    def test_sdp_and_btid(self):
        body = (b"preamble\r\n--b0und\r\nContent-Type: application/sdp\r\n\r\n" + SDP
                + b"\r\n--b0und \r\nContent-Type: application/vnd.3gpp.mbms-btid+xml\r\n"
                b"Content-Disposition: render;\r\n handling=optional\r\n\r\n" + BTID_XML
                + b"\r\n--b0und--\r\nepilogue")
        parts = parse_multipart('multipart/mixed;boundary="b0und"', body)
        self.assertEqual(len(parts), 2)
        self.assertEqual(parts[0][0].get("content-type"), "application/sdp")
        self.assertEqual(parts[0][1], SDP)
        self.assertEqual(parts[1][1], BTID_XML)
        self.assertEqual(parts[1][0].get("Content-Disposition"),
                         "render; handling=optional")

    def test_build_roundtrip_in_invite(self):
        ctype, body = build_multipart([("application/sdp", SDP),
                                       ("application/xml", BTID_XML),
                                       (Headers(), b"\x00\xff")])
        req = parse_message(msg(INVITE_LINE, BASE + ["Content-Type: " + ctype], body))
        parts = parse_multipart(req.headers.get("Content-Type"), req.body)
        self.assertEqual([p[1] for p in parts], [SDP, BTID_XML, b"\x00\xff"])
        self.assertEqual(len(parts[2][0]), 0)

    def test_errors(self):
        for ctype, body in [("application/sdp", b""),
                            ("multipart/mixed", b"--x\r\n"),
                            ("multipart/mixed;boundary=x", b"no delimiter"),
                            ("multipart/mixed;boundary=x", b"--x\r\nContent-Type: a/b\r\n\r\nbody"),
                            ("multipart/mixed;boundary=x", b"--x\r\nbroken header\r\n\r\nb\r\n--x--"),
                            ("bad type;boundary=x", b"")]:
            self.assertRaises(SipParseError, parse_multipart, ctype, body)


class StreamParserTests(SynchronousTestCase):

    def setUp(self):
        self.messages = []
        self.errors = []
        self.pings = []
        self.parser = self._parser()

    def _parser(self, max_size=65535):
        return SipStreamParser(self.messages.append, self.errors.append, max_size,
                               ping_callback=lambda: self.pings.append(1))

    def stream(self):
        one = msg(INVITE_LINE, without("Via") + [
            "Via: SIP/2.0/TCP 192.0.2.1;branch=z9hG4bK1",
            "Content-Type: application/octet-stream"],
            b"\xc3\xa9\r\n\r\nOPTIONS \x00\xff")
        two = msg("SIP/2.0 200 OK", without("Max-Forwards") + ["Subject: caf\u00e9"])
        three = msg("OPTIONS sip:scf.home1.net SIP/2.0",
                    [h.replace("1 INVITE", "2 OPTIONS") for h in BASE],
                    b"", length="   0")
        return one + two + b"\r\n\r\n" + three, [one, two, three]

    def check(self):
        self.assertEqual(self.errors, [])
        self.assertEqual([m.__class__ for m in self.messages], [Request, Response, Request])
        self.assertEqual(self.messages[0].body, b"\xc3\xa9\r\n\r\nOPTIONS \x00\xff")
        self.assertEqual(self.messages[1].headers.get("Subject"), "caf\u00e9")
        self.assertEqual(self.messages[2].method, "OPTIONS")
        self.assertEqual(self.pings, [1])

    def test_pipelined_whole(self):
        data, _ = self.stream()
        self.parser.feed(data)
        self.check()

    def test_split_at_every_offset(self):
        data, _ = self.stream()
        for i in range(len(data) + 1):
            self.messages[:] = []
            self.pings[:] = []
            p = self._parser()
            p.feed(data[:i])
            p.feed(data[i:])
            self.check()

    def test_byte_by_byte(self):
        data, _ = self.stream()
        for i in range(len(data)):
            self.parser.feed(data[i:i + 1])
        self.check()

    def test_leading_keepalives(self):
        data, _ = self.stream()
        self.parser.feed(b"\r\n\r\n\r\n")
        self.parser.feed(b"\r\n")
        self.assertEqual(len(self.pings), 2)
        self.parser.feed(b"\r")
        self.parser.feed(b"\n" + data)
        self.assertEqual(len(self.messages), 3)
        self.assertEqual(len(self.pings), 3)

    def test_missing_content_length_is_fatal(self):
        data = msg(INVITE_LINE, BASE, length=None)
        self.parser.feed(data + data)
        self.assertEqual(len(self.errors), 1)
        self.assertTrue(self.errors[0].fatal)
        self.assertEqual(self.errors[0].status, 400)
        self.assertIsInstance(self.errors[0].partial, Request)
        self.assertTrue(self.parser.broken)
        self.parser.feed(self.stream()[0])
        self.assertEqual(self.messages, [])

    def test_validation_error_keeps_stream(self):
        bad = msg(INVITE_LINE, without("Call-ID"), b"xyz")
        data, _ = self.stream()
        self.parser.feed(bad + data)
        self.assertEqual(len(self.errors), 1)
        self.assertFalse(self.errors[0].fatal)
        self.assertIn("Call-ID", self.errors[0].reason)
        self.assertEqual(len(self.messages), 3)

    def test_bad_start_line_with_length_keeps_stream(self):
        bad = msg("INVITE sip:a@b SIP/3.0", BASE, b"abc\r\n\r\n")
        data, _ = self.stream()
        self.parser.feed(bad + data)
        self.assertEqual([e.status for e in self.errors], [505])
        self.assertFalse(self.errors[0].fatal)
        self.assertEqual(len(self.messages), 3)

    def test_oversized_body_skipped(self):
        parser = self._parser(max_size=2000)
        big = msg(INVITE_LINE, BASE + ["Content-Type: text/plain"], b"z" * 5000)
        data, _ = self.stream()
        for i in range(0, len(big + data), 700):
            parser.feed((big + data)[i:i + 700])
        self.assertEqual([e.status for e in self.errors], [413])
        self.assertIsInstance(self.errors[0].partial, Request)
        self.assertEqual(len(self.messages), 3)

    def test_endless_headers_fatal(self):
        parser = self._parser(max_size=1000)
        parser.feed(b"INVITE sip:a@b SIP/2.0\r\n" + b"X-Long: y\r\n" * 200)
        self.assertEqual([(e.status, e.fatal) for e in self.errors], [(413, True)])

    def test_garbage_head_fatal(self):
        self.parser.feed(b"\x00\x01garbage\r\n\r\n")
        self.assertEqual(len(self.errors), 1)
        self.assertTrue(self.errors[0].fatal)


class GarbageTests(SynchronousTestCase):
    """Random input: only SipParseError may come out of the parsers."""

    def samples(self):
        good = [
            msg(INVITE_LINE, BASE + ["Contact: <sip:u@1.2.3.4>, \"x,y\" <sip:v@h>",
                                     "Content-Type: application/sdp"], SDP),
            msg("SIP/2.0 200 OK", without("Max-Forwards") + ["Subject: a\r\n b"]),
        ]
        rng = random.Random(20240601)
        alphabet = b" \t\r\n:;,<>\"@%=/\\SIPsip2.0v\x00\xff\xc3\xa9"
        for _ in range(3000):
            base = bytearray(rng.choice(good))
            kind = rng.randrange(5)
            if kind == 0:
                for _ in range(rng.randrange(1, 8)):
                    base[rng.randrange(len(base))] = rng.choice(alphabet)
            elif kind == 1:
                base = base[:rng.randrange(len(base))]
            elif kind == 2:
                pos = rng.randrange(len(base))
                base[pos:pos] = bytes(rng.choice(alphabet)
                                      for _ in range(rng.randrange(1, 20)))
            elif kind == 3:
                base = bytearray(rng.getrandbits(8) for _ in range(rng.randrange(200)))
            else:
                lines = bytes(base).split(b"\r\n")
                rng.shuffle(lines)
                base = bytearray(b"\r\n".join(lines))
            yield rng, bytes(base)

    def test_parse_message(self):
        parsed = failed = 0
        for _, data in self.samples():
            try:
                m = parse_message(data)
            except SipParseError as e:
                self.assertIn(e.status, (400, 413, 416, 505))
                self.assertIsInstance(e.reason, str)
                failed += 1
            else:
                serialize(m)
                parsed += 1
        self.assertGreater(parsed, 0)
        self.assertGreater(failed, 0)

    def test_stream_parser(self):
        messages, errors = [], []
        parser = SipStreamParser(messages.append, errors.append)
        for rng, data in self.samples():
            if parser.broken:
                parser = SipStreamParser(messages.append, errors.append)
            while data:
                n = rng.randrange(1, 50)
                parser.feed(data[:n])
                data = data[n:]
        self.assertTrue(messages)
        self.assertTrue(errors)
        for e in errors:
            self.assertIsInstance(e, SipParseError)


def _reference_split(value, sep):
    """The plain character-by-character reading of the split rule."""
    out, cur = [], []
    in_quote = escape = False
    angle = 0
    for ch in value:
        if in_quote:
            cur.append(ch)
            if escape:
                escape = False
            elif ch == "\\":
                escape = True
            elif ch == '"':
                in_quote = False
            continue
        if ch == '"':
            in_quote = True
        elif ch == "<":
            angle += 1
        elif ch == ">" and angle:
            angle -= 1
        elif ch == sep and not angle:
            out.append("".join(cur))
            cur = []
            continue
        cur.append(ch)
    if in_quote:
        return None
    out.append("".join(cur))
    return out


class SplitOutsideQuotesTests(SynchronousTestCase):
    """The fast splitter agrees with the plain reading of the rule."""

    def test_agrees_with_the_reference(self):
        from hypothesis import given
        from hypothesis import strategies as st

        from mbmsd.sip.grammar import SipParseError, _split_outside_quotes

        @given(st.text(alphabet='ab,;"<>\\ =:@', max_size=40), st.sampled_from(",;"))
        def check(value, sep):
            expected = _reference_split(value, sep)
            try:
                got = _split_outside_quotes(value, sep)
            except SipParseError:
                got = None
            self.assertEqual(got, expected, value)

        check()

    def test_comma_list_agrees_with_the_reference(self):
        """split_comma_list, single-item shortcut included, is the rule's reading."""
        from hypothesis import given
        from hypothesis import strategies as st

        @given(st.text(alphabet='ab,;"<>\\ \t=:@', max_size=40))
        def check(value):
            parts = _reference_split(value, ",")
            expected = None if parts is None else [p.strip() for p in parts if p.strip()]
            try:
                got = split_comma_list(value)
            except SipParseError:
                got = None
            self.assertEqual(got, expected, value)

        check()

    def test_examples(self):
        from mbmsd.sip.grammar import _split_outside_quotes

        self.assertEqual(_split_outside_quotes('"a\\",b" <sip:x;y>;tag=1,c', ","),
                         ['"a\\",b" <sip:x;y>;tag=1', "c"])
        self.assertEqual(_split_outside_quotes("<sip:a;b>;lr;x=1", ";"), ["<sip:a;b>", "lr", "x=1"])
        self.assertEqual(_split_outside_quotes("a>b,c", ","), ["a>b", "c"])


class ParseCacheTests(SynchronousTestCase):
    """
    parse_uri, parse_name_addr, parse_via and parse_cseq remember what they
    parsed by the exact text: what callers get must still be theirs alone
    (they mutate it) and must follow the headers when they change.
    """

    VIA = "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKabc1;rport"

    def invite(self, via=VIA):
        return parse_message(msg(INVITE_LINE, ["Via: " + via] + BASE[1:]))

    def test_via_mutation_does_not_leak(self):
        """A Via changed as stamp_via changes it is not what the next reader gets."""
        m = self.invite()
        via = m.topVia
        via.params["received"] = "198.51.100.7"
        via.params["rport"] = "4000"
        via.host = "203.0.113.9"
        self.assertEqual(m.headers.get("Via"), self.VIA)
        for again in (m.topVia, m.vias[0], parse_via(self.VIA), self.invite().topVia):
            self.assertEqual(str(again), self.VIA)
            self.assertNotIn("received", again.params)
            self.assertIsNone(again.params["rport"])
            self.assertEqual(again.host, "192.0.2.1")

    def test_name_addr_mutation_does_not_leak(self):
        m = self.invite()
        to = m.to
        to.params["tag"] = "mine"
        to.uri.params["lr"] = None
        to.uri.user = "someone-else"
        to.display_name = "X"
        frm = m.from_
        frm.params.clear()
        for again in (m.to, parse_name_addr(BASE[3][len("To: "):]), self.invite().to):
            self.assertEqual(str(again), "<sip:urn%3Ambmsd%3Anews@mbms.home1.net>")
            self.assertIsNone(again.tag)
        self.assertIsNone(m.toTag)
        self.assertEqual(m.fromTag, "f1")
        self.assertEqual(self.invite().from_.params, {"tag": "f1"})

    def test_uri_mutation_does_not_leak(self):
        m = self.invite()
        uri = m.requestUri
        uri.params["transport"] = "tcp"
        uri.host = "evil.example"
        self.assertEqual(str(m.requestUri), "sip:urn%3Ambmsd%3Anews@mbms.home1.net")
        self.assertEqual(parse_uri("sip:urn%3Ambmsd%3Anews@mbms.home1.net").params, {})

    def test_fresh_objects(self):
        """Every call returns new objects, as a fresh parse did."""
        a, b = parse_via(self.VIA), parse_via(self.VIA)
        self.assertIsNot(a, b)
        self.assertIsNot(a.params, b.params)
        x = parse_name_addr('"A" <sip:a@b;lr>;tag=1')
        y = parse_name_addr('"A" <sip:a@b;lr>;tag=1')
        self.assertIsNot(x, y)
        self.assertIsNot(x.uri, y.uri)
        self.assertIsNot(x.params, y.params)
        self.assertIsNot(x.uri.params, y.uri.params)
        self.assertIsNot(parse_uri("sip:a@b"), parse_uri("sip:a@b"))

    def test_changed_headers_are_read_again(self):
        """After Headers.set/set_first/prepend the accessors see the new values."""
        m = self.invite()
        self.assertIsNone(m.toTag)
        self.assertEqual(m.cseq, (1, "INVITE"))
        m.headers.set("To", "<sip:bob@home1.net>;tag=t9")
        m.headers.set("From", "<sip:alice@home1.net>;tag=f2")
        m.headers.set("CSeq", "7 INVITE")
        self.assertEqual(m.toTag, "t9")
        self.assertEqual(m.to.uri.user, "bob")
        self.assertEqual(m.fromTag, "f2")
        self.assertEqual(m.cseq, (7, "INVITE"))
        m.headers.setFirst("Via", self.VIA.replace(";rport", ";rport=5070;received=10.0.0.1"))
        self.assertEqual(m.topVia.rport, 5070)
        self.assertEqual(m.topVia.received, "10.0.0.1")
        m.headers.prepend("Via", "SIP/2.0/TCP 10.0.0.2:5080;branch=z9hG4bKtop")
        self.assertEqual(m.topVia.branch, "z9hG4bKtop")
        self.assertEqual([v.branch for v in m.vias], ["z9hG4bKtop", "z9hG4bKabc1"])
        m.uri = "sip:other@home1.net"
        self.assertEqual(m.requestUri.user, "other")
        m.headers.set("To", "<sip:bob@home1.net>")
        self.assertIsNone(m.toTag)

    def test_stamp_via_does_not_leak(self):
        """stamp_via mutates the top Via: another request with that Via text is unaffected."""
        from mbmsd.sip.transaction import stamp_via
        first, second = self.invite(), self.invite()
        via = stamp_via(first, ("198.51.100.7", 4000))
        self.assertEqual(via.received, "198.51.100.7")
        self.assertEqual(first.topVia.rport, 4000)
        self.assertEqual(second.headers.get("Via"), self.VIA)
        self.assertIsNone(second.topVia.received)
        self.assertIs(second.topVia.rport, True)
        via = stamp_via(second, ("198.51.100.8", 4001))
        self.assertEqual((via.received, via.rport), ("198.51.100.8", 4001))

    def test_branch_added_by_send_request_does_not_leak(self):
        """Two requests with the same branchless Via each get a branch of their own."""
        from twisted.internet.task import Clock

        from mbmsd.sip.testing import FakeSipTransport, RecordingUser
        from mbmsd.sip.transaction import TransactionLayer
        clock = Clock()
        layer = TransactionLayer(clock, RecordingUser())
        transport = FakeSipTransport(clock)
        branches = []
        for _ in range(2):
            req = Request("OPTIONS", "sip:a@192.0.2.9", [
                ("Via", "SIP/2.0/UDP 192.0.2.1:5060"), ("Max-Forwards", "70"),
                ("From", "<sip:u@home1.net>;tag=1"), ("To", "<sip:a@192.0.2.9>"),
                ("Call-ID", "c@x"), ("CSeq", "1 OPTIONS")])
            txn = layer.sendRequest(req, transport, ("192.0.2.9", 5060), RecordingUser())
            branches.append(txn.branch)
            self.assertEqual(req.topVia.branch, txn.branch)
        self.assertNotEqual(branches[0], branches[1])
        self.assertNotIn("branch", parse_via("SIP/2.0/UDP 192.0.2.1:5060").params)

    def test_errors_are_not_cached(self):
        """A malformed value raises a new error each time (callers set its partial)."""
        errors = []
        for _ in range(2):
            with self.assertRaises(SipParseError) as ctx:
                parse_via("SIP/2.0/UDP")
            errors.append(ctx.exception)
            ctx.exception.partial = "set by a caller"
        self.assertIsNot(errors[0], errors[1])
        with self.assertRaises(SipParseError) as ctx:
            parse_name_addr("<sip:a@b")
        self.assertIsNone(ctx.exception.partial)
        self.assertRaises(SipParseError, parse_cseq, "x INVITE")
        self.assertRaises(SipParseError, parse_cseq, "x INVITE")

    def test_long_values_and_other_types(self):
        """Values too long for the cache parse (and copy) the same; non-str fail as before."""
        long_via = self.VIA + ";x=" + "a" * 600
        a, b = parse_via(long_via), parse_via(long_via)
        self.assertEqual(str(a), long_via)
        a.params["received"] = "1.2.3.4"
        self.assertNotIn("received", b.params)
        self.assertRaises(AttributeError, parse_uri, None)
        self.assertRaises(AttributeError, parse_name_addr, 5)


def test_long_header_names_are_not_cached():
    from mbmsd.sip import headers as m
    long_name = "X-" + "a" * 200
    before = m._cached_pair.cache_info().currsize
    h = m.Headers([(long_name, "1")])
    assert h.get(long_name.upper()) == "1"
    assert m._cached_pair.cache_info().currsize == before
