"""
The checkout itself (issue 12 item 15): .gitignore lists no tracked file, so
that nothing tracked is hidden from `git status` (or left out by tools that
honour .gitignore).
"""

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
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
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
