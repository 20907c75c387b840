"""
The README's samples and tables against the real thing (issue 12 items 7
and 15): the config errors `--check` prints, the JSON lines of `mbms-ue run`,
and the metrics table against a running node's /metrics (every metric the
node exports documented, every documented one exported). The log samples
of its Logs section are checked in tests/daemon/test_logs_daemon.py.
"""

import json
import re
import subprocess
from pathlib import Path

import pytest

from tests.support.daemon import ROOT, Daemon, http, lines_of, run_ue, tool

README = (Path(ROOT) / "README.md").read_text()
ROLES = ("bsf", "bmsc", "pcscf", "scf")


def section(title):
    start = README.index("\n## %s\n" % (title,))
    end = README.find("\n## ", start + 1)
    return README[start:end]


def blocks_after(text, marker, lang=""):
    """The fenced blocks (```lang) that follow C{marker} in C{text}, in order."""
    rest = text[text.index(marker):]
    return re.findall(r"```%s\n(.*?)```" % (lang,), rest, re.S)


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    d = Daemon(tmp_path_factory.mktemp("readme")).start()
    yield d
    d.stop()


# ---------------------------------------------------------------- config errors


def test_the_config_error_sample_is_what_check_prints(tmp_path):
    sample = blocks_after(section("Configuration"), "start-up stops with exit")[0]
    expected = sample.strip().splitlines()
    # the overlay the sample describes: key_lifetime 10, a second role 'nope'
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "node2.toml").write_text(
        '[node]\nroles = ["bsf", "nope"]\n[bsf]\nkey_lifetime = 10\n')
    p = subprocess.run([tool("twistd"), "-n", "--pidfile=", "mbmsd", "--config",
                        str(Path(ROOT) / "etc" / "mbmsd.toml"), "--config", "etc/node2.toml",
                        "--check"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert p.returncode == 1
    assert p.stderr.strip().splitlines() == expected


# ---------------------------------------------------------------- mbms-ue run


@pytest.mark.external
def test_the_mbms_ue_run_sample_is_what_it_prints(node):
    sample = [json.loads(line) for line in
              blocks_after(README, ".venv/bin/mbms-ue run\n", "json")[0].splitlines()]
    p = run_ue("run", "--bsf", node.ub, "--pcscf", "sip:127.0.0.1:%d" % (node.ports["pcscf"],),
               "--bmsc", node.url("bmsc", ""), "--mikey-port", str(node.ports["mikey"]))
    assert p.returncode == 0, p.stdout + p.stderr
    real = {line["step"]: line for line in lines_of(p)}
    # every line printed as sorted JSON, as the sample shows it
    for line in p.stdout.splitlines():
        assert line == json.dumps(json.loads(line), sort_keys=True)
    assert sorted(x["step"] for x in sample) == sorted(real)
    # values that change from run to run (B-TID, times, ports, Call-ID, MSK ID)
    varying = {"btid", "lifetime", "contact", "pcscf", "callId", "mskId", "counter",
               "routeSet", "target"}
    for shown in sample:
        got = real[shown["step"]]
        assert list(shown) == list(got), shown["step"]
        for key, value in shown.items():
            if key not in varying:
                assert got[key] == value, (shown["step"], key)


# ---------------------------------------------------------------- metrics


def documented_metrics():
    """The names of the Metrics table, with {a,b} and <role> expanded."""
    names = set()
    for row in section("Metrics").splitlines():
        if not row.startswith("| `"):
            continue
        for name in re.findall(r"`([^`]+)`", row.split("|")[1]):
            for expanded in _expand(name):
                names.add(expanded)
    return names


def _expand(name):
    m = re.search(r"\{([^}]*)\}", name)
    if m:
        return [x for part in m.group(1).split(",")
                for x in _expand(name[:m.start()] + part + name[m.end():])]
    if "<role>" in name:
        assert name.startswith("mbmsd_<role>_"), name
        return ["<role>" + name[len("mbmsd_<role>"):]]  # matched against every role
    return [name]


def exported_metrics(body):
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", body, re.M))
    return {name for name in types
            if not (name.endswith("_created") and types[name] == "gauge")
            and name.startswith(("mbmsd_", "process_"))}


@pytest.mark.external
def test_the_metrics_table_is_what_the_node_exports(node):
    status, _, body = http("GET", node.url("metrics", "/metrics"))
    assert status == 200
    exported = exported_metrics(body.decode())
    documented = documented_metrics()
    # the process collector is registered (issue 12 item 7)
    assert {"process_cpu_seconds_total", "process_resident_memory_bytes",
            "process_start_time_seconds", "process_open_fds"} <= exported
    per_role = {n[len("<role>"):] for n in documented if n.startswith("<role>")}
    fixed = documented - {"<role>" + n for n in per_role}

    def is_documented(name):
        return name in fixed or any(name == "mbmsd_%s%s" % (r, n)
                                    for r in ROLES for n in per_role)

    assert sorted(n for n in exported if not is_documented(n)) == [], "exported, not documented"
    # exported by the workers of a node with workers only (tests/daemon/test_daemon_workers.py)
    workersOnly = {"mbmsd_worker_restarts_total"}
    assert sorted(n for n in fixed - workersOnly if n not in exported) == [], \
        "documented, not exported"
    for n in per_role:
        assert any("mbmsd_%s%s" % (r, n) in exported for r in ROLES), n
