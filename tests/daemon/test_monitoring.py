"""
The monitoring files operators load: contrib/prometheus/mbmsd.rules.yml
checked and unit-tested by promtool, then loaded into a real Prometheus
server that scrapes a twistd node running all four roles after one whole
procedure; every query of contrib/grafana/mbmsd.json is parsed by that
server and names only metrics the node exports.
"""

import json
import re
import subprocess
import urllib.parse

import pytest

from tests.support.daemon import ROOT, Daemon, http, run_ue, wait_for, whole_run
from tests.support.helpers import require_tool
from tests.support.ports import free_port

pytestmark = pytest.mark.external

RULES = ROOT / "contrib" / "prometheus" / "mbmsd.rules.yml"
DASHBOARD = ROOT / "contrib" / "grafana" / "mbmsd.json"
RULES_TEST = ROOT / "tests" / "support" / "prometheus" / "mbmsd.rules.test.yml"

ALERTS = {"MbmsdNodeDown", "MbmsdNodeNotReady", "MbmsdProcedureErrors",
          "MbmsdMikeyVerificationLow", "MbmsdRotationLeaseFlapping", "MbmsdOverloadShedding"}

# series Prometheus makes itself for every target
SYNTHETIC = {"up"}

# PromQL words that are not metric names (functions and aggregations are
# recognised by the "(" that follows them)
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or",
            "unless", "bool", "offset"}


def metric_names(expr):
    """
    The metric names a PromQL expression selects, read from its text: label
    matchers, ranges, strings and grouping lists removed, then every
    identifier that is not a keyword or a function. A C{__name__} regular
    expression comes back as C{("~", regex)}.
    """
    names = set()
    for regex in re.findall(r'__name__\s*=~\s*"((?:[^"\\]|\\.)*)"', expr):
        names.add(("~", regex))
    s = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    s = re.sub(r"\{[^}]*\}", " ", s)
    s = re.sub(r"\[[^\]]*\]", " ", s)
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", s):
        if s[m.end():].lstrip().startswith("(") or m.group(0) in KEYWORDS:
            continue
        if m.start() > 0 and (s[m.start() - 1].isdigit() or s[m.start() - 1] == "."):
            continue  # the exponent or unit of a number (1e3, 5m)
        names.add(m.group(0))
    return names


def test_metric_names_reader():
    assert metric_names('histogram_quantile(0.95, sum by (node, le) '
                        '(rate(mbmsd_bsf_ub_request_seconds_bucket{node=~"$node"}[$__rate_interval])))') \
        == {"mbmsd_bsf_ub_request_seconds_bucket"}
    assert metric_names('sum by (a) (rate(x_total{r="error"}[5m])) / sum by (a) (rate(x_total[5m])) > 0.05') \
        == {"x_total"}
    assert metric_names('up{job="mbmsd"} == 0 or on(instance) mbmsd_node_ready') \
        == {"up", "mbmsd_node_ready"}
    assert metric_names('rate({__name__=~"m_(a|b)_total"}[5m])') == {("~", "m_(a|b)_total")}


def test_promtool_checks_the_rules():
    promtool = require_tool("promtool")
    p = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "SUCCESS" in p.stdout


