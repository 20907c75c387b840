"""
The checkout itself (issue 12 item 15): .gitignore lists no tracked file, so
that nothing tracked is hidden from `git status` (or left out by tools that
honour .gitignore).
"""

import shutil
import subprocess

import pytest

from tests.daemon import ROOT


def test_gitignore_lists_no_tracked_file():
    git = shutil.which("git")
    if git is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    p = subprocess.run([git, "-C", str(ROOT), "ls-files", "-i", "-c", "--exclude-standard"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == []
