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
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        # imports under `if TYPE_CHECKING:` never run (PEP 484): annotations only
        typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
                       and getattr(block.test, "id", getattr(block.test, "attr", None))
                       == "TYPE_CHECKING" for stmt in block.body for n in ast.walk(stmt)}
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
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
