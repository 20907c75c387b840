"""
Property and fuzz tests of the HTTP Digest headers (mbmsd.protocols.digest):
Authorization, WWW-Authenticate and Authentication-Info, as Ub, Ua and SIP
REGISTER receive them from peers.

Properties: format -> parse gives the same fields; a response computed for
credentials checks against them (and not against another body); no
exception but DigestError leaves a parser, on random text and bytes and on
valid headers with random damage.
"""

from unittest import mock

from hypothesis import example, given
from hypothesis import strategies as st

from mbmsd.protocols import digest
from tests.conftest import edit

TCHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
tokens = st.text(TCHARS, min_size=1, max_size=12)
# what a quoted-string may carry: HTAB, SP and VCHAR (quotes and backslashes escaped)
quotable = st.text(st.sampled_from(["\t"] + [chr(c) for c in range(0x20, 0x7F)]), max_size=24)
hex8 = st.from_regex(r"[0-9a-fA-F]{8}", fullmatch=True)
hex32 = st.from_regex(r"[0-9a-f]{32}", fullmatch=True)


@st.composite
def authorizations(draw):
    qop = draw(st.none() | st.sampled_from(["auth", "auth-int"]) | tokens)
    nc = draw(hex8) if qop is not None else draw(st.none() | hex8)
    cnonce = draw(quotable.filter(bool)) if qop is not None else draw(st.none() | quotable)
    return dict(
        username=draw(quotable), realm=draw(quotable), nonce=draw(quotable),
        uri=draw(quotable), response=draw(st.just("") | hex32),
        algorithm=draw(st.none() | st.sampled_from(["MD5", "AKAv1-MD5", "MD5-sess"]) | tokens),
        qop=qop, nc=nc, cnonce=cnonce, opaque=draw(st.none() | quotable),
        auts=draw(st.none() | quotable))


@given(authorizations())
def test_authorization_round_trip(fields):
    creds = digest.parse_authorization(digest.format_authorization(**fields))
    for name, value in fields.items():
        assert getattr(creds, name) == value, name


@given(quotable, quotable, st.none() | tokens,
       st.lists(tokens, max_size=3), st.none() | quotable, st.booleans())
def test_challenge_round_trip(realm, nonce, algorithm, qop, opaque, stale):
    c = digest.parse_challenge(digest.format_challenge(realm, nonce, algorithm, qop, opaque, stale))
    assert (c.realm, c.nonce, c.algorithm, c.qop, c.opaque, c.stale) == \
        (realm, nonce, algorithm, qop, opaque, stale)


@given(st.none() | tokens, st.just("") | hex32, st.none() | quotable, st.none() | hex8,
       st.none() | quotable)
def test_authentication_info_round_trip(qop, rspauth, cnonce, nc, nextnonce):
    p = digest.parse_authentication_info(
        digest.format_authentication_info(qop, rspauth, cnonce, nc, nextnonce))
    want = {"qop": qop, "rspauth": rspauth, "cnonce": cnonce, "nc": nc, "nextnonce": nextnonce}
    assert p == {k: v for k, v in want.items() if v is not None}


@given(authorizations(), st.binary(max_size=16), st.binary(max_size=64), st.binary(max_size=64))
def test_computed_response_checks(fields, password, body, other):
    fields["qop"] = "auth-int"
    fields["algorithm"] = "AKAv1-MD5"
    fields["cnonce"] = fields["cnonce"] or "c"
    fields["nc"] = fields["nc"] or "00000001"
    fields["response"] = digest.compute_response(
        password, fields["username"], fields["realm"], "POST", fields["uri"], fields["nonce"],
        fields["nc"], fields["cnonce"], "auth-int", body, "AKAv1-MD5")
    creds = digest.parse_authorization(digest.format_authorization(**fields))
    assert digest.check_response(creds, password, "POST", body)
    assert digest.check_response(creds, password, "POST", other) == (other == body)


JUNK = (st.sampled_from([b'"', b"\\", b",", b"=", b" ", b"\r\n ", b"\r\n", b"\x00", b"\xff",
                         b"Digest ", b"qop=auth", b"nc=1"])
        | st.binary(min_size=1, max_size=3))


@st.composite
def damaged(draw):
    text = digest.format_authorization(**draw(authorizations())).encode("ascii")
    return edit(draw, text, JUNK, 6)


untrusted = st.one_of(
    damaged(), st.binary(max_size=200), st.text(max_size=200),
    st.text(st.sampled_from(TCHARS + ' ,="\\\t'), max_size=120).map(lambda s: "Digest " + s),
    st.integers(0, 3).map(lambda n: "Digest " + "a" * (digest.MAX_HEADER_LENGTH + n)))


@given(untrusted)
@example(b'Digest username="\\')
@example("Digest ,,,,")
@example('Digest username="a", realm="b", nonce="", uri="/", response="", qop=auth, nc=00000001, cnonce=""')
@example(b"Digest " + b"\xc3\xa9")
def test_parsers_raise_only_digest_error(value):
    for parse in (digest.parse_authorization, digest.parse_challenge,
                  digest.parse_authentication_info, digest.parse_auth_params):
        try:
            parse(value)
        except digest.DigestError:
            pass
    try:
        creds = digest.parse_authorization(value)
    except digest.DigestError:
        return
    # what parsed can be checked without any other exception
    try:
        assert not digest.check_response(creds, b"pw", "GET", b"") or creds.response
    except digest.DigestError:
        pass


@given(st.text(max_size=40) | st.binary(max_size=40).map(lambda b: b.decode("latin-1")))
@example("AAAAAAAAAAAAAAAAAAA=")
@example("é")
def test_decode_auts_raises_only_digest_error(value):
    try:
        assert len(digest.decode_auts(value)) == 14
    except digest.DigestError:
        pass


# The auth-param scanner walked the header one character at a time; it now
# matches one regular expression per auth-param. The walk (the module's own
# fallback, over the character loops kept here) is the reference.

def _walk_ws(s, i):
    while i < len(s) and s[i] in " \t":
        i += 1
    return i


def _walk_token(s, i):
    j = i
    while j < len(s) and s[j] in digest._TCHARS:
        j += 1
    return s[i:j], j


def _outcome(value):
    # the whole header, and its auth-params alone (after the scheme)
    params = value.partition(b" " if isinstance(value, bytes) else " ")[2]
    out = []
    for parse, arg in ((digest.parse_authorization, value), (digest.parse_auth_params, params)):
        try:
            out.append(("ok", parse(arg)))
        except digest.DigestError as e:
            out.append(("error", str(e)))
    return out


@given(untrusted)
@example('Digest a="\\"", b="x\\\\y", c="\\\t"')
@example('Digest a="\x01"')
@example('Digest a="\\\x7f"')
@example('Digest a="open')
@example('Digest ,a=1 ,, b = "2",c=x d=4')
@example('Digest a=1, A=2')
@example('Digest a= , b=1')
def test_scanner_decides_as_the_character_walk(value):
    fast = _outcome(value)
    with mock.patch.object(digest, "_skip_ws", _walk_ws), \
            mock.patch.object(digest, "_token", _walk_token), \
            mock.patch.object(digest, "_quoted_string", digest._quoted_string_error), \
            mock.patch.object(digest, "_parse_params",
                              lambda s, i: digest._parse_params_walk(s, i, {})):
        walked = _outcome(value)
    assert fast == walked
