"""
The checkout itself (issue 12 item 15): .gitignore lists no tracked file, so
that nothing tracked is hidden from `git status` (or left out by tools that
honour .gitignore).
"""

import re
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


# ---------------------------------------------------------------------------
# issue 15 item 7: the design lives in the repository (docs/design.md), the
# README's Layout names every module, and no file points outside the checkout


def _repository_files():
    # tracked files plus new ones not yet added (never what .gitignore hides:
    # .venv/, var/, build/): what a commit of this tree would hold
    git = shutil.which("git")
    if git is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    p = subprocess.run([git, "-C", str(ROOT), "ls-files", "-z", "-c", "-o", "--exclude-standard"],
                       capture_output=True, timeout=60)
    assert p.returncode == 0, p.stderr
    for name in sorted(set(p.stdout.decode("utf-8").split("\0")) - {""}):
        path = ROOT / name
        if not path.is_file():
            continue  # deleted in the work tree, not yet staged
        data = path.read_bytes()
        if b"\0" in data:
            continue  # binary
        try:
            yield name, data.decode("utf-8")
        except UnicodeDecodeError:
            continue


def _layout_entries():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "\n## Layout\n" in readme, "README.md has no Layout section"
    section = readme.split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    block = section.split("```\n", 2)
    assert len(block) == 3, "the Layout section holds no code block"
    return [line.split()[0] for line in block[1].splitlines() if line.strip()]


def test_readme_layout_lists_every_module():
    # one line per module of the package, and no line naming a module that
    # is gone; the independent truth is the package directory itself
    entries = _layout_entries()
    modules = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "mbmsd").rglob("*.py")
                     if "__pycache__" not in p.parts)
    assert len(modules) > 50  # the walk found the package, not an empty folder
    missing = [m for m in modules if m not in entries]
    assert missing == [], "modules missing from the README's Layout: %s" % (missing,)
    stale = [e for e in entries if not (ROOT / e).exists()]
    assert stale == [], "README Layout names paths that do not exist: %s" % (stale,)
    assert len(entries) == len(set(entries)), "a path listed twice in the Layout"


def test_readme_links_the_design():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    top = readme.split("\n## ", 1)[0]  # the part above the first section
    assert "(docs/design.md)" in top
    assert (ROOT / "docs" / "design.md").is_file()


# Built by concatenation so that this file does not match itself.
_DESIGN_CITATION = re.compile("DESIGN" + r"(?:\.md)?\s+[0-9]|" + "DESIGN" + r"\.md\b")


def test_no_citation_of_the_design_outside_the_repository():
    # the old citations named a design document the repository does not
    # hold; the code cites the spec clause or docs/design.md instead
    found = []
    for name, text in _repository_files():
        for number, line in enumerate(text.splitlines(), 1):
            if _DESIGN_CITATION.search(line):
                found.append("%s:%d: %s" % (name, number, line.strip()))
    assert found == [], "\n".join(found)


def test_docs_design_sections_cited_exist():
    # every "docs/design.md N.M" cited anywhere names a numbered heading of it
    design = (ROOT / "docs" / "design.md").read_text(encoding="utf-8")
    sections = set(re.findall(r"^#{2,3} ([0-9]+(?:\.[0-9]+)?)\.? ", design, re.M))
    assert {"1", "2", "5.3", "7.7", "8.3"} <= sections
    cite = re.compile(r"docs/design\.md,? ([0-9]+(?:\.[0-9]+)?)(?:/([0-9]+(?:\.[0-9]+)?))?")
    bad = []
    for name, text in _repository_files():
        for number, line in enumerate(text.splitlines(), 1):
            for match in cite.finditer(line):
                for section in filter(None, match.groups()):
                    if section not in sections:
                        bad.append("%s:%d: docs/design.md %s" % (name, number, section))
    assert bad == [], "\n".join(bad)


# Paths of a developer's machine or of notes outside the checkout. Built by
# concatenation so that this file does not match itself.
_MACHINE_PATH = re.compile("|".join([
    "/" + "work/", "/" + "home/[A-Za-z0-9_.-]+", "/" + "root/", "/" + "Users/",
    "[A-Za-z]:" + r"\\\\" + "Users", r"\.\./" + "shared/", r"\b" + "shared/" + "(?:spec|notes)",
    "/" + "tmp/ci",
]))
# A path under /tmp is legitimate where a user is told to write a scratch
# file of their own (the README's player example); the tests make their
# directories with tempfile (tests/pg.py's cluster, the daemon's workdirs),
# never at a fixed path, so any other fixed path under /tmp is a leftover
# of one machine.
_TMP = "/" + "tmp/"
_TMP_ALLOWED = {("README.md", _TMP + "watch.sdp")}


def test_no_path_of_a_developer_machine():
    found = []
    for name, text in _repository_files():
        for number, line in enumerate(text.splitlines(), 1):
            if _MACHINE_PATH.search(line):
                found.append("%s:%d: %s" % (name, number, line.strip()))
            for match in re.finditer(re.escape(_TMP) + r"[^\s'\"`)]*", line):
                if (name, match.group(0)) not in _TMP_ALLOWED:
                    found.append("%s:%d: %s" % (name, number, line.strip()))
    assert found == [], "\n".join(found)