def test_promtool_unit_tests_of_the_alerts():
    promtool = require_tool("promtool")
    p = subprocess.run([promtool, "test", "rules", str(RULES_TEST)], capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    text = RULES_TEST.read_text()
    for alert in ALERTS:  # the fixture exercises each of them
        assert "alertname: " + alert in text, alert


def dashboard_queries():
    doc = json.loads(DASHBOARD.read_text())
    exprs = []
    for panel in doc["panels"]:
        for target in panel.get("targets", []):
            exprs.append((panel["title"], target["expr"]))
    for var in doc["templating"]["list"]:
        if var["type"] == "query":
            # label_values(<selector>, <label>): the selector is a query too
            m = re.match(r"label_values\((.*),\s*\w+\)$", var["query"]["query"])
            assert m, var
            exprs.append(("variable " + var["name"], m.group(1)))
    return doc, exprs


def grafana_to_promql(expr):
    # the dashboard's variables as Grafana substitutes them ("All")
    return (expr.replace("$__rate_interval", "1m").replace('"$node"', '".+"')
            .replace('"$job"', '"mbmsd"'))


def test_dashboard_shape():
    doc, exprs = dashboard_queries()
    assert doc["uid"] == "mbmsd"
    variables = {v["name"]: v for v in doc["templating"]["list"]}
    assert variables["datasource"]["query"] == "prometheus"
    assert {"job", "node"} <= set(variables)
    titles = [p["title"] for p in doc["panels"]]
    assert len(titles) == len(set(titles))
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids))
    for title, expr in exprs:
        if not title.startswith("variable"):
            # every panel query follows the node selector
            assert 'node=~"$node"' in expr or 'job=~"$job"' in expr, (title, expr)
    names = set().union(*(metric_names(e) for _, e in exprs))
    # every procedure's rate, errors and latency; MIKEY delivery; sessions;
    # overload and rate limiting
    for name in ("mbmsd_bsf_ub_requests_total", "mbmsd_bsf_ub_request_seconds_bucket",
                 "mbmsd_bsf_zn_requests_total", "mbmsd_bsf_zn_request_seconds_bucket",
                 "mbmsd_pcscf_requests_total", "mbmsd_pcscf_request_seconds_bucket",
                 "mbmsd_pcscf_registrations_total", "mbmsd_scf_invites_total",
                 "mbmsd_scf_authorize_seconds_bucket", "mbmsd_scf_bmsc_requests_total",
                 "mbmsd_bmsc_requests_total", "mbmsd_bmsc_request_seconds_bucket",
                 "mbmsd_bmsc_mikey_messages_total", "mbmsd_bmsc_mikey_delivery_seconds_bucket",
                 "mbmsd_scf_sessions", "mbmsd_scf_sessions_ended_total",
                 "mbmsd_bsf_overload_rejected_total", "mbmsd_pcscf_overload_rejected_total",
                 "mbmsd_scf_overload_rejected_total", "mbmsd_bmsc_overload_rejected_total",
                 "mbmsd_pcscf_auth_rate_limited_total", "mbmsd_bsf_auth_rate_limited_total",
                 "mbmsd_bmsc_rotation_leases_held", "mbmsd_node_ready"):
        assert name in names, name


# ---------------------------------------------------------------- live


class Prometheus:
    def __init__(self, workdir, target):
        self.binary = require_tool("prometheus")
        self.port = free_port()
        self.config = workdir / "prometheus.yml"
        # JSON is YAML: no YAML library needed to write the config
        self.config.write_text(json.dumps({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(RULES)],
            "scrape_configs": [{"job_name": "mbmsd",
                                "static_configs": [{"targets": [target]}]}],
        }))
        self.log = open(workdir / "prometheus.log", "w+")
        self.proc = subprocess.Popen(
            [self.binary, "--config.file=%s" % self.config,
             "--storage.tsdb.path=%s" % (workdir / "tsdb"),
             "--web.listen-address=127.0.0.1:%d" % self.port],
            cwd=workdir, stdout=self.log, stderr=subprocess.STDOUT)

    def output(self):
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def api(self, path, **params):
        url = "http://127.0.0.1:%d/api/v1/%s" % (self.port, path)
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            status, _, body = http("GET", url, timeout=10)
        except OSError:
            return None, None
        if status != 200:
            return status, None  # e.g. 503 "Service Unavailable" while the TSDB opens
        return status, json.loads(body)

    def query(self, expr):
        status, doc = self.api("query", query=expr)
        assert status == 200 and doc["status"] == "success", (expr, status, doc)
        return doc["data"]["result"]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="module")
