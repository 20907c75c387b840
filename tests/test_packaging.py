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

from tests.daemon import ROOT

pytestmark = pytest.mark.external


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    build = tmp_path_factory.mktemp("build")
    # --no-build-isolation: the venv's setuptools, no download; the build
    # folder is a copy so the checkout's own build/ and egg-info stay as they are
    subprocess.run(["cp", "-r", "mbmsd", "twisted", "setup.cfg", "pyproject.toml", "README.md",
                    str(build)], cwd=ROOT, check=True)
    p = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(out), "."],
        cwd=build, capture_output=True, text=True, timeout=300,
    )
    assert p.returncode == 0, p.stdout + p.stderr
    (path,) = out.glob("mbmsd-*.whl")
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
