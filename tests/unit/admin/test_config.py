"""
The [admin] section: off by default, and each mistake one line naming the key.
"""

import os

import pytest

from mbmsd import config as c
from mbmsd.nodeconfig import load_config
from tests.support.daemon import ROOT


def load(tmp_path, text):
    overlay = tmp_path / "overlay.toml"
    overlay.write_text('[storage]\npath = "%s"\n%s' % (tmp_path / "db.sqlite3", text))
    return load_config([str(ROOT / "etc" / "mbmsd.toml"), str(overlay)])


def errors(tmp_path, text):
    with pytest.raises(c.ConfigError) as e:
        load(tmp_path, text)
    return e.value.lines


def test_off_by_default(tmp_path):
    config = load(tmp_path, "")
    assert config["admin"]["listen"] == ""


def test_listen_needs_a_token_file(tmp_path):
    assert [line.split(": ", 1)[1] for line in errors(
        tmp_path, '[admin]\nlisten = "tcp:0:interface=127.0.0.1"\n')] == [
        "admin.token_file: required with admin.listen (the API's bearer token)"]


def test_token_file_problems_named(tmp_path):
    token = tmp_path / "t"
    section = '[admin]\nlisten = "tcp:0:interface=127.0.0.1"\ntoken_file = "%s"\n' % (token,)
    assert "admin.token_file: %s: No such file or directory" % (token,) in \
        errors(tmp_path, section)[0]
    token.write_text("short\n")
    os.chmod(token, 0o600)
    assert "at least 16 printable characters" in errors(tmp_path, section)[0]
    token.write_text("x" * 40)
    os.chmod(token, 0o640)
    assert "readable by group or others" in errors(tmp_path, section)[0]
    os.chmod(token, 0o600)
    assert load(tmp_path, section)["admin"]["token_file"] == str(token)


def test_bad_listen_and_unknown_key(tmp_path):
    lines = errors(tmp_path, '[admin]\nlisten = "nonsense:1"\ncolour = "red"\n')
    assert any("admin.listen: not a valid Twisted endpoint description" in x for x in lines)
    assert any("admin.colour: unknown key" in x for x in lines)


def test_tls_ca_without_certificate(tmp_path):
    token = tmp_path / "t"
    token.write_text("x" * 40)
    os.chmod(token, 0o600)
    ca = tmp_path / "ca.pem"
    ca.write_text("not a certificate")
    lines = errors(tmp_path, '[admin]\nlisten = "tcp:0:interface=127.0.0.1"\ntoken_file = "%s"\n'
                             '[admin.tls]\nca = "%s"\n' % (token, ca))
    assert any("admin.tls.certificate: required with admin.tls.ca" in x for x in lines), lines
