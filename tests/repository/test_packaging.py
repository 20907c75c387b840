"""
The wheel operators install: it carries the twistd plugin (and never a
twisted/__init__.py or twisted/plugins/__init__.py, which would clobber
Twisted's own), the schema files, and twistd finds `mbmsd` from it.
"""

import os
import subprocess
import sys
import zipfile

import pytest

from tests.support.daemon import ROOT

pytestmark = pytest.mark.external


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    build = tmp_path_factory.mktemp("build")
    # `make dist` as operators run it, in a copy of the checkout so that its
    # own build/, dist/ and egg-info stay as they are; this venv's pip and
    # setuptools (-o: the venv is not rebuilt because the copy looks newer)
    subprocess.run(["cp", "-r", "Makefile", "mbmsd", "twisted", "setup.cfg", "pyproject.toml",
                    "README.md", "LICENSE", "etc", "systemd", "contrib", str(build)],
                   cwd=ROOT, check=True)
    venv = sys.prefix
    p = subprocess.run(["make", "dist", "VENV=%s" % (venv,), "-o", "%s/.installed" % (venv,)],
                       cwd=build, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    (path,) = (build / "dist").glob("mbmsd-*-py3-none-any.whl")
    return path


def test_wheel_contents(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "twisted/plugins/mbmsd_plugin.py" in names
    assert "twisted/__init__.py" not in names
    assert "twisted/plugins/__init__.py" not in names
    assert "mbmsd/storage/schema/001_gba.sql" in names
    assert "mbmsd/plugins/mbmsd_builtin.py" in names
    assert not any(n.endswith("dropin.cache") for n in names)
    entry = [n for n in names if n.endswith("entry_points.txt")]
    assert entry and b"mbms-ue = mbmsd.ue.cli:main" in zipfile.ZipFile(wheel).read(entry[0])


def test_wheel_carries_configs_units_monitoring_and_license(wheel):
    archive = zipfile.ZipFile(wheel)
    names = set(archive.namelist())
    (data,) = {n.split("/")[0] for n in names if n.split("/")[0].endswith(".data")}
    shipped = {n[len(data) + len("/data/"):] for n in names if n.startswith(data + "/data/")}
    expected = set()
    for folder in ("etc", "etc/nodes", "systemd", "contrib/grafana", "contrib/prometheus"):
        for f in (ROOT / folder).iterdir():
            if f.is_file():
                expected.add("share/mbmsd/%s/%s" % (folder, f.name))
    assert shipped == expected
    # byte for byte the files of the checkout
    for name in expected:
        assert archive.read("%s/data/%s" % (data, name)) == \
            (ROOT / name[len("share/mbmsd/"):]).read_bytes(), name
    for unit in ("mbmsd.service", "mbmsd@.service", "mbmsd.target", "mbmsd-ub.socket",
                 "mbmsd.sysusers", "mbmsd.tmpfiles"):
        assert "share/mbmsd/systemd/" + unit in shipped
    assert "share/mbmsd/etc/mbmsd.toml" in shipped
    (license,) = [n for n in names if n.endswith(".dist-info/LICENSE")]
    text = archive.read(license).decode()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text
    (metadata,) = [n for n in names if n.endswith(".dist-info/METADATA")]
    assert "License: Apache-2.0" in archive.read(metadata).decode()


def test_license_is_the_apache_license_2_0():
    text = (ROOT / "LICENSE").read_text()
    # the 9 sections of the terms and conditions, in order, and the appendix
    headings = [line.strip().split(".")[0] for line in text.splitlines()
                if line.strip()[:2] in {"%d." % i for i in range(1, 10)}
                and line.strip()[2:3] == " "]
    assert headings == [str(i) for i in range(1, 10)]
    for phrase in ("Apache License", "Version 2.0, January 2004", "http://www.apache.org/licenses/",
                   "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION",
                   "END OF TERMS AND CONDITIONS", "APPENDIX: How to apply the Apache License"):
        assert phrase in text, phrase
    assert len(text.split()) > 1500


def test_installed_wheel_puts_the_files_under_share(wheel, tmp_path):
    # an empty venv of its own: pip install --prefix would uninstall the
    # checkout's editable mbmsd from the venv running the tests
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=120)
    p = subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"),
                        "install", "--no-deps", str(wheel)],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    share = venv / "share" / "mbmsd"
    assert (share / "systemd" / "mbmsd.service").read_text() == \
        (ROOT / "systemd" / "mbmsd.service").read_text()
    assert (share / "etc" / "nodes" / "core-1.toml").is_file()
    assert (share / "contrib" / "prometheus" / "mbmsd.rules.yml").is_file()
    assert (share / "contrib" / "grafana" / "mbmsd.json").is_file()


def test_twistd_finds_mbmsd_from_the_wheel(wheel, tmp_path):
    target = tmp_path / "site"
    p = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--target",
                        str(target), str(wheel)], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    env = dict(os.environ, PYTHONPATH=str(target))
    probe = (
        "import sys; from twisted.scripts.twistd import run; "
        "from twisted.application.service import IServiceMaker; from twisted.plugin import getPlugins; "
        "names = {p.tapname for p in getPlugins(IServiceMaker)}; "
        "import twisted.plugins.mbmsd_plugin as m, mbmsd; "
        "print('mbmsd' in names, m.__file__, mbmsd.__file__)"
    )
    p = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                       cwd=tmp_path, env=env, timeout=60)
    assert p.returncode == 0, p.stderr
    found, plugin_file, package_file = p.stdout.split()
    assert found == "True"
    assert plugin_file.startswith(str(target))
    assert package_file.startswith(str(target))
    # and the node validates its config from the installed copy
    p = subprocess.run([sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
                        "-n", "mbmsd", "--config", str(ROOT / "etc" / "mbmsd.toml"), "--check"],
                       capture_output=True, text=True, cwd=tmp_path, env=env, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "config OK" in p.stdout