def scraped(tmp_path_factory):
    """A twistd node after one whole `mbms-ue run`, scraped by Prometheus."""
    workdir = tmp_path_factory.mktemp("monitoring")
    d = Daemon(workdir).start()
    prometheus = None
    try:
        p = run_ue("run", "--bsf", d.ub, "--pcscf", "sip:127.0.0.1:%d" % d.ports["pcscf"],
                   "--bmsc", d.url("bmsc", ""), "--mikey-port", str(d.ports["mikey"]), timeout=90)
        whole_run(p, p.stdout + p.stderr + d.log()[-4000:])
        prometheus = Prometheus(workdir, "127.0.0.1:%d" % d.ports["metrics"])

        def target_up():
            if prometheus.proc.poll() is not None:
                pytest.fail("prometheus exited:\n" + prometheus.output())
            status, doc = prometheus.api("targets")
            return status == 200 and any(t["health"] == "up" and t["labels"]["job"] == "mbmsd"
                                         for t in doc["data"]["activeTargets"])

        assert wait_for(target_up, timeout=60), prometheus.output()
        # a second bootstrap while Prometheus watches: a rate it can see
        p = run_ue("bootstrap", "--bsf", d.ub)
        assert p.returncode == 0, p.stdout + p.stderr
        yield d, prometheus
    finally:
        if prometheus is not None:
            prometheus.stop()
        d.stop()


def test_prometheus_scrapes_the_node(scraped):
    d, prometheus = scraped
    [ready] = prometheus.query("mbmsd_node_ready")
    assert ready["metric"]["node"] == "mbmsd-1" and ready["metric"]["job"] == "mbmsd"
    assert ready["value"][1] == "1"
    assert wait_for(lambda: [r["value"][1] for r in prometheus.query(
        'mbmsd_bsf_ub_requests_total{result="bootstrapped"}')] == ["2"]), \
        prometheus.query('mbmsd_bsf_ub_requests_total')
    [verified] = prometheus.query('mbmsd_bmsc_mikey_messages_total{result="verified"}')
    assert verified["value"][1] == "1"


def test_prometheus_loads_the_rules(scraped):
    d, prometheus = scraped

    def evaluated():
        status, doc = prometheus.api("rules")
        groups = doc["data"]["groups"] if status == 200 else []
        rules = [r for g in groups for r in g["rules"]]
        return rules if rules and all(r.get("lastEvaluation", "").startswith("2")
                                      and not r["lastEvaluation"].startswith("0001")
                                      for r in rules) else None

    assert wait_for(evaluated, timeout=30), prometheus.api("rules")
    rules = evaluated()
    assert {r["name"] for r in rules} == ALERTS
    for rule in rules:
        assert rule["type"] == "alerting"
        assert rule["health"] == "ok", (rule["name"], rule.get("lastError"))
    # a healthy node: nothing fires
    _, doc = prometheus.api("alerts")
    assert doc["data"]["alerts"] == [], doc
    # the rules select only metrics the node exports
    exported = exported_names(d)
    for rule in rules:
        for name in metric_names(rule["query"]):
            check_exported(name, exported, rule["name"])


def exported_names(daemon):
    """Every series name of the node's /metrics (histograms with their suffixes)."""
    _, _, body = http("GET", daemon.url("metrics", "/metrics"))
    names = set()
    for line in body.decode().splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            names.add(name)
            if kind == "histogram":
                names.update(name + s for s in ("_bucket", "_count", "_sum"))
        elif line and not line.startswith("#"):
            names.add(re.match(r"[A-Za-z_:][A-Za-z0-9_:]*", line).group(0))
    return names


def check_exported(name, exported, where):
    if isinstance(name, tuple):
        regex = re.compile(name[1])
        assert any(regex.fullmatch(n) for n in exported), (where, name)
    else:
        assert name in exported or name in SYNTHETIC, (where, name)


def test_dashboard_names_only_exported_metrics_and_parses(scraped):
    d, prometheus = scraped
    exported = exported_names(d)
    _, exprs = dashboard_queries()
    for title, expr in exprs:
        names = metric_names(expr)
        assert names, (title, expr)
        for name in names:
            check_exported(name, exported, title)
        # Prometheus itself parses and evaluates it
        prometheus.query(grafana_to_promql(expr))
    # and the bootstrap made while Prometheus watched shows in the Ub panel
    [ub] = [e for t, e in exprs if t == "Ub requests by result"]

    def bootstrapped_rate():
        return [float(r["value"][1]) for r in prometheus.query(grafana_to_promql(ub))
                if r["metric"].get("result") == "bootstrapped"]

    assert wait_for(lambda: any(v > 0 for v in bootstrapped_rate()), timeout=30), \
        bootstrapped_rate()
