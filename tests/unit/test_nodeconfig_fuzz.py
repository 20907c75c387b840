"""
Fuzz tests of the TOML config loader (mbmsd.nodeconfig.load_config over
mbmsd.config): whatever an operator writes, the answer is the validated
config or a ConfigError whose lines each name the file and, past TOML
syntax, the key: never another exception (a traceback instead of a one-line
answer at start-up or in --check).

Inputs: etc/mbmsd.toml with random edits at real key paths (values of every
TOML type, removed keys, unknown keys), random documents, raw bytes, and
TOML nested past the parser's recursion limit; each as the only file and as
an overlay of etc/mbmsd.toml.
"""

import json
import math
import tempfile
import tomllib
from datetime import date, datetime, time
from pathlib import Path

from hypothesis import example, given
from hypothesis import strategies as st

from mbmsd import config as c
from mbmsd.nodeconfig import load_config
from tests.conftest import budget

ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / "etc" / "mbmsd.toml"
BASE_DATA = tomllib.loads(BASE.read_text())
SECTIONS = {"node", "storage", "metrics", "subscriber", "bsf", "bmsc", "pcscf", "scf"}

# ---------------------------------------------------------------- TOML out


def _string(s):
    # TOML basic strings take JSON's escapes; DEL must be escaped too
    return json.dumps(s, ensure_ascii=False).replace("\x7f", "\\u007f")


def toml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return _string(v)
    if isinstance(v, (datetime, date, time)):
        return v.isoformat()
    if isinstance(v, list):
        return "[%s]" % ", ".join(toml_value(x) for x in v)
    if isinstance(v, dict):
        return "{%s}" % ", ".join("%s = %s" % (_string(k), toml_value(x)) for k, x in v.items())
    raise TypeError(type(v))


def toml_document(data):
    """Every top-level key as one line (tables inline): valid TOML for any dict."""
    return "".join("%s = %s\n" % (_string(k), toml_value(v)) for k, v in data.items())


# ---------------------------------------------------------------- strategies

keys = st.sampled_from(["name", "roles", "home_domain", "backend", "path", "listen", "k", "op",
                        "opc", "impi", "impus", "service", "naf", "id", "udp_listen", "scf",
                        "exporters", "prometheus", "fqdn", "addresses", "x", "é", ""]) | \
    st.text(max_size=8).filter(lambda k: ":" not in k)
scalars = st.one_of(
    st.booleans(), st.integers(-2 ** 63, 2 ** 63 - 1), st.floats(),
    st.text(max_size=20),
    st.sampled_from(["", "tcp:0", "tcp:99999", "udp:5060", "sip:127.0.0.1:5070", "sip:[", "bsf",
                     "bmsc", "pcscf", "scf", "sqlite", "memory", "prometheus", "systemd:domain=INET",
                     "ssl:0", "unix:/", "465b5ce8b199b49faa5f0a2ee238a6bc", "zz", "127.0.0.1",
                     "::1", "user1@home1.net", "sip:user1@home1.net", "tel:+1", "http://x",
                     "urn:mbmsd:news", "ff9bb4d0b607", "8000"]),
    st.datetimes().map(lambda d: d.replace(microsecond=0)), st.dates(),
    st.times().map(lambda t: t.replace(microsecond=0)))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) |
                      st.dictionaries(keys, inner, max_size=3), max_leaves=6)


def paths(data, prefix=()):
    """Every key path of C{data} (into tables and arrays of tables)."""
    for k, v in data.items():
        yield prefix + (k,)
        if isinstance(v, dict):
            yield from paths(v, prefix + (k,))
        elif isinstance(v, list):
            for i, item in enumerate(v):
                if isinstance(item, dict):
                    yield from paths(item, prefix + (k, i))


ALL_PATHS = list(paths(BASE_DATA))


@st.composite
def edited_base(draw):
    """etc/mbmsd.toml with one to four random edits."""
    data = json.loads(json.dumps(BASE_DATA))
    for _ in range(draw(st.integers(1, 4))):
        path = draw(st.sampled_from(ALL_PATHS))
        parent = data
        try:
            for k in path[:-1]:
                parent = parent[k]
            op = draw(st.sampled_from(["set", "delete", "add"]))
            if op == "set":
                parent[path[-1]] = draw(values)
            elif op == "delete":
                del parent[path[-1]]
            elif isinstance(parent, dict):
                parent[draw(keys)] = draw(values)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier edit removed or replaced the way there
    return toml_document(data).encode("utf-8")


def deep(n, opener, closer, inner=b"1"):
    return b"a = " + opener * n + inner + closer * n + b"\n"


untrusted = st.one_of(
    edited_base(),
    st.dictionaries(keys, values, max_size=5).map(lambda d: toml_document(d).encode("utf-8")),
    st.binary(max_size=100),
    st.text(max_size=100).map(lambda s: s.encode("utf-8")),
)


# ---------------------------------------------------------------- the property


def check(files, names):
    try:
        out = load_config([str(f) for f in files])
    except c.ConfigError as e:
        assert e.lines
        for line in e.lines:
            assert any(line.startswith(str(f) + ": ") for f in files), line
            problem = line.split(": ", 1)[1]
            if problem.startswith(("TOML syntax error", "cannot read", "not UTF-8",
                                   "TOML nested")):
                continue
            key = problem.split(": ", 1)[0]
            assert any(key == n or key.startswith((n + ".", n + "["))
                       for n in names | SECTIONS), line
        return None
    assert set(out) >= {"node", "storage", "metrics", "subscriber"}
    return out


@budget(0.5)
@given(untrusted)
# regressions: UnicodeDecodeError and RecursionError escaped as tracebacks
@example(b"\xff\xfe")  # not UTF-8
@example(deep(2000, b"[", b"]"))  # past tomllib's recursion limit
@example(deep(2000, b"{b=", b"}"))
@example(b".".join([b"node"] * 3000) + b" = 1\n")  # tomllib nests dotted keys without
# recursion, but the loader's merge recursed
# regression: two subscribers without a valid impi raised KeyError (the duplicate check)
@example(b'[[subscriber]]\nk = "00"\n[[subscriber]]\nimpi = 5\n')
def test_load_config_answers_config_error_naming_the_key(text):
    with tempfile.TemporaryDirectory() as tmp:
        f = Path(tmp) / "fuzz.toml"
        f.write_bytes(text)
        try:
            names = set(tomllib.loads(text.decode("utf-8")))
        except Exception:
            names = set()
        check([f], names)
        check([BASE, f], names | set(BASE_DATA))


def test_the_base_config_loads():
    # the fuzzer's starting point is valid, so its edits probe the validators
    assert check([BASE], set(BASE_DATA))["node"]["roles"] == ["bsf", "bmsc", "pcscf", "scf"]
    with tempfile.TemporaryDirectory() as tmp:
        f = Path(tmp) / "same.toml"
        f.write_text(toml_document(BASE_DATA))
        assert check([f], set(BASE_DATA)) == load_config([str(BASE)])
