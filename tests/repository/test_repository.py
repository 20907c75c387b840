"""
The checkout itself (issue 12 item 15): .gitignore lists no tracked file, so
that nothing tracked is hidden from `git status` (or left out by tools that
honour .gitignore).
"""

import re
import shutil
import subprocess

import pytest

from tests.support.daemon import ROOT


def test_gitignore_lists_no_tracked_file():
    git = shutil.which("git")
    if git is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    p = subprocess.run([git, "-C", str(ROOT), "ls-files", "-i", "-c", "--exclude-standard"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == []


# ---------------------------------------------------------------- imports
# No import circle among mbmsd's modules (issue 15: the role plugins and their
# services imported each other). Every import counts, those inside functions
# too: a circle broken only by deferring one import is still a circle.


def _modules(root):
    """{dotted name: path} of every module of the package under C{root}."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _runtime_nodes(tree):
    """
    The nodes of C{tree} that can run: all but the bodies of
    C{if TYPE_CHECKING:} (names for annotations, never imported at run time).
    """
    import ast

    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.dump(child.test):
                todo.extend(child.orelse)
                continue
            todo.append(child)


def import_graph(root):
    """
    {module: the set of the package's modules it imports}, read from the
    source (ast) of the package at C{root}; relative imports resolved,
    C{from p import m} naming module p.m when m is one.
    """
    import ast

    modules = _modules(root)
    top = root.name

    def known(name):
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = set()
        for node in _runtime_nodes(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                edges.update(known(a.name) for a in node.names
                             if a.name == top or a.name.startswith(top + "."))
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                if base != top and not base.startswith(top + "."):
                    continue
                for a in node.names:
                    full = base + "." + a.name
                    edges.add(full if full in modules else known(base))
        edges.discard(None)
        edges.discard(name)
        graph[name] = edges
    return graph


def import_cycles(graph):
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, cycles = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def test_import_graph_finds_a_circle_through_a_deferred_import(tmp_path):
    # the checker itself: a circle closed inside a function, and one through
    # a relative import, are both found; a chain is not a circle
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from pkg import b\n")
    (pkg / "b.py").write_text("import pkg.a\nimport os\n")
    (pkg / "sub" / "c.py").write_text("from . import d\n")
    (pkg / "sub" / "d.py").write_text("from ..sub.c import name\n")
    (pkg / "e.py").write_text("from pkg.sub import c\n")
    graph = import_graph(pkg)
    assert graph["pkg.e"] == {"pkg.sub.c"}
    assert import_cycles(graph) == [["pkg.a", "pkg.b"], ["pkg.sub.c", "pkg.sub.d"]]


def test_no_import_circle_in_mbmsd():
    graph = import_graph(ROOT / "mbmsd")
    assert len(graph) > 50  # the whole package was read
    assert graph["mbmsd.roles.bmsc.plugin"] >= {"mbmsd.roles.bmsc.config",
                                                  "mbmsd.roles.bmsc.service"}
    assert import_cycles(graph) == []


_IMPORT_EACH = r"""
import importlib, os, sys
# third-party packages first: each child below then imports only mbmsd
for name in ("twisted.internet.defer", "twisted.internet.endpoints", "twisted.web.client",
             "twisted.web.server", "twisted.application.service", "twisted.plugin",
             "twisted.logger", "zope.interface", "prometheus_client"):
    importlib.import_module(name)
assert not [m for m in sys.modules if m == "mbmsd" or m.startswith("mbmsd.")]
failed = []
for name in sys.argv[1:]:
    pid = os.fork()
    if pid == 0:
        try:
            importlib.import_module(name)
        except BaseException as e:
            sys.stderr.write("%s: %s: %s\n" % (name, e.__class__.__name__, e))
            os._exit(1)
        os._exit(0)
    if os.waitpid(pid, 0)[1] != 0:
        failed.append(name)
print(" ".join(failed))
"""


def test_each_module_imports_alone():
    """
    Every module imports first in an interpreter where no other mbmsd
    module was imported (a forked child of a clean one): no module works
    only when something else was imported before it.
    """
    import os
    import sys

    if not hasattr(os, "fork"):
        pytest.skip("needs os.fork")
    names = sorted(_modules(ROOT / "mbmsd"))
    p = subprocess.run([sys.executable, "-c", _IMPORT_EACH, *names], capture_output=True,
                       text=True, timeout=300, cwd=str(ROOT))
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == [], p.stderr


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


# Citations of documents the repository does not hold: the old design
# ("DESIGN x.y"), the project's notes (the spec digests, the tooling probe,
# the style notes, the anchors) and their source tags (an S, C or V and a
# number in brackets, after a space).
# Built by concatenation so that this file does not match itself.
_NOTES = r"(?:gba|mbms-keys|ims-mbms|published-texts|sources)\." + "md"
_OUTSIDE_CITATION = re.compile("|".join([
    "DESIGN" + r"(?:\.md)?\s+[0-9]", "DESIGN" + r"\.md\b",
    r"\b" + _NOTES + r"\b", r"\bspec/[a-z-]+\." + "md",
    r"\b(?:" + "TOOLING|STYLE|ANCHORS" + r")(?:\.md\b|\s+[0-9])",
    r"(?<![\w\]])\[[SCV](?:[0-9]+|\.\.)\]",
    r"\b" + "sources" + r" [0-9]+\.[0-9]",
]))


def test_no_citation_of_a_document_outside_the_repository():
    # the code cites the spec clause, a fact measured and stated plainly,
    # or docs/design.md; never a document a reader of the repository lacks
    found = []
    for name, text in _repository_files():
        for number, line in enumerate(text.splitlines(), 1):
            if _OUTSIDE_CITATION.search(line):
                found.append("%s:%d: %s" % (name, number, line.strip()))
    assert found == [], "\n".join(found)


def test_outside_citation_pattern():
    # the pattern catches each form the old citations took, and not the
    # words that are legitimate (a Digest, a seed of provisioning, a style)
    for cited in ["DESIGN" + " 7.4", "DESIGN" + ".md", "spec/gb" + "a.md 3",
                  "gba" + ".md section 2",
                  "mbms-keys" + ".md 6", "TOOLING" + " 3.3", "TOOLING" + ".md 1.2", "STYLE" + " 5",
                  "STYLE" + ".md 9", "ANCHORS" + ".md", "VERIFIED [" + "S16][S17]", "[" + "C7]",
                  "tags [" + "S..]", "sources" + " 4.4", "published-texts" + ".md"]:
        assert _OUTSIDE_CITATION.search(cited), cited
    for legitimate in ["docs/design.md 7.4", "the digest computed with RES",
                       "a seed written to storage",
                       "placeholder style", "RFC 3830 6.1", "TS 33.220 B.3", "x[S1]", "sys.path[0]",
                       "README.md", "the STYLE of the code"]:
        assert not _OUTSIDE_CITATION.search(legitimate), legitimate


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


# ---------------------------------------------------------------- test tree
# The tests mirror the package (README "Tests", issue 15 item 6):
# tests/unit/<path>/test_<module>[_<aspect>].py tests mbmsd/<path>/<module>.py;
# tests/daemon/ (twistd), tests/interop/ (sipp, tshark, PostgreSQL, Kamailio),
# tests/repository/ (the checkout) and tests/support/ (helpers and their own
# tests) hold any name. Nothing sits directly in tests/ but conftest.py.

TEST_DIRS = {"unit", "daemon", "interop", "repository", "support"}


def module_under_test(path, package):
    """
    The module of mbmsd that C{path} (a tests/unit/<path>/test_<name>.py)
    tests: the longest C{<module>} of C{test_<module>[_<aspect>]} found as
    C{package}/<path>/<module>.py, or None.
    """
    rel = path.relative_to(ROOT / "tests" / "unit")
    name = rel.stem[len("test_"):].split("_")
    for n in range(len(name), 0, -1):
        module = package.joinpath(*rel.parts[:-1], "_".join(name[:n]) + ".py")
        if module.is_file():
            return module
    return None


def test_module_under_test_is_the_longest_module():
    package = ROOT / "mbmsd"
    unit = ROOT / "tests" / "unit"
    assert module_under_test(unit / "sip" / "test_message.py", package) == package / "sip" / "message.py"
    assert module_under_test(unit / "sip" / "test_message_fuzz.py", package) == package / "sip" / "message.py"
    assert (module_under_test(unit / "protocols" / "test_mbms_xml_fuzz.py", package)
            == package / "protocols" / "mbms_xml.py")
    assert module_under_test(unit / "test_nomodule.py", package) is None
    assert module_under_test(unit / "roles" / "test_message.py", package) is None


def test_no_test_module_directly_in_tests():
    stray = sorted(p.name for p in (ROOT / "tests").glob("test_*.py"))
    assert stray == [], "move them under tests/unit, daemon, interop or repository"


def test_tests_holds_only_the_tree():
    found = {p.name for p in (ROOT / "tests").iterdir()
             if p.name != "__pycache__" and not p.name.startswith(".")}
    assert found - {"__init__.py", "conftest.py"} <= TEST_DIRS, sorted(found - TEST_DIRS)


def test_every_unit_test_module_names_a_module_of_mbmsd():
    unit = ROOT / "tests" / "unit"
    orphans = sorted(str(p.relative_to(unit)) for p in unit.rglob("test_*.py")
                     if module_under_test(p, ROOT / "mbmsd") is None)
    assert orphans == []


def test_every_test_folder_is_a_package():
    # pytest imports each test module by its dotted name under tests/, so two
    # test_config.py (unit/ and unit/admin/) do not collide.
    missing = sorted(str(d.relative_to(ROOT)) for d in (ROOT / "tests").rglob("*")
                     if d.is_dir() and any(d.glob("test_*.py")) and not (d / "__init__.py").is_file())
    assert missing == []
